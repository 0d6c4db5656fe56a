"""Fine-tune a pretrained LLaMA into a bearish/neutral/bullish classifier, dropping layers as it trains.

The full-depth model is never trained for long: after a few warm-up steps the least important decoder layer
(by a measured criterion, re-measured on the model as it is now) is removed every `drop_every` steps until
`target_layers` remain, in the spirit of successive layer dropping during fine-tuning (SAPLING, TrimLLM).
Each drop makes the remaining steps cheaper, so most of the budget is spent at the target depth.

The score head starts from the LM-head rows of one label word per class (" negative", " neutral",
" positive" by default), so step 0 is already the instruct model's zero-shot guess rather than noise.
Embeddings are frozen by default: on a few thousand sentences they would overfit, and frozen they cost no
optimizer state (a fifth of SmolLM2's weights). Early stopping watches a stratified validation split,
judging an exponential moving average of the weights at the target depth, which is also what is saved.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from compressor.data import LABELS, Corpus, DataError, load_corpus, split_validation
from compressor.errors import ModelError
from compressor.metrics import accuracy, macro_f1

if TYPE_CHECKING:
    import torch

log = structlog.get_logger(__name__)

CRITERIA = ("skip_loss", "block_influence", "angular", "top")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of `finetune`; the defaults fit ~4,000 sentences on 2 CPU cores in well under 30 minutes."""

    target_layers: int = 12  # depth to reach by successive dropping (<= the base's depth)
    teacher_layers: int | None = 16  # dropping pauses here; this model trains, then teaches the target depth
    teacher_epochs: float = 1.0  # passes at teacher depth before its predictions are recorded
    distill_alpha: float = 0.5  # weight of the teacher's soft labels against the true labels
    distill_temperature: float = 2.0
    drop_every: int = 6  # optimizer steps between two drops
    warmup_steps: int = 12  # steps at full depth before the first drop (the head and the body meet)
    criterion: str = "skip_loss"  # skip_loss (task loss when a layer is bypassed), block_influence, angular
    # On the way down to the teacher the head is untrained, so a task loss says little there. "top" keeps the
    # first `teacher_layers` layers, cut before the first step: dropping the top layers of a pretrained
    # transformer keeps fine-tuned quality best (Sajjad et al. 2023), and on the twitter set the first 16
    # of SmolLM2's layers beat 16 chosen by block influence while training (0.81 vs 0.75 after an epoch).
    # The measured criterion (`criterion`) then takes the teacher down to the target, head trained.
    teacher_criterion: str | None = "top"  # None: `criterion` for every drop
    probe_examples: int = 64  # held-out training examples the criterion is measured on
    keep_last_layer: bool = True  # the head reads the last layer's output: never drop it
    freeze_embeddings: bool = True
    epochs: float = 2.0  # passes over the training split at the target depth (fractional allowed)
    max_steps: int | None = None  # cap on optimizer steps (None: epochs decide)
    batch_size: int = 16
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3  # the 3-row score head starts from label words and moves faster
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    max_length: int = 128  # training truncation
    serving_max_length: int = 512  # window the worker chunks long documents into (capped by the model's context)
    label_words: tuple[str, str, str] = ("negative", "neutral", "positive")  # head init, bearish..bullish
    validation_fraction: float = 0.1
    eval_every: int = 50  # steps between validation checks once at the target depth
    patience: int = 4  # validation checks without improvement before stopping
    # Exponential moving average of the weights at the target depth: validation accuracy of the live weights
    # swings by several points between checks 50 steps apart on a few thousand sentences; the average does
    # not, and it is what validation judges, early stopping watches and the checkpoint keeps. None: off.
    ema_decay: float | None = 0.99
    trim_vocab: bool = True  # keep only the embedding rows the training corpus can reach (compressor/vocab.py)
    vocab_min_count: int = 1  # a corpus token is kept when seen at least this often
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    bf16_autocast: str = "auto"  # "auto": bf16 matmuls where the CPU has native bf16 (AMX/AVX512-BF16) or on CUDA; "on"; "off"
    seed: int = 0
    name: str = "finsignal-llama"

    def check(self) -> None:
        """Raise `ValueError` on settings that cannot work, before anything is loaded."""
        for value in (self.criterion, self.teacher_criterion or self.criterion):
            if value not in CRITERIA:
                raise ValueError(f"criterion {value!r}: expected one of {', '.join(CRITERIA)}")
        if self.target_layers < 1:
            raise ValueError("target_layers must be >= 1")
        if self.teacher_layers is not None and self.teacher_layers <= self.target_layers:
            raise ValueError(f"teacher_layers {self.teacher_layers} must be more than target_layers "
                             f"{self.target_layers} (or None: no teacher)")
        if not 0 <= self.distill_alpha <= 1 or self.distill_temperature <= 0:
            raise ValueError("distill_alpha must be in [0, 1] and distill_temperature > 0")
        if self.drop_every < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("drop_every, batch_size and eval_every must be >= 1")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError("ema_decay must be in (0, 1) (or None: no weight average)")
        if not 0 <= self.validation_fraction < 0.5:
            raise ValueError("validation_fraction must be in [0, 0.5)")
        if len(self.label_words) != len(LABELS):
            raise ValueError(f"{len(self.label_words)} label words for {len(LABELS)} labels")


