"""Train a small LLaMA-architecture sentiment classifier, tokenizer included, from labeled JSONL.

The output directory is a standard Hugging Face checkpoint (`config.json`,
`model.safetensors`, tokenizer files) plus `finsignal.json` (name, version,
lineage) and `report.json` (eval accuracy and macro-F1).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from compressor.data import LABELS, Corpus, DataError, load_corpus, split_validation
from compressor.metrics import accuracy, confusion, macro_f1

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForSequenceClassification, PreTrainedTokenizerFast

log = structlog.get_logger(__name__)

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


@dataclass(frozen=True)
class TrainConfig:
    """Model shape and optimisation settings; the defaults build the demo model in seconds."""

    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, as in LLaMA 3
    intermediate_size: int = 352
    max_length: int = 128
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    dropout: float = 0.1
    seed: int = 0
    name: str = "finsignal-sentiment"
    keep_best: bool = field(default=True, metadata={"help": "keep the epoch with the best eval macro-F1"})
    # Added for real corpora; the defaults keep the original behaviour.
    normalize_urls: bool = False  # tokenizer maps every URL to "<url>": shorter inputs, no random t.co noise
    lowercase: bool = False  # tokenizer lowercases: fewer, better-trained tokens on a small corpus
    validation_fraction: float = 0.0  # >0: hold out this stratified share of train to pick the best epoch
    token_dropout: float = 0.0  # chance a text token is replaced by <unk> during training (regularizer)
    label_smoothing: float = 0.0
    length_buckets: bool = False  # batch texts of similar length: far less padding, faster epochs
    pretrain_epochs: int = 0  # >0: first train the body as a causal LM on the training texts (self-pretraining)
    pretrain_learning_rate: float | None = None  # default: learning_rate
    distill_alpha: float = 0.0  # >0 with a `teacher` passed to train(): weight of its soft targets
    distill_temperature: float = 1.0
    layer_dropout: float = 0.0  # LayerDrop: skip each layer with this chance while training (robust to dropping)

    def model_config(self, tokenizer: PreTrainedTokenizerFast) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=max(self.max_length, 512),
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            use_cache=False,  # a classifier never generates: no KV cache on every scoring call
            attention_dropout=self.dropout,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
            problem_type="single_label_classification",
        )


URL_PATTERN = r"https?://\S+"


def train_tokenizer(
    texts: list[str], vocab_size: int, max_length: int, normalize_urls: bool = False, lowercase: bool = False
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the corpus; every text becomes `<s> ... </s>`.

    The closing `</s>` gives the classifier a fixed token to pool from, whatever the text. With
    `normalize_urls` the tokenizer itself (tokenizer.json) rewrites URLs to `<url>`, so every loader
    applies the same rule.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    rules = ([normalizers.Replace(Regex(URL_PATTERN), "<url>")] if normalize_urls else []) + (
        [normalizers.Lowercase()] if lowercase else [])
    if rules:
        tok.normalizer = normalizers.Sequence(rules)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
    )


def predict(
    model: LlamaForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    batch_size: int = 64,
    max_length: int | None = None,
) -> Any:
    """Class probabilities (N x 3 numpy array) for `texts`, in order; batches sorted by length."""
    import numpy as np
    import torch

    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length or tokenizer.model_max_length,
                return_tensors="pt",
            )
            logits = model(**enc).logits.float()
            out[idx] = torch.softmax(logits, dim=-1).numpy()
    return out


def evaluate(model: Any, tokenizer: Any, corpus: Corpus, max_length: int | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix of `model` on `corpus`."""
    probs = predict(model, tokenizer, corpus.texts, max_length=max_length)
    pred = probs.argmax(axis=1).tolist()
    return {
        "examples": len(corpus.examples),
        "accuracy": accuracy(corpus.labels, pred),
        "macro_f1": macro_f1(corpus.labels, pred),
        "confusion": confusion(corpus.labels, pred).tolist(),
    }


