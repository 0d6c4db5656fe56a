"""Zero-shot scoring with a causal LLaMA: label-word log-probabilities after a prompt, one forward pass.

The prompt ends with "Sentiment:"; the model's next-token distribution over the first token of
" bearish", " neutral" and " bullish", renormalized over those three, is the class distribution.
Nothing is generated. Long texts are chunked inside the prompt, so every chunk is a full prompt.
An instruct model whose tokenizer has a chat template gets the instruction as a user turn and
"Sentiment:" as the start of its own answer (the form it was tuned on); a base model gets plain text.

Calibration (on by default): a small model prefers some label words whatever the text says. The
distribution it gives for content-free inputs ("N/A", "", "[MASK]") measures that prior once at load,
and every score is divided by it and renormalized ("contextual calibration", Zhao et al. 2021).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from signals.contracts import LABELS, ModelInfo
from signals.model import (
    DEFAULT_MAX_LENGTH,
    ModelLoadError,
    encode_bodies,
    read_model_info,
    special_tokens_around,
    split_windows,
)

log = structlog.get_logger(__name__)

PROMPT_HEAD = (
    "Classify the market sentiment of this financial news for a trader as bearish, neutral or bullish.\n\nNews: "
)
PROMPT_TAIL = "\n\nSentiment:"
CHAT_QUESTION = "\n\nAnswer with one word: bearish, neutral or bullish."
ANSWER_START = "Sentiment:"
_SLOT = "\x00FINSIGNAL_TEXT\x00"
LABEL_WORDS = {"bearish": " bearish", "neutral": " neutral", "bullish": " bullish"}
CONTENT_FREE = ("N/A", "", "[MASK]")


def label_token_ids(tokenizer: Any) -> tuple[int, int, int]:
    """First token of each label word; they must differ or the labels cannot be told apart."""
    ids = tuple(tokenizer(LABEL_WORDS[label], add_special_tokens=False)["input_ids"][0] for label in LABELS)
    if len(set(ids)) != len(ids):
        raise ModelLoadError(f"label words share a first token under this tokenizer: {ids}")
    return ids  # type: ignore[return-value]


def prompt_pieces(tokenizer: Any, chat: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token ids before and after the document text: the chat template's turn when there is one and
    `chat` is on, else the plain prompt after the special tokens the tokenizer adds (e.g. `<s>`)."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": PROMPT_HEAD + _SLOT + CHAT_QUESTION}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if rendered.count(_SLOT) != 1:
            raise ModelLoadError("the chat template does not keep the user's message intact")
        before, after = rendered.split(_SLOT)
        # the template writes its own special tokens (`<|im_start|>`, `<|begin_of_text|>`): parse them as such
        head = tokenizer(before, add_special_tokens=False)["input_ids"]
        tail = tokenizer(after + ANSWER_START, add_special_tokens=False)["input_ids"]
        return tuple(head), tuple(tail)
    prefix, _ = special_tokens_around(tokenizer)
    head = [*prefix, *tokenizer(PROMPT_HEAD, add_special_tokens=False)["input_ids"]]
    return tuple(head), tuple(tokenizer(PROMPT_TAIL, add_special_tokens=False)["input_ids"])


def content_free_prior(model: Any) -> np.ndarray:
    """The label distribution a prompt model gives for content-free texts (mean over `CONTENT_FREE`)."""
    pieces = [chunks[0] for chunks in model.encode_chunks(list(CONTENT_FREE), overlap=0)]
    return model.score_ids(pieces).astype(np.float64).mean(axis=0)


def calibrate(probs: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """`probs / prior`, renormalized per row; unchanged when there is no prior."""
    if prior is None:
        return probs
    scaled = probs.astype(np.float64) / prior
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass
class PromptModel:
    """A causal LLaMA scored through label words (transformers, CPU or GPU)."""

    module: Any
    tokenizer: Any
    info: ModelInfo
    directory: Path
    max_length: int
    label_ids: tuple[int, int, int]
    head: tuple[int, ...]
    tail: tuple[int, ...]
    device: str = "cpu"
    prior: np.ndarray | None = None  # content-free label distribution, divided out of every score
    _head_past: Any = field(default=None, repr=False)  # key/value cache of `head`, computed on first use
    _label_weight: Any = field(default=None, repr=False)
    _cache_name: str | None = field(default=None, repr=False)  # the forward's keyword for a key/value cache

    @classmethod
    def load(cls, directory: str | Path, *, dtype: str = "float32", threads: int | None = None,
             device: str = "cpu", max_length: int = DEFAULT_MAX_LENGTH, chat: bool = True,
             calibrated: bool = True) -> PromptModel:
        import torch
        from transformers import AutoTokenizer, LlamaForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        directory = Path(directory).resolve()
        config_path = directory / "config.json"
        if not config_path.is_file() or not list(directory.glob("*.safetensors")):
            raise ModelLoadError(f"{directory}: needs config.json and .safetensors weights (pickle is refused)")
        config = json.loads(config_path.read_text())
        if config.get("model_type") != "llama":
            raise ModelLoadError(f"{directory}: model_type {config.get('model_type')!r} is not a LLaMA architecture")
        if threads:
            torch.set_num_threads(threads)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        module = LlamaForCausalLM.from_pretrained(directory, dtype=torch_dtype, use_safetensors=True,
                                                  trust_remote_code=False, local_files_only=True)
        module.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
        head, tail = prompt_pieces(tokenizer, chat)
        base, _ = read_model_info(directory, tokenizer)  # finsignal.json's hash when there is one: no 16 GB re-hash
        info = ModelInfo(name=base.name, version=f"prompt-{base.content_hash[:12]}", content_hash=base.content_hash)
        limit = min(max_length, int(config.get("max_position_embeddings", max_length)))
        if limit - len(head) - len(tail) < 16:
            raise ModelLoadError(f"max_length {limit} leaves no room for text after the {len(head) + len(tail)}-token prompt")
        model = cls(module, tokenizer, info, directory, limit, label_token_ids(tokenizer), head, tail, device)
        if calibrated:
            model.prior = content_free_prior(model)
        log.info("model.loaded", path=str(directory), mode="prompt", version=info.version, device=device,
                 chat_template=bool(chat and getattr(tokenizer, "chat_template", None)), max_length=limit,
                 prompt_tokens=len(head) + len(tail),
                 prior=None if model.prior is None else [round(float(p), 4) for p in model.prior])
        return model

    def encode_chunks(self, texts: list[str], overlap: int) -> list[list[list[int]]]:
        window = self.max_length - len(self.head) - len(self.tail)
        bodies = encode_bodies(self.tokenizer, texts)
        return [[[*self.head, *piece, *self.tail] for piece in split_windows(ids, window, overlap)] for ids in bodies]

    def score_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Label probabilities of prompt-wrapped texts (`encode_chunks` rows): the shared prompt head is run
        once and its key/value cache reused, and only the label words' logits at each last token are made."""
        import torch

        head = len(self.head)
        if head and all(len(ids) > head and tuple(ids[:head]) == self.head for ids in batch):
            bodies, past = [ids[head:] for ids in batch], self._head_cache(len(batch))
        else:
            bodies, past, head = batch, None, 0
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        longest = max(len(ids) for ids in bodies)
        input_ids = torch.full((len(bodies), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(bodies), head + longest), dtype=torch.long)
        mask[:, :head] = 1
        for row, ids in enumerate(bodies):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, head : head + len(ids)] = 1
        last = torch.tensor([len(ids) - 1 for ids in bodies], device=self.device)
        with torch.inference_mode():
            hidden = self.module.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                       use_cache=past is not None, **self._cache_kwarg(past)).last_hidden_state
            final = hidden[torch.arange(len(bodies), device=self.device), last]
            label_logits = (final @ self._label_rows().T).float()
        return calibrate(torch.softmax(label_logits, dim=-1).cpu().numpy(), self.prior)

    def _cache_kwarg(self, past: Any) -> dict[str, Any]:
        """transformers 5.x renames `past_key_values` to `cache` (the old name warns, then goes in 5.40)."""
        if self._cache_name is None:  # looked up once, not on every batch
            import inspect

            params = inspect.signature(self.module.model.forward).parameters
            self._cache_name = "cache" if "cache" in params else "past_key_values"
        return {self._cache_name: past}

    def _label_rows(self) -> Any:
        """The LM head's rows for the three label words (the rest of the vocabulary is never scored)."""
        if self._label_weight is None:
            self._label_weight = self.module.lm_head.weight[list(self.label_ids)].detach()
        return self._label_weight

    def _head_cache(self, rows: int) -> Any:
        """A fresh key/value cache of the prompt head for `rows` texts (prefix caching, as vLLM does)."""
        import copy

        import torch

        if self._head_past is None:
            ids = torch.tensor([self.head], device=self.device)
            with torch.inference_mode():
                self._head_past = self.module.model(input_ids=ids, use_cache=True).past_key_values
        cache = copy.deepcopy(self._head_past)  # the forward appends to it
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache