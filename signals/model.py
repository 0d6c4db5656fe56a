"""Load a LLaMA-architecture sentiment classifier from a local directory and score texts.

Only safetensors weights are read and `trust_remote_code` stays off: a checkpoint
cannot run code on the scoring host. Class order comes from the checkpoint's
`id2label`, so any checkpoint with bearish/neutral/bullish labels works.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from signals.contracts import LABELS, ClassProbs, ModelInfo

log = structlog.get_logger(__name__)

DEFAULT_MAX_LENGTH = 512  # tokens per forward pass unless configured; longer documents are chunked


class ModelLoadError(RuntimeError):
    """A model directory that cannot be served; the message says what is wrong."""


def weights_hash(directory: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_directory(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: not a directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{directory}: no config.json; expected a Hugging Face checkpoint")
    if not list(directory.glob("*.safetensors")):
        pickles = [p.name for p in directory.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are refused)" if pickles else ""
        raise ModelLoadError(f"{directory}: no .safetensors weights{hint}")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "llama":
        raise ModelLoadError(f"{directory}: model_type {config.get('model_type')!r} is not a LLaMA architecture")
    id2label = {int(k): str(v).lower() for k, v in (config.get("id2label") or {}).items()}
    if "LlamaForSequenceClassification" not in (config.get("architectures") or ["LlamaForSequenceClassification"]):
        raise ModelLoadError(f"{directory}: {config.get('architectures')} has no classification head; score it "
                             "zero-shot (FINSIGNAL_WORKER_MODE=prompt) or fine-tune it (compress train --base)")
    if sorted(id2label.values()) != sorted(LABELS):
        raise ModelLoadError(f"{directory}: labels {sorted(id2label.values())} are not {list(LABELS)}")
    return config


@dataclass
class SentimentModel:
    """A loaded classifier: the torch module, its tokenizer, and who it is."""

    module: Any
    tokenizer: Any
    info: ModelInfo
    directory: Path
    max_length: int
    label_index: tuple[int, int, int]  # model output column for bearish, neutral, bullish
    device: str = "cpu"
    prefix: tuple[int, ...] = ()  # special tokens the tokenizer puts around every text
    suffix: tuple[int, ...] = ()

    @classmethod
    def load(
        cls, directory: str | Path, *, dtype: str = "float32", threads: int | None = None, device: str = "cpu",
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> SentimentModel:
        """Load and validate a checkpoint directory for scoring on `device` (cpu, cuda, cuda:N).

        `max_length` caps the tokens per forward pass: a pretrained base declares its whole context (8192 for
        SmolLM2, 128k for Llama 3.x), and longer documents are scored as chunks of at most this many tokens.
        """
        import torch
        from transformers import AutoTokenizer, LlamaForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one structured log line says it loaded
        directory = Path(directory).resolve()
        config = check_directory(directory)
        if threads:
            torch.set_num_threads(threads)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA device")
        from compressor.runtime.forward import LeanLlamaForSequenceClassification
        from compressor.runtime.loader import ArtifactError, artifact_kind, load_classifier

        try:
            kind = artifact_kind(directory)
            if kind == "hf":
                module = LeanLlamaForSequenceClassification.from_pretrained(
                    directory, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False,
                    local_files_only=True,
                )
            elif device != "cpu":
                raise ModelLoadError(f"{directory}: {kind} checkpoints run on the compressor's CPU runtime only")
            else:  # int8 W8A8 (compressed-tensors) and the compressor's other formats: real int8 kernels on CPU
                module = load_classifier(directory)
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from exc
        module.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
        if tokenizer.pad_token_id is None:
            raise ModelLoadError(f"{directory}: tokenizer has no pad token")
        align_padding(module, tokenizer, directory)
        info, declared = read_model_info(directory, tokenizer)
        max_length = min(declared, max_length)
        id2label = {int(k): str(v).lower() for k, v in config["id2label"].items()}
        label2col = {label: col for col, label in id2label.items()}
        prefix, suffix = special_tokens_around(tokenizer)
        log.info("model.loaded", path=str(directory), name=info.name, version=info.version, dtype=dtype,
                 device=device, max_length=max_length, context=declared, vocab=len(tokenizer))
        return cls(
            module=module,
            tokenizer=tokenizer,
            info=info,
            directory=directory,
            max_length=max_length,
            label_index=tuple(label2col[label] for label in LABELS),  # type: ignore[arg-type]
            device=device,
            prefix=prefix,
            suffix=suffix,
        )

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated to `max_length`; special-token strings in the text stay plain text."""
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, split_special_tokens=True)["input_ids"]

    def encode_chunks(self, texts: list[str], overlap: int) -> list[list[list[int]]]:
        """Per text, the token ids of each chunk that fits the context (one chunk for a short text)."""
        window = self.max_length - len(self.prefix) - len(self.suffix)
        bodies = encode_bodies(self.tokenizer, texts)
        return [[[*self.prefix, *piece, *self.suffix] for piece in split_windows(ids, window, overlap)]
                for ids in bodies]

    def score_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Probabilities (N x 3, columns bearish/neutral/bullish) for pre-tokenized inputs, padded right."""
        import torch

        enc = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.module(**enc).logits.float()
        probs = torch.softmax(logits, dim=-1)[:, list(self.label_index)]
        return probs.cpu().numpy()

    def score(self, texts: list[str]) -> np.ndarray:
        """Probabilities for raw texts, as one batch."""
        return self.score_ids(self.encode(texts))


def encode_bodies(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of untrusted texts, no special tokens added.

    `split_special_tokens`: a document quoting `<|im_end|>` (or `</s>`) gets the plain-text pieces of that
    string, never the control token, so it can neither end a prompt early nor look like padding (when the
    pad token is EOS, as for SmolLM2 and LLaMA 3, a trailing EOS would be skipped by the classifier's pooling).
    """
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]