def weights_hash(directory: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    model: Any, tokenizer: Any, out: Path, *, name: str, lineage: dict[str, Any], report: dict[str, Any]
) -> dict[str, Any]:
    """Write weights (safetensors), tokenizer, `finsignal.json` and `report.json`; return the metadata."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    content_hash = weights_hash(out)
    meta = {
        "format": 1,
        "name": name,
        "version": content_hash[:12],
        "content_hash": content_hash,
        "labels": list(LABELS),
        "max_length": int(tokenizer.model_max_length),
        "created_unix": int(time.time()),
        "lineage": lineage,
    }
    (out / "finsignal.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return meta


def _self_pretrain(model: Any, data: Any, config: TrainConfig, progress: bool) -> list[dict[str, Any]]:
    """Next-token prediction on the training texts, then copy the body into `model`.

    Pretraining on the downstream corpus itself, with no outside data, recovers much of what a pretrained
    checkpoint would bring (Krishna et al., "Downstream datasets make surprisingly good pretraining
    corpora", 2023). The LM head is tied to the embeddings and dropped afterwards.
    """
    from transformers import LlamaForCausalLM

    from compressor.loop import LoopConfig, fit

    lm_config = model.config.to_dict()
    lm_config.update(architectures=["LlamaForCausalLM"], tie_word_embeddings=True)
    lm = LlamaForCausalLM(type(model.config).from_dict(lm_config))
    loop = LoopConfig(
        epochs=config.pretrain_epochs, batch_size=config.batch_size,
        learning_rate=config.pretrain_learning_rate or config.learning_rate, weight_decay=config.weight_decay,
        warmup_fraction=config.warmup_fraction, length_buckets=config.length_buckets, objective="lm",
        seed=config.seed,
    )
    result = fit(lm, data, loop, progress=progress, desc="pretrain")
    model.model.load_state_dict(lm.model.state_dict(), strict=True)
    return result.history


def train(
    train_path: str | Path,
    out: str | Path,
    eval_path: str | Path | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    teacher: Callable[[list[str]], Any] | None = None,
    teacher_name: str | None = None,
    data_card: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a classifier on `train_path` and write the checkpoint to `out`; return the report.

    `teacher`, if given, maps texts to logits (N x 3, columns bearish/neutral/bullish); with
    `config.distill_alpha > 0` the model also learns from those soft targets (knowledge distillation).
    `teacher_name` goes into the lineage. `data_card` says what the train and eval data are (e.g.
    template-generated, not real news); it is written to `report.json` (`data`, and beside the eval
    metrics) and `finsignal.json` (`lineage.data`), so no accuracy travels without it.
    """
    import torch
    from transformers import LlamaForSequenceClassification

    from compressor.loop import LoopConfig, TrainSet, fit

    config = config or TrainConfig()
    out = Path(out)
    train_corpus = load_corpus(train_path, min_examples=8)
    eval_corpus = load_corpus(eval_path, min_examples=1) if eval_path else None
    missing = [label for label, n in train_corpus.class_counts().items() if n == 0]
    if missing:
        raise DataError(f"{train_corpus.path}: no examples of {', '.join(missing)}; every class needs some")
    fit_corpus, val_corpus = train_corpus, None
    if config.validation_fraction > 0:
        fit_corpus, val_corpus = split_validation(train_corpus, config.validation_fraction, config.seed)

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer = train_tokenizer(fit_corpus.texts, config.vocab_size, config.max_length, config.normalize_urls,
                                config.lowercase)
    model = LlamaForSequenceClassification(config.model_config(tokenizer))
    data = TrainSet(
        input_ids=tokenizer(fit_corpus.texts, truncation=True, max_length=config.max_length)["input_ids"],
        labels=fit_corpus.labels,
        pad_id=tokenizer.pad_token_id,
        unk_id=tokenizer.unk_token_id,
        special_ids=frozenset(tokenizer.all_special_ids),
    )
    distilling = teacher is not None and config.distill_alpha > 0
    if config.distill_alpha > 0 and teacher is None:
        raise ValueError("distill_alpha > 0 needs a teacher")
    if distilling:
        import numpy as np

        data.teacher_logits = np.asarray(teacher(fit_corpus.texts), dtype=np.float32)  # type: ignore[misc]
        if data.teacher_logits.shape != (len(fit_corpus.texts), len(LABELS)):
            raise ValueError(f"teacher returned shape {data.teacher_logits.shape}, expected "
                             f"({len(fit_corpus.texts)}, {len(LABELS)})")
    loop = LoopConfig(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_fraction=config.warmup_fraction,
        token_dropout=config.token_dropout, label_smoothing=config.label_smoothing,
        length_buckets=config.length_buckets, seed=config.seed,
        distill_alpha=config.distill_alpha if distilling else 0.0, distill_temperature=config.distill_temperature,
        layer_dropout=config.layer_dropout,
    )
    select = val_corpus or eval_corpus

    def score_epoch(m: Any) -> dict[str, float]:
        metrics = evaluate(m, tokenizer, select, config.max_length)  # type: ignore[arg-type]
        prefix = "val" if val_corpus is not None else "eval"
        return {f"{prefix}_accuracy": metrics["accuracy"], f"{prefix}_macro_f1": metrics["macro_f1"]}

    log.info("train.start", examples=len(data), parameters=sum(p.numel() for p in model.parameters()),
             epochs=config.epochs, out=str(out))
    started = time.perf_counter()
    pretrain_history = _self_pretrain(model, data, config, progress) if config.pretrain_epochs else []
    result = fit(
        model, data, loop,
        evaluate=score_epoch if select is not None else None,
        select_metric=("val_macro_f1" if val_corpus is not None else "eval_macro_f1")
        if select is not None and config.keep_best else None,
        progress=progress,
    )
    report: dict[str, Any] = {
        "train": {"path": str(train_corpus.path), "sha256": train_corpus.sha256, **train_corpus.class_counts()},
        "config": asdict(config),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "pretrain_history": pretrain_history,
        "train_seconds": round(time.perf_counter() - started, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if val_corpus is not None:
        report["validation"] = {"examples": len(val_corpus.examples), "fraction": config.validation_fraction,
                                "seed": config.seed}
    if eval_corpus is not None:
        final = evaluate(model, tokenizer, eval_corpus, config.max_length)
        report["eval"] = {"path": str(eval_corpus.path), "sha256": eval_corpus.sha256, **final}
        if data_card is not None:
            report["eval"]["data"] = data_card.get("kind")
            report["eval"]["caveat"] = data_card.get("caveat")
    if data_card is not None:
        report["data"] = data_card
    lineage = {
        "base": None,
        "train_sha256": train_corpus.sha256,
        "eval_sha256": eval_corpus.sha256 if eval_corpus else None,
        "recipe": {"stage": "train", **asdict(config)},
        "teacher": teacher_name if teacher is not None and config.distill_alpha > 0 else None,
        **({"data": data_card} if data_card is not None else {}),
    }
    meta = save_checkpoint(model, tokenizer, out, name=config.name, lineage=lineage, report=report)
    report["model"] = {"name": meta["name"], "version": meta["version"], "content_hash": meta["content_hash"]}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("train.done", out=str(out), version=meta["version"],
             **{k: report.get("eval", {}).get(k) for k in ("accuracy", "macro_f1")})
    return report