@dataclass
class _Batches:
    """Token ids of a split, batched by similar length (far less padding on short headlines)."""

    ids: list[list[int]]
    labels: list[int]
    pad_id: int

    def collate(self, idx: list[int]) -> dict[str, Any]:
        import torch

        longest = max(len(self.ids[i]) for i in idx)
        input_ids = torch.full((len(idx), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, i in enumerate(idx):
            input_ids[row, : len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[row, : len(self.ids[i])] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "labels": torch.tensor([self.labels[i] for i in idx], dtype=torch.long)}

    def epoch(self, batch_size: int, rng: random.Random) -> list[list[int]]:
        from compressor.loop import make_batches

        return make_batches([len(s) for s in self.ids], batch_size, rng, by_length=True)

    def ordered(self, batch_size: int) -> list[list[int]]:
        order = sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _WeightAverage:
    """Exponential moving average of a model's trainable weights, swapped in for evaluation and saving."""

    def __init__(self, model: Any, decay: float) -> None:
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    def update(self) -> None:
        import torch

        self.updates += 1
        # the first updates weigh in faster (TensorFlow's ExponentialMovingAverage with num_updates), so an early
        # check does not judge weights that are mostly the starting point
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 - decay)

    def swap(self) -> None:
        """Exchange the live weights and the average (call twice to restore)."""
        import torch

        with torch.no_grad():
            for p, a in zip(self.params, self.average):
                live = p.detach().clone()
                p.copy_(a)
                a.copy_(live)


def _temper_head(model: Any, probe: _Batches, batches: list[list[int]]) -> None:
    """Scale the label-word head so its logits have unit spread on the probe set.

    LM-head rows give logits in the tens: a near one-hot softmax whose first gradients are huge and mostly
    noise. Scaling keeps the zero-shot ranking and starts training from calibrated-ish probabilities.
    """
    import torch

    logits = []
    model.eval()
    with torch.inference_mode():
        for idx in batches:
            batch = probe.collate(idx)
            batch.pop("labels")
            logits.append(model(**batch, use_cache=False).logits.float())
    model.train()
    spread = float(torch.cat(logits).std())
    if spread > 0:
        with torch.no_grad():
            model.score.weight.div_(spread)


def _freeze_embeddings(model: Any) -> None:
    model.model.embed_tokens.weight.requires_grad_(False)


def _optimizer(model: Any, config: FinetuneConfig) -> torch.optim.Optimizer:
    import torch

    head, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("score."):
            head.append(p)
        elif p.dim() < 2 or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "base_lr": config.learning_rate},
        {"params": no_decay, "weight_decay": 0.0, "base_lr": config.learning_rate},
        {"params": head, "weight_decay": 0.0, "base_lr": config.head_learning_rate},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)


def _loss_on(model: Any, data: _Batches, batches: list[list[int]]) -> tuple[float, list[int]]:
    """Mean cross-entropy on the given batches and predictions indexed like `data` (no gradients)."""
    import torch
    import torch.nn.functional as F

    total, n = 0.0, 0
    preds = [0] * len(data.ids)
    model.eval()
    with torch.inference_mode():
        for idx in batches:
            batch = data.collate(idx)
            labels = batch.pop("labels")
            logits = model(**batch, use_cache=False).logits.float()
            total += float(F.cross_entropy(logits, labels, reduction="sum"))
            n += len(idx)
            for i, p in zip(idx, logits.argmax(-1).tolist()):
                preds[i] = p
    model.train()
    return total / max(1, n), preds