def align_padding(module: Any, tokenizer: Any, directory: Path) -> None:
    """Pad on the right with the tokenizer's pad token, and make the model's pooling look for that token.

    transformers' `LlamaForSequenceClassification` pools the rightmost token that is not
    `config.pad_token_id`; if that id differs from what the batch is padded with, padded rows pool a pad.
    """
    tokenizer.padding_side = "right"
    config = getattr(module, "config", None)
    if config is None or config.pad_token_id == tokenizer.pad_token_id:
        return
    log.warning("model.pad_token_aligned", path=str(directory), config_pad=config.pad_token_id,
                tokenizer_pad=tokenizer.pad_token_id)
    config.pad_token_id = tokenizer.pad_token_id


def read_model_info(directory: Path, tokenizer: Any) -> tuple[ModelInfo, int]:
    """Name, version and weights hash from `finsignal.json` (else derived), and the context length."""
    meta_path = directory / "finsignal.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    content_hash = meta.get("content_hash") or weights_hash(directory)
    info = ModelInfo(
        name=meta.get("name") or directory.name,
        version=meta.get("version") or content_hash[:12],
        content_hash=content_hash,
    )
    config = json.loads((directory / "config.json").read_text())
    limit = min(int(tokenizer.model_max_length), int(config.get("max_position_embeddings", 512)))
    return info, min(int(meta.get("max_length") or limit), limit)


def special_tokens_around(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer adds before and after every text (e.g. `<s>` and `</s>`)."""
    probe = "finsignal"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare) :])
    raise ModelLoadError("tokenizer adds special tokens inside the text; cannot chunk long documents")


def split_windows(ids: list[int], window: int, overlap: int) -> list[list[int]]:
    """Overlapping windows of at most `window` tokens covering `ids`; the last window ends at the end."""
    if window < 1:
        raise ValueError("context too small for the special tokens")
    overlap = min(max(overlap, 0), window - 1)
    if len(ids) <= window:
        return [ids]
    stride = window - overlap
    starts = list(range(0, len(ids) - window, stride)) + [len(ids) - window]
    return [ids[s : s + window] for s in starts]


def combine_chunks(probs: np.ndarray, lengths: list[int]) -> np.ndarray:
    """A document's probabilities from its chunks': the mean weighted by each chunk's token count."""
    weights = np.asarray(lengths, dtype=np.float64)
    return (probs.astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()


def to_class_probs(row: np.ndarray) -> ClassProbs:
    """A probability row (bearish, neutral, bullish) as the wire type, renormalized after float32 rounding."""
    values = row.astype(np.float64)
    values = values / values.sum()
    return ClassProbs(bearish=float(values[0]), neutral=float(values[1]), bullish=float(values[2]))

