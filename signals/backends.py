"""Scoring backends behind one interface (`signals.scorer.ScoringBackend`): transformers or vLLM.

- transformers, classifier: `LlamaForSequenceClassification` on CPU (fp32, bf16) or a CUDA device.
- transformers, prompt: a causal LLaMA scored by label-word probabilities (`signals.prompt`).
- vLLM (GPU, optional extra `finsignal[gpu]`): the same two modes, one forward pass per sequence:
  the classifier through vLLM's pooling runner, the prompt mode by one constrained decode step whose
  processed log-probabilities cover exactly the three label tokens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from signals.contracts import LABELS, ModelInfo
from signals.model import (
    ModelLoadError,
    SentimentModel,
    check_directory,
    encode_bodies,
    read_model_info,
    special_tokens_around,
    split_windows,
    weights_hash,
)
from signals.settings import WorkerSettings

log = structlog.get_logger(__name__)


def load_backend(directory: str | Path, settings: WorkerSettings) -> Any:
    """The backend `settings` ask for, loaded from `directory`."""
    if settings.backend == "vllm":
        return VllmBackend.load(directory, settings)
    if settings.mode == "prompt":
        from signals.prompt import PromptModel

        return PromptModel.load(directory, dtype=settings.dtype, threads=settings.threads, device=settings.device,
                                max_length=settings.max_length, chat=settings.prompt_chat_template,
                                calibrated=settings.prompt_calibrate)
    return SentimentModel.load(directory, dtype=settings.dtype, threads=settings.threads, device=settings.device,
                               max_length=settings.max_length)


class VllmBackend:
    """vLLM on a GPU; see the module docstring."""

    def __init__(self, llm: Any, tokenizer: Any, info: ModelInfo, max_length: int, mode: str,
                 prefix: tuple[int, ...], suffix: tuple[int, ...], label_ids: tuple[int, ...] = ()) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.info = info
        self.max_length = max_length
        self.mode = mode
        self.prefix = prefix
        self.suffix = suffix
        self.label_ids = label_ids
        self.prior: np.ndarray | None = None  # prompt mode: content-free label prior (see signals.prompt)

    @classmethod
    def load(cls, directory: str | Path, settings: WorkerSettings) -> VllmBackend:
        try:
            import vllm
        except ImportError as exc:
            raise ModelLoadError(
                "backend 'vllm' is selected but vLLM is not installed; on a CUDA machine run "
                "`pip install 'finsignal[gpu]'`, or set FINSIGNAL_WORKER_BACKEND=transformers"
            ) from exc
        from transformers import AutoTokenizer

        directory = Path(directory).resolve()
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
        content_hash = weights_hash(directory)
        dtype = {"float32": "float32", "bfloat16": "bfloat16"}[settings.dtype]
        if settings.mode == "prompt":
            from signals.prompt import content_free_prior, label_token_ids, prompt_pieces

            llm = vllm.LLM(model=str(directory), dtype=dtype, trust_remote_code=False,
                           logprobs_mode="processed_logprobs", max_model_len=settings.max_length)
            prefix, suffix = prompt_pieces(tokenizer, settings.prompt_chat_template)
            info = ModelInfo(name=directory.name, version=f"prompt-{content_hash[:12]}", content_hash=content_hash)
            backend = cls(llm, tokenizer, info, settings.max_length, "prompt", prefix, suffix, label_token_ids(tokenizer))
            if settings.prompt_calibrate:
                backend.prior = content_free_prior(backend)
            return backend
        check_directory(directory)  # the same refusals as the CPU path: LLaMA only, safetensors only
        prefix, suffix = special_tokens_around(tokenizer)
        info, declared = read_model_info(directory, tokenizer)
        max_length = min(declared, settings.max_length)
        from compressor.runtime.loader import vllm_directory

        cache = os.environ.get("FINSIGNAL_CACHE_DIR") or Path.home() / ".cache" / "finsignal"
        llm = vllm.LLM(model=str(vllm_directory(directory, cache)), runner="pooling", dtype=dtype,
                       trust_remote_code=False, max_model_len=max_length)
        return cls(llm, tokenizer, info, max_length, "classifier", prefix, suffix)

    def encode_chunks(self, texts: list[str], overlap: int) -> list[list[list[int]]]:
        window = self.max_length - len(self.prefix) - len(self.suffix)
        bodies = encode_bodies(self.tokenizer, texts)
        return [[[*self.prefix, *p, *self.suffix] for p in split_windows(ids, window, overlap)] for ids in bodies]

    def score_ids(self, batch: list[list[int]]) -> np.ndarray:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in batch]
        if self.mode == "classifier":
            outputs = self.llm.classify(prompts, use_tqdm=False)
            probs = np.array([o.outputs.probs for o in outputs], dtype=np.float32)
            id2label = {int(k): v.lower() for k, v in self.llm.llm_engine.model_config.hf_config.id2label.items()}
            cols = [next(i for i, name in id2label.items() if name == label) for label in LABELS]
            return probs[:, cols]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(self.label_ids),
                                allowed_token_ids=list(self.label_ids))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        rows = []
        for out in outputs:
            logprobs = out.outputs[0].logprobs[0]
            values = np.array([logprobs[t].logprob if t in logprobs else -np.inf for t in self.label_ids])
            values = np.exp(values - values.max())
            rows.append(values / values.sum())
        from signals.prompt import calibrate

        return calibrate(np.asarray(rows, dtype=np.float32), self.prior)
