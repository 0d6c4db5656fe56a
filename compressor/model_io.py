"""Read the checkpoint to compress, check it is a LLaMA-architecture model we can handle, describe its shape.

Accepted inputs: a `LlamaForSequenceClassification` with bearish/neutral/bullish labels, or a
`LlamaForCausalLM` plus one label word per class, turned into a classifier whose score head is the LM
head's rows for those words (tied embeddings included). Everything is checked from `config.json` and the
tokenizer before any weight is read, so bad input fails in a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from compressor.data import LABELS
from compressor.errors import ModelError

if TYPE_CHECKING:
    from transformers import LlamaForSequenceClassification

log = structlog.get_logger(__name__)

CLASSIFIER = "LlamaForSequenceClassification"
CAUSAL_LM = "LlamaForCausalLM"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


@dataclass(frozen=True)
class ModelShape:
    """The dimensions compression changes; enough to validate a recipe without loading weights."""

    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    hidden: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.attention_heads // self.kv_heads

    def with_(self, **changes: int) -> ModelShape:
        return replace(self, **changes)

    def parameters(self, num_labels: int = len(LABELS)) -> int:
        """Parameter count of a classifier of this shape (embeddings counted once)."""
        h, d = self.hidden, self.head_dim
        attn = h * self.attention_heads * d * 2 + h * self.kv_heads * d * 2
        mlp = 3 * h * self.ffn
        return self.vocab * h + self.layers * (attn + mlp + 2 * h) + h + h * num_labels

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_from_config(config: Any) -> ModelShape:
    """`ModelShape` of a transformers `LlamaConfig` (or its dict)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    heads = int(get("num_attention_heads"))
    hidden = int(get("hidden_size"))
    return ModelShape(
        layers=int(get("num_hidden_layers")),
        attention_heads=heads,
        kv_heads=int(get("num_key_value_heads") or heads),
        head_dim=int(get("head_dim") or hidden // heads),
        ffn=int(get("intermediate_size")),
        hidden=hidden,
        vocab=int(get("vocab_size")),
        tied_embeddings=bool(get("tie_word_embeddings", False)),
    )


def model_shape(model: Any) -> ModelShape:
    return shape_from_config(model.config)


@dataclass(frozen=True)
class CheckedModel:
    """A checkpoint directory that passed every check, with what was learned on the way."""

    directory: Path
    config: dict[str, Any]
    architecture: str
    shape: ModelShape
    meta: dict[str, Any]
    content_hash: str
    label_words: tuple[str, ...] | None = None


def check_checkpoint(directory: str | Path, label_words: list[str] | None = None) -> CheckedModel:
    """Validate a checkpoint directory without loading weights; raise `ModelError` naming the problem."""
    from compressor.train import weights_hash

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such model directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{directory}: no config.json; expected a Hugging Face checkpoint")
    if not list(directory.glob("*.safetensors")):
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are refused)" if pickles else ""
        raise ModelError(f"{directory}: no .safetensors weights{hint}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{config_path}: not JSON ({exc.msg})") from exc
    if config.get("model_type") != "llama":
        raise ModelError(
            f"{directory}: model_type {config.get('model_type')!r} is not a LLaMA architecture "
            "(expected model_type 'llama')"
        )
    if "quantization_config" in config:
        raise ModelError(f"{directory}: already quantized ({config['quantization_config'].get('quant_method')}); "
                         "compress the dense checkpoint")
    archs = config.get("architectures") or []
    if CLASSIFIER in archs:
        arch = CLASSIFIER
        id2label = {int(k): str(v).lower() for k, v in (config.get("id2label") or {}).items()}
        if sorted(id2label.values()) != sorted(LABELS):
            raise ModelError(
                f"{directory}: classifier labels {sorted(id2label.values())} are not {list(LABELS)}; "
                "unknown labels cannot be scored into signals"
            )
    elif CAUSAL_LM in archs:
        arch = CAUSAL_LM
        if not label_words:
            raise ModelError(f"{directory}: a causal LM needs one label word per class ({', '.join(LABELS)})")
        if len(label_words) != len(LABELS):
            raise ModelError(f"{len(label_words)} label words for {len(LABELS)} labels ({', '.join(LABELS)})")
    else:
        raise ModelError(f"{directory}: architectures {archs} include neither {CLASSIFIER} nor {CAUSAL_LM}")
    shape = shape_from_config(config)
    if shape.attention_heads % shape.kv_heads:
        raise ModelError(f"{directory}: {shape.attention_heads} query heads do not split into {shape.kv_heads} groups")
    meta_path = directory / "finsignal.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return CheckedModel(
        directory=directory,
        config=config,
        architecture=arch,
        shape=shape,
        meta=meta,
        content_hash=meta.get("content_hash") or weights_hash(directory),
        label_words=tuple(label_words) if arch == CAUSAL_LM and label_words else None,
    )


def load_tokenizer(checked: CheckedModel) -> Any:
    """The checkpoint's tokenizer, with a pad token (LLaMA 3 ships none: reuse EOS, as its recipes do)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(checked.directory, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{checked.directory}: no usable tokenizer ({exc})") from exc
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ModelError(f"{checked.directory}: tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def label_token_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """The single token each label word encodes to (with a leading space, as it follows a prompt)."""
    ids = []
    for word in words:
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ModelError(f"label word {word!r} is {len(pieces)} tokens; each label word must be one token")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise ModelError(f"label words {list(words)} do not map to distinct tokens")
    return ids


def load_model(checked: CheckedModel, tokenizer: Any) -> LlamaForSequenceClassification:
    """The checkpoint as a float32 `LlamaForSequenceClassification` in eval mode."""
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs = {"dtype": torch.float32, "use_safetensors": True, "trust_remote_code": False, "local_files_only": True}
    if checked.architecture == CLASSIFIER:
        model = LlamaForSequenceClassification.from_pretrained(checked.directory, **kwargs)
    else:
        lm = LlamaForCausalLM.from_pretrained(checked.directory, **kwargs)
        model = classifier_from_causal_lm(lm, label_token_ids(tokenizer, checked.label_words or ()), tokenizer)
    model.config.use_cache = False
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def classifier_from_causal_lm(lm: Any, label_ids: list[int], tokenizer: Any) -> LlamaForSequenceClassification:
    """A classifier sharing the LM's body whose score rows are the LM head rows of the label words."""
    import torch
    from transformers import LlamaForSequenceClassification

    config = lm.config.to_dict()
    config.update(
        architectures=[CLASSIFIER], num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # the classifier has no LM head left to tie
    )
    cls_config = type(lm.config).from_dict(config)
    with torch.device("meta"):
        model = LlamaForSequenceClassification(cls_config)
    model.model = lm.model
    head = lm.get_output_embeddings().weight.detach()[label_ids].clone()
    model.score = torch.nn.Linear(head.shape[1], len(LABELS), bias=False)
    model.score.weight.data.copy_(head)
    return model
