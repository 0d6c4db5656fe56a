"""What every stage shares: the compression context and the initialize -> apply -> finalize lifecycle.

A stage is built from its recipe spec. `plan` checks the spec against a model shape without touching
weights, so the whole recipe is validated before any training. Then, on the live model:
`initialize` measures what the stage needs (importance on calibration data), `apply` changes the model
and runs its recovery fine-tune (with distillation), `finalize` folds any training-time machinery
(fake quantization) into the form that is saved. Calling them out of order raises `StageLifecycleError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from compressor.errors import StageLifecycleError

if TYPE_CHECKING:
    from compressor.loop import FitResult, Hook, TrainSet
    from compressor.model_io import ModelShape
    from compressor.recipe import Finetune, Recipe

log = structlog.get_logger(__name__)


@dataclass
class Context:
    """The model being compressed and everything stages need around it."""

    model: Any
    tokenizer: Any
    recipe: Recipe
    train: TrainSet
    calibration: list[dict[str, Any]]
    progress: bool = True
    hooks: list[Hook] = field(default_factory=list)  # constraints every later fine-tune keeps (2:4 masks)
    properties: dict[str, Any] = field(default_factory=dict)  # what the saved artifact must record

    def finetune(self, settings: Finetune, *, hooks: list[Hook] | tuple[Hook, ...] = (), desc: str) -> FitResult:
        """A recovery fine-tune with the recipe's distillation, keeping every standing constraint."""
        from compressor.loop import FitResult, LoopConfig, fit

        if settings.epochs == 0:
            return FitResult()
        distill = self.recipe.distill
        config = LoopConfig(
            epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay, warmup_fraction=settings.warmup_fraction,
            token_dropout=settings.token_dropout, label_smoothing=settings.label_smoothing,
            length_buckets=settings.length_buckets, seed=self.recipe.seed,
            distill_alpha=distill.alpha if distill.enabled else 0.0, distill_temperature=distill.temperature,
        )
        result = fit(self.model, self.train, config, hooks=[*self.hooks, *hooks], progress=self.progress, desc=desc)
        self.model.eval()
        return result


@dataclass
class StageReport:
    """What a stage did, for the manifest: decisions, scores measured, fine-tune history."""

    details: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Stage:
    """Base class: subclasses implement `plan`, `_initialize`, `_apply` and optionally `_finalize`."""

    type: ClassVar[str]

    def __init__(self, spec: Any, recipe: Recipe, name: str) -> None:
        self.spec = spec
        self.recipe = recipe
        self.name = name
        self.report = StageReport()
        self._state = "created"

    # ---- static validation -------------------------------------------------------------------------
    def plan(self, shape: ModelShape) -> ModelShape:
        """The shape after this stage; raise `RecipeError` if the spec asks more than `shape` has."""
        self._expect("created", "plan")
        planned = self._plan(shape)
        self._state = "planned"
        return planned

    def _plan(self, shape: ModelShape) -> ModelShape:
        return shape

    # ---- lifecycle -----------------------------------------------------------------------------------
    def initialize(self, ctx: Context) -> None:
        self._expect("planned", "initialize")
        self._initialize(ctx)
        self._state = "initialized"

    def apply(self, ctx: Context) -> None:
        self._expect("initialized", "apply")
        self._apply(ctx)
        self._state = "applied"

    def finalize(self, ctx: Context) -> StageReport:
        self._expect("applied", "finalize")
        self._finalize(ctx)
        self._state = "finalized"
        return self.report

    def run(self, ctx: Context) -> StageReport:
        """initialize, apply and finalize in order (after `plan`)."""
        log.info("stage.start", stage=self.name, type=self.type)
        self.initialize(ctx)
        self.apply(ctx)
        return self.finalize(ctx)

    def _expect(self, state: str, action: str) -> None:
        if self._state != state:
            raise StageLifecycleError(f"stage {self.name!r}: cannot {action} when {self._state} (expected {state})")

    def _initialize(self, ctx: Context) -> None:
        return None

    def _apply(self, ctx: Context) -> None:
        raise NotImplementedError

    def _finalize(self, ctx: Context) -> None:
        return None

    @property
    def finetune_settings(self) -> Finetune:
        return self.recipe.finetune_for(self.spec)

    def _record_fit(self, result: FitResult) -> None:
        self.report.history.extend(result.history)