def skip_losses(model: Any, data: _Batches, batches: list[list[int]], candidates: list[int],
                autocast: bool = False) -> list[float]:
    """Task loss of the model with each candidate layer bypassed (identity); lower means it can go.

    One full forward per batch records every layer's output; bypassing layer i then replays the recorded
    outputs of layers before it and runs only the layers after it, about half the work of a forward each.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Replay(nn.Module):
        def __init__(self, output: torch.Tensor) -> None:
            super().__init__()
            self.output = output

        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return self.output

    class Bypass(nn.Module):
        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return hidden_states

    layers = model.model.layers
    totals = [0.0] * len(candidates)
    count = 0
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for idx in batches:
                batch = data.collate(idx)
                labels = batch.pop("labels")
                outputs: list[torch.Tensor] = []
                model.model.layers = layers
                handles = [layer.register_forward_hook(lambda m, a, o: outputs.append(o)) for layer in layers]
                try:
                    model(**batch, use_cache=False)
                finally:
                    for h in handles:
                        h.remove()
                for k, i in enumerate(candidates):
                    model.model.layers = nn.ModuleList(
                        [Replay(outputs[j]) for j in range(i)] + [Bypass()] + list(layers[i + 1:]))
                    logits = model(**batch, use_cache=False).logits.float()
                    totals[k] += float(F.cross_entropy(logits, labels, reduction="sum"))
                count += len(idx)
    finally:
        model.model.layers = layers
        model.train()
    return [t / max(1, count) for t in totals]


def _choose_victim(model: Any, config: FinetuneConfig, probe: _Batches, probe_batches: list[list[int]],
                   autocast: bool, criterion: str) -> tuple[int, list[float]]:
    """The layer to drop now and the scores it was chosen by (one per layer; inf = protected)."""
    from compressor.stages.calibration import layer_scores

    n = len(model.model.layers)
    candidates = list(range(n - 1 if config.keep_last_layer and n > 1 else n))
    if criterion == "top":  # the deepest layer goes, whatever keep_last_layer says: the model becomes a prefix
        return n - 1, [math.inf] * (n - 1) + [0.0]
    if criterion == "skip_loss":
        cand_scores = skip_losses(model, probe, probe_batches, candidates, autocast)
    else:
        calib = []
        for idx in probe_batches:
            batch = probe.collate(idx)
            calib.append({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        all_scores = layer_scores(model, calib, criterion)
        model.train()
        cand_scores = [all_scores[i] for i in candidates]
    scores = [math.inf] * n
    for i, s in zip(candidates, cand_scores):
        scores[i] = s
    victim = min(candidates, key=lambda i: (scores[i], i))
    return victim, scores


@dataclass(frozen=True)
class Schedule:
    """Which steps end in a layer drop, the step the teacher is recorded after, and the learning rate.

    Without a teacher: `warmup_steps` at full depth, then a drop every `drop_every` steps down to the target,
    all inside `epochs` passes. With one: drops down to the teacher's depth, `teacher_epochs` of training
    there, the teacher's predictions recorded, then drops down to the target and `epochs` passes of
    distillation (drops included). The learning rate warms up and decays (cosine) once per phase, so the
    teacher is a converged model and the student starts its phase at full rate.
    """

    drops: tuple[int, ...]
    teacher_step: int | None
    teacher_layers: int | None
    total: int
    warmup_fraction: float

    def factor(self, step: int) -> float:
        """Multiplier on the base learning rates for optimizer step `step` (0-based)."""
        start, end = 0, self.total
        if self.teacher_step is not None:
            start, end = (0, self.teacher_step) if step < self.teacher_step else (self.teacher_step, self.total)
        length, t = max(1, end - start), step - start
        warm = max(1, int(length * self.warmup_fraction))
        return min(1.0, (t + 1) / warm) * 0.5 * (1 + math.cos(math.pi * t / length))


def plan_schedule(config: FinetuneConfig, start_layers: int, steps_per_epoch: int) -> Schedule:
    """The step plan for a base of `start_layers` layers; `ValueError` when the drops do not fit."""
    teacher = None if config.teacher_layers is None else min(config.teacher_layers, start_layers)
    if teacher is None or teacher <= config.target_layers:
        n_drops = start_layers - config.target_layers
        drops = [config.warmup_steps + k * config.drop_every for k in range(n_drops)]
        total, teacher_step, teacher = max(1, round(config.epochs * steps_per_epoch)), None, None
    else:
        if (config.teacher_criterion or config.criterion) == "top":  # a cut, nothing to measure: before training
            first = [0] * (start_layers - teacher)
        else:
            first = [config.warmup_steps + k * config.drop_every for k in range(start_layers - teacher)]
        teacher_step = (first[-1] if first else 0) + max(1, round(config.teacher_epochs * steps_per_epoch))
        drops = first + [teacher_step + k * config.drop_every for k in range(teacher - config.target_layers)]
        total = teacher_step + max(1, round(config.epochs * steps_per_epoch))
    if config.max_steps:
        total = min(total, config.max_steps)
    if drops and drops[-1] >= total or (teacher_step is not None and teacher_step >= total):
        raise ValueError(f"{len(drops)} drops every {config.drop_every} steps after {config.warmup_steps} warm-up "
                         f"steps (and the teacher's training) need more than the {total} steps planned; raise "
                         "epochs or lower drop_every")
    return Schedule(tuple(drops), teacher_step, teacher, total, config.warmup_fraction)


def _loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None, config: FinetuneConfig) -> torch.Tensor:
    """Cross-entropy on the labels, mixed with the teacher's tempered distribution when there is one."""
    import torch.nn.functional as F

    hard = F.cross_entropy(logits, labels)
    if soft is None or config.distill_alpha == 0:
        return hard
    t = config.distill_temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(soft / t, dim=-1), log_target=True,
                  reduction="batchmean") * t * t
    return config.distill_alpha * kd + (1 - config.distill_alpha) * hard


