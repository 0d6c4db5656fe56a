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


class ModelLoadError(RuntimeError):
    """A model directory that cannot be served; the message says what is wrong."""


def _weights_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _check_directory(directory: Path) -> dict[str, Any]:
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

    @classmethod
    def load(cls, directory: str | Path, *, dtype: str = "float32", threads: int | None = None) -> SentimentModel:
        """Load and validate a checkpoint directory for CPU scoring."""
        import torch
        from transformers import AutoTokenizer, LlamaForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one structured log line says it loaded
        directory = Path(directory).resolve()
        config = _check_directory(directory)
        if threads:
            torch.set_num_threads(threads)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        module = LlamaForSequenceClassification.from_pretrained(
            directory, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        module.eval()
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
        if tokenizer.pad_token_id is None:
            raise ModelLoadError(f"{directory}: tokenizer has no pad token")
        meta_path = directory / "finsignal.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        content_hash = meta.get("content_hash") or _weights_hash(directory)
        info = ModelInfo(
            name=meta.get("name") or directory.name,
            version=meta.get("version") or content_hash[:12],
            content_hash=content_hash,
        )
        id2label = {int(k): str(v).lower() for k, v in config["id2label"].items()}
        label2col = {label: col for col, label in id2label.items()}
        max_length = int(meta.get("max_length") or min(tokenizer.model_max_length, config.get("max_position_embeddings", 512)))
        log.info("model.loaded", path=str(directory), name=info.name, version=info.version, dtype=dtype)
        return cls(
            module=module,
            tokenizer=tokenizer,
            info=info,
            directory=directory,
            max_length=max_length,
            label_index=tuple(label2col[label] for label in LABELS),  # type: ignore[arg-type]
        )

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated to the model's context."""
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def score_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Probabilities (N x 3, columns bearish/neutral/bullish) for pre-tokenized inputs, padded right."""
        import torch

        enc = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.module(**enc).logits.float()
        probs = torch.softmax(logits, dim=-1)[:, list(self.label_index)]
        return probs.numpy()

    def score(self, texts: list[str]) -> np.ndarray:
        """Probabilities for raw texts, as one batch."""
        return self.score_ids(self.encode(texts))


def to_class_probs(row: np.ndarray) -> ClassProbs:
    """A probability row (bearish, neutral, bullish) as the wire type, renormalized after float32 rounding."""
    values = row.astype(np.float64)
    values = values / values.sum()
    return ClassProbs(bearish=float(values[0]), neutral=float(values[1]), bullish=float(values[2]))

