"""The training loop shared by `compress train` and every recovery fine-tune of `compress run`.

One epoch is: shuffle, batch (optionally by similar length, which pads far less), forward, loss (hard
labels, plus temperature-softened teacher logits when distilling), clip, step, then the hooks: `after_step`
re-imposes constraints such as fixed 2:4 masks, `after_epoch` may change the model's structure (successive
layer dropping), in which case the optimizer is rebuilt for the new parameter set.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    import numpy as np
    import torch

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings for one call of `fit`."""

    epochs: int
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_grad_norm: float = 1.0
    token_dropout: float = 0.0  # chance that a text token is replaced by <unk> during training
    label_smoothing: float = 0.0
    length_buckets: bool = False  # batch texts of similar length together (shuffled), padding less
    distill_alpha: float = 0.0  # weight of the soft-target loss; 0 trains on hard labels only
    distill_temperature: float = 2.0
    objective: str = "classify"  # or "lm": next-token prediction on the same texts (self-pretraining)
    layer_dropout: float = 0.0  # LayerDrop (Fan et al. 2019): skip each decoder layer with this chance
    seed: int = 0


@dataclass
class TrainSet:
    """Token ids, labels and (when distilling) the teacher's logits for each example."""

    input_ids: list[list[int]]
    labels: list[int]
    pad_id: int
    unk_id: int | None = None
    special_ids: frozenset[int] = frozenset()
    teacher_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


class Hook(Protocol):
    """Called by `fit`; both methods are optional in practice (see `BaseHook`)."""

    def after_step(self, model: Any) -> None: ...

    def after_epoch(self, epoch: int, model: Any) -> bool: ...


class BaseHook:
    """A hook that does nothing; subclasses override what they need."""

    def after_step(self, model: Any) -> None:
        return None

    def after_epoch(self, epoch: int, model: Any) -> bool:
        return False


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    steps: int = 0


def make_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, by_length: bool) -> list[list[int]]:
    """Index batches: random, or of similar lengths (sorted within shuffled windows), in shuffled order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if by_length:
        window = batch_size * 50
        chunks = [sorted(order[i : i + window], key=lambda j: lengths[j]) for i in range(0, len(order), window)]
        order = [j for chunk in chunks for j in chunk]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if by_length:
        rng.shuffle(batches)
    return batches


def _collate(data: TrainSet, idx: list[int], token_dropout: float, generator: torch.Generator) -> dict[str, Any]:
    import torch

    longest = max(len(data.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), longest), data.pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), longest), dtype=torch.long)
    for row, i in enumerate(idx):
        seq = data.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    if token_dropout > 0 and data.unk_id is not None:
        droppable = mask.bool()
        for special in data.special_ids:
            droppable &= ids != special
        drop = droppable & (torch.rand(ids.shape, generator=generator) < token_dropout)
        ids = ids.masked_fill(drop, data.unk_id)
    return {"input_ids": ids, "attention_mask": mask}


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T), Hinton et al. 2015."""
    import torch.nn.functional as F

    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if teacher_logits is None or alpha <= 0:
        return hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean", log_target=True,
    )
    return (1 - alpha) * hard + alpha * t * t * soft


def _layer_drop_hooks(model: Any, p: float, generator: torch.Generator) -> list[Any]:
    """While training, each decoder layer passes its input through unchanged with probability `p`."""
    import torch

    def skip(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if module.training and float(torch.rand((), generator=generator)) < p:
            return args[0] if args else kwargs["hidden_states"]
        return output

    return [layer.register_forward_hook(skip, with_kwargs=True) for layer in model.model.layers]


def _optimizer(model: Any, config: LoopConfig) -> torch.optim.Optimizer:
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def fit(
    model: Any,
    data: TrainSet,
    config: LoopConfig,
    *,
    hooks: Sequence[Hook] = (),
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    select_metric: str | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Train `model` in place; with `select_metric`, restore the epoch that scored best on `evaluate`."""
    import torch
    from tqdm.auto import tqdm

    if len(data) == 0:
        raise ValueError("no training examples")
    if config.distill_alpha > 0 and data.teacher_logits is None:
        raise ValueError("distillation requested but the training set carries no teacher logits")
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    lengths = [len(s) for s in data.input_ids]
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = max(1, int(total * config.warmup_fraction))

    def lr_factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))

    optimizer = _optimizer(model, config)
    step = 0
    result = FitResult()
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    teacher = torch.from_numpy(data.teacher_logits).float() if data.teacher_logits is not None else None
    targets = torch.tensor(data.labels, dtype=torch.long)
    bar = tqdm(total=total, desc=desc, unit="batch", disable=not progress, leave=False)
    drop_hooks: list[Any] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        for h in drop_hooks:
            h.remove()
        drop_hooks = _layer_drop_hooks(model, config.layer_dropout, generator) if config.layer_dropout else []
        loss_sum, n_batches = 0.0, 0
        for idx in make_batches(lengths, config.batch_size, rng, config.length_buckets):
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * lr_factor(step)
            batch = _collate(data, idx, config.token_dropout, generator)
            if config.objective == "lm":
                clean = _collate(data, idx, 0.0, generator)
                labels = clean["input_ids"].masked_fill(clean["attention_mask"] == 0, -100)
                loss = model(**batch, labels=labels, use_cache=False).loss
            else:
                logits = model(**batch, use_cache=False).logits
                index = torch.tensor(idx)
                loss = distillation_loss(
                    logits.float(), targets[index], teacher[index] if teacher is not None else None,
                    config.distill_alpha, config.distill_temperature, config.label_smoothing,
                )
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for hook in hooks:
                hook.after_step(model)
            step += 1
            loss_sum += loss.item()
            n_batches += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        row: dict[str, Any] = {"epoch": epoch, "train_loss": round(loss_sum / max(1, n_batches), 5)}
        changed = False
        for hook in hooks:
            changed = bool(hook.after_epoch(epoch, model)) or changed
        for h in drop_hooks:  # evaluation below sees every layer
            h.remove()
        drop_hooks = []
        if changed:  # parameters were removed or replaced: start a fresh optimizer on the same schedule
            optimizer = _optimizer(model, config)
            row["structure_changed"] = True
            best, result.best_epoch = None, None  # an earlier snapshot no longer fits the model
        if evaluate is not None:
            metrics = evaluate(model)
            row.update(metrics)
            if select_metric is not None and not changed and (best is None or metrics[select_metric] > best[0]):
                best = (metrics[select_metric], {k: v.detach().clone() for k, v in model.state_dict().items()})
                result.best_epoch = epoch
        result.history.append(row)
        log.info(f"{desc}.epoch", **row)
    bar.close()
    if best is not None:
        model.load_state_dict(best[1])
    result.steps = step
    return result