def _predict_logits(model: Any, data: _Batches, autocast: bool) -> torch.Tensor:
    """Logits of every example of `data`, indexed like it (the teacher's soft labels)."""
    import torch

    out = torch.zeros(len(data.ids), model.config.num_labels)
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for idx in data.ordered(64):
            batch = data.collate(idx)
            batch.pop("labels")
            out[idx] = model(**batch, use_cache=False).logits.float()
    model.train()
    return out.clone()  # an inference tensor cannot be indexed into autograd-tracked losses otherwise


def load_base(base: str | Path, config: FinetuneConfig) -> tuple[Any, Any, Any]:
    """Check and load the base checkpoint as a classifier: (checked, tokenizer, model)."""
    from compressor.model_io import check_checkpoint, load_model, load_tokenizer

    checked = check_checkpoint(base, list(config.label_words))
    if checked.shape.layers < config.target_layers:
        raise ModelError(f"{base}: target_layers {config.target_layers} but the model has only "
                         f"{checked.shape.layers} layers")
    tokenizer = load_tokenizer(checked)
    if checked.architecture != "LlamaForSequenceClassification":
        from compressor.model_io import label_token_ids

        label_token_ids(tokenizer, config.label_words)  # one clear error before the weights load
    model = load_model(checked, tokenizer)
    return checked, tokenizer, model


def _check_data(train: Corpus) -> None:
    missing = [label for label, n in train.class_counts().items() if n < 2]
    if missing:
        raise DataError(f"{train.path}: fewer than 2 examples of {', '.join(missing)}; every class needs some")


def finetune(
    base: str | Path,
    train_path: str | Path,
    out: str | Path,
    eval_path: str | Path | None = None,
    config: FinetuneConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `base` on `train_path` with successive layer dropping; write the checkpoint to `out`."""
    import torch
    from tqdm.auto import tqdm

    from compressor.train import evaluate, save_checkpoint

    config = config or FinetuneConfig()
    config.check()
    out = Path(out)
    train_corpus = load_corpus(train_path, min_examples=8)
    eval_corpus = load_corpus(eval_path, min_examples=1) if eval_path else None
    _check_data(train_corpus)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    checked, tokenizer, model = load_base(base, config)
    random.seed(config.seed)
    torch.manual_seed(config.seed)

    fit_corpus, val_corpus = train_corpus, None
    if config.validation_fraction > 0:
        fit_corpus, val_corpus = split_validation(train_corpus, config.validation_fraction, config.seed)

    def encode(corpus: Corpus) -> _Batches:
        ids = tokenizer(corpus.texts, truncation=True, max_length=config.max_length,
                        add_special_tokens=True)["input_ids"]
        return _Batches([list(x) or [tokenizer.pad_token_id] for x in ids], corpus.labels, tokenizer.pad_token_id)

    data = encode(fit_corpus)
    # the criterion is measured on examples the optimizer never sees, so a layer is not kept for memorizing
    rng = random.Random(config.seed)
    probe_idx = rng.sample(range(len(data.ids)), min(config.probe_examples, len(data.ids) // 4))
    probe = _Batches([data.ids[i] for i in probe_idx], [data.labels[i] for i in probe_idx], data.pad_id)
    keep = sorted(set(range(len(data.ids))) - set(probe_idx))
    data = _Batches([data.ids[i] for i in keep], [data.labels[i] for i in keep], data.pad_id)
    probe_batches = probe.ordered(32)
    val = encode(val_corpus) if val_corpus is not None else None

    _temper_head(model, probe, probe_batches)
    if config.freeze_embeddings:
        _freeze_embeddings(model)
    model.config.use_cache = False
    model.train()
    start_layers = len(model.model.layers)
    steps_per_epoch = math.ceil(len(data.ids) / config.batch_size)
    plan = plan_schedule(config, start_layers, steps_per_epoch)
    autocast = use_bf16_autocast(config.bf16_autocast)
    optimizer = _optimizer(model, config)
    log.info("finetune.start", base=str(base), layers=start_layers, target_layers=config.target_layers,
             teacher_layers=plan.teacher_layers, examples=len(data.ids), steps=plan.total,
             criterion=config.criterion, trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))

    history: list[dict[str, Any]] = []
    drops: list[dict[str, Any]] = []
    teacher: dict[str, Any] | None = None

    def drop_one(step: int) -> torch.optim.Optimizer:
        """Drop the layer the criterion of this phase picks; a fresh optimizer (the old one held its moments)."""
        before_teacher = plan.teacher_step is not None and step < plan.teacher_step
        criterion = (config.teacher_criterion or config.criterion) if before_teacher else config.criterion
        victim, scores = _choose_victim(model, config, probe, probe_batches, autocast, criterion)
        _drop(model, victim)
        decision = {"step": step, "dropped_original": _original_index(drops, victim, start_layers),
                    "dropped_now": victim, "layers_left": len(model.model.layers), "criterion": criterion,
                    "scores": [round(s, 5) if math.isfinite(s) else None for s in scores]}
        drops.append(decision)
        log.debug("finetune.drop", **{k: v for k, v in decision.items() if k != "scores"})
        return _optimizer(model, config)

    if plan.drops.count(0):
        for _ in range(plan.drops.count(0)):
            optimizer = drop_one(0)
        _temper_head(model, probe, probe_batches)  # the cut model's logits have another spread
    soft: torch.Tensor | None = None  # the teacher's logits per training example
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    best_step, stale, stopped_early = None, 0, False
    average: _WeightAverage | None = None
    step, epoch, loss_sum, loss_n = 0, 0, 0.0, 0
    bar = tqdm(total=plan.total, desc="fine-tune", unit="step", disable=not progress, dynamic_ncols=True)
    batches: list[list[int]] = []
    while step < plan.total:
        if not batches:
            epoch += 1
            batches = data.epoch(config.batch_size, rng)
        idx = batches.pop()
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * plan.factor(step)
        batch = data.collate(idx)
        labels = batch.pop("labels")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(**batch, use_cache=False).logits.float()
        loss = _loss(logits, labels, None if soft is None else soft[idx], config)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.update(1)
        bar.set_postfix(layers=len(model.model.layers), loss=f"{loss_sum / loss_n:.3f}")
        if step == plan.teacher_step:
            soft = _predict_logits(model, data, autocast)
            teacher = {"step": step, "layers": len(model.model.layers),
                       "kept_layers": _kept_original(drops, start_layers)}
            if val is not None:
                _, preds = _loss_on(model, val, val.ordered(64))
                teacher.update(val_accuracy=accuracy(val.labels, preds), val_macro_f1=macro_f1(val.labels, preds))
                bar.write(f"step {step}: teacher ({teacher['layers']} layers) val accuracy "
                          f"{teacher['val_accuracy']:.4f} macro-F1 {teacher['val_macro_f1']:.4f}")
            log.info("finetune.teacher", **{k: v for k, v in teacher.items() if k != "kept_layers"})
        if step in plan.drops:
            optimizer = drop_one(step)
        at_target = len(model.model.layers) == config.target_layers
        if at_target and config.ema_decay is not None and step not in plan.drops:
            if average is None:  # from the step the last drop left the target depth: the layers are final
                average = _WeightAverage(model, config.ema_decay)
            average.update()
        if val is not None and at_target and (step % config.eval_every == 0 or step == plan.total):
            if average is not None:
                average.swap()  # judged, kept and saved: the average
            val_loss, preds = _loss_on(model, val, val.ordered(64))
            metric = macro_f1(val.labels, preds)
            row = {"step": step, "epoch": epoch, "train_loss": round(loss_sum / max(1, loss_n), 5),
                   "val_loss": round(val_loss, 5), "val_accuracy": accuracy(val.labels, preds),
                   "val_macro_f1": metric, "layers": len(model.model.layers)}
            history.append(row)
            loss_sum, loss_n = 0.0, 0
            bar.write(f"step {step}: val accuracy {row['val_accuracy']:.4f} macro-F1 {metric:.4f}")
            if best is None or metric > best[0]:
                best = (metric, {k: v.detach().clone() for k, v in model.state_dict().items()})
                best_step, stale = step, 0
            else:
                stale += 1
            if average is not None:
                average.swap()  # training goes on from the live weights
            if stale >= config.patience:
                stopped_early = True
                break
    bar.close()
    if best is not None:
        model.load_state_dict(best[1])
    elif average is not None:
        average.swap()  # no validation split: the average is what is saved
    model.eval()
    vocab_report = None
    if config.trim_vocab:
        from compressor.vocab import trim_vocabulary

        tokenizer, trimmed = trim_vocabulary(model, tokenizer, train_corpus.texts, config.vocab_min_count)
        vocab_report = trimmed.as_dict()
        log.info("finetune.vocab_trimmed", **vocab_report)
    tokenizer.model_max_length = min(config.serving_max_length, int(model.config.max_position_embeddings))
    train_seconds = time.perf_counter() - started

    report: dict[str, Any] = {
        "train": {"path": str(train_corpus.path), "sha256": train_corpus.sha256, **train_corpus.class_counts()},
        "base": {"path": str(checked.directory), "content_hash": checked.content_hash,
                 "layers": start_layers, "name": checked.meta.get("name")},
        "config": asdict(config),
        "steps": step, "planned_steps": plan.total, "weight_average": None if average is None else
        {"decay": config.ema_decay, "updates": average.updates}, "teacher": teacher, "bf16_autocast": autocast, "stopped_early": stopped_early, "best_step": best_step,
        "history": history, "drops": drops,
        "kept_layers": _kept_original(drops, start_layers),
        "vocabulary": vocab_report,
        "train_seconds": round(train_seconds, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if val_corpus is not None:
        report["validation"] = {"examples": len(val_corpus.examples), "fraction": config.validation_fraction}
    if eval_corpus is not None:
        final = evaluate(model, tokenizer, eval_corpus, config.max_length)
        report["eval"] = {"path": str(eval_corpus.path), "sha256": eval_corpus.sha256, **final}
    lineage = {
        "base": {"path": str(checked.directory), "content_hash": checked.content_hash,
                 "import": checked.meta.get("source")},
        "train_sha256": train_corpus.sha256,
        "eval_sha256": eval_corpus.sha256 if eval_corpus else None,
        "recipe": {"stage": "finetune", **asdict(config)},
        "teacher": None if teacher is None else {"self_distilled": True, "layers": teacher["layers"],
                                                 "kept_layers": teacher["kept_layers"]},
    }
    model.config.architectures = ["LlamaForSequenceClassification"]
    meta = save_checkpoint(model, tokenizer, out, name=config.name, lineage=lineage, report=report)
    report["model"] = {"name": meta["name"], "version": meta["version"], "content_hash": meta["content_hash"]}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("finetune.done", out=str(out), version=meta["version"], layers=len(model.model.layers),
             seconds=round(train_seconds, 1), **{k: report.get("eval", {}).get(k) for k in ("accuracy", "macro_f1")})
    return report


def use_bf16_autocast(setting: str) -> bool:
    """Whether to train with bf16 autocast: fp32 master weights, bf16 matmuls (AMX makes them ~1.5x faster)."""
    import torch

    from compressor.runtime.loader import cpu_has_bf16

    if setting not in ("auto", "on", "off"):
        raise ValueError(f"bf16_autocast {setting!r}: expected auto, on or off")
    if setting != "auto":
        return setting == "on"
    return bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() == "AVX512"
                and cpu_has_bf16())


def _drop(model: Any, index: int) -> None:
    from compressor.stages.surgery import drop_layers

    drop_layers(model, [index])


def _kept_original(drops: list[dict[str, Any]], start_layers: int) -> list[int]:
    """Original indices of the layers still present after `drops`."""
    kept = list(range(start_layers))
    for d in drops:
        kept.pop(d["dropped_now"])
    return kept


def _original_index(drops: list[dict[str, Any]], now: int, start_layers: int) -> int:
    return _kept_original(drops, start_layers)[now]
