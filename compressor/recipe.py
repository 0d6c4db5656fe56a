"""Compression recipes: which stages run, in which order, with which recovery fine-tune.

A recipe is a YAML (or JSON) document validated by `Recipe`; unknown keys are errors, so a typo never
silently falls back to a default. `Recipe()` with no arguments is the default recipe `compress run` uses
when none is given. Example::

    finetune: {epochs: 2, learning_rate: 5.0e-4}
    distill: {temperature: 2.0, alpha: 0.7}
    stages:
      - {type: layer_drop, target_layers: 2, mode: successive, criterion: block_influence}
      - {type: prune, attention_heads: 4, kv_heads: 2, ffn: 0.5}
      - {type: quantize, mode: qat, finetune: {epochs: 1, learning_rate: 1.0e-4}}
    comparisons:
      - {name: sparse-2of4, start: dense, stages: [{type: sparsity_24, mask: wanda}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compressor.errors import RecipeError

Count = Union[int, float]
"""An absolute count (int >= 1), or a float in (0, 1]: the share of the current count to keep."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_count(value: Count | None, what: str) -> Count | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a count or a fraction, not a boolean")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{what} = {value}: at least 1 must remain")
    elif not 0 < value <= 1:
        raise ValueError(f"{what} = {value}: a fraction to keep must be in (0, 1]")
    return value


def resolve_count(value: Count, current: int) -> int:
    """`value` as an absolute count given the model's `current` count."""
    if isinstance(value, int):
        return value
    return max(1, round(current * value))


class Finetune(_Spec):
    """A recovery fine-tune; every field has a default that works on small classifiers."""

    epochs: int = Field(default=2, ge=0, description="passes over the training data (0: no fine-tune)")
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.06, ge=0, lt=1)
    token_dropout: float = Field(default=0.0, ge=0, lt=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    length_buckets: bool = True


class Distill(_Spec):
    """Knowledge distillation from the dense input model during every recovery fine-tune."""

    enabled: bool = True
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1, description="weight of the soft-target loss")


class Calibration(_Spec):
    """Training examples used to measure importance (layers, heads, channels) and Wanda norms."""

    examples: int = Field(default=512, ge=8)
    batch_size: int = Field(default=64, ge=1)


class Evaluation(_Spec):
    """How every row of the report is measured (CPU, in a fresh process per artifact)."""

    threads: int = Field(default=1, ge=1, description="torch intra-op threads while timing")
    batch_size: int = Field(default=32, ge=1, description="documents per batch, sorted by length")
    throughput_rounds: int = Field(default=3, ge=1, description="timed passes over the eval set; median")
    latency_samples: int = Field(default=200, ge=1, description="single documents timed for p50 latency")
    max_examples: int | None = Field(default=None, ge=1, description="cap on eval documents (None: all)")
    timing_documents: int | None = Field(default=None, ge=1, description="documents per timed pass, batches "
                                         "spread over all lengths (None: all); predictions always cover all")
    isolated: bool = Field(default=True, description="measure each artifact in a fresh process (memory is "
                           "then its own); false measures in-process, faster, without peak memory")
    side_by_side: bool = Field(default=True, description="re-time all rows in one process, alternating, "
                               "so machine load hits every row alike (needs every row in memory at once)")


class _StageSpec(_Spec):
    name: str | None = Field(default=None, description="row name in the report; default: the type")
    finetune: Finetune | None = Field(default=None, description="overrides the recipe's fine-tune")

    def default_epochs(self) -> int | None:
        """Epochs when the recipe does not say; None means the recipe's `finetune.epochs`."""
        return None


class LayerDropSpec(_StageSpec):
    """Remove whole decoder layers, least important first, measured on the domain data."""

    type: Literal["layer_drop"] = "layer_drop"
    target_layers: Count = Field(default=0.5, description="layers to keep: count or fraction")
    mode: Literal["successive", "one_shot"] = Field(
        default="successive",
        description="successive: drop after each fine-tune epoch, re-measuring; one_shot: drop all, then fine-tune",
    )
    criterion: Literal["block_influence", "angular", "output_kl"] = Field(
        default="block_influence",
        description="block_influence: 1 - cos(in, out) of a layer (ShortGPT); "
        "angular: arccos(cos(in, out)) / pi (Gromov et al.); "
        "output_kl: KL divergence of the classifier's labels with the layer bypassed (a label-free skip loss)",
    )
    layers_per_drop: int = Field(default=1, ge=1)
    keep_last_layer: bool = Field(default=True, description="never drop the last layer, whose output the "
                                  "score head reads (Gromov et al. find it essential whatever it scores)")
    final_epochs: int = Field(default=1, ge=0, description="successive: epochs after the last drop")

    @field_validator("target_layers")
    @classmethod
    def _target(cls, v: Count) -> Count:
        return _check_count(v, "target_layers")  # type: ignore[return-value]


class PruneSpec(_StageSpec):
    """Width pruning: the same number of heads and channels in every layer (still a LlamaConfig)."""

    type: Literal["prune"] = "prune"
    attention_heads: Count | None = Field(default=None, description="query heads to keep per layer")
    kv_heads: Count | None = Field(default=None, description="key/value heads to keep; default: all groups")
    ffn: Count | None = Field(default=None, description="MLP intermediate channels to keep")
    hidden: Count | None = Field(default=None, description="residual-stream channels to keep (Minitron)")

    @field_validator("attention_heads", "kv_heads", "ffn", "hidden")
    @classmethod
    def _counts(cls, v: Count | None, info: Any) -> Count | None:
        return _check_count(v, info.field_name)

    @model_validator(mode="after")
    def _something(self) -> PruneSpec:
        if all(v is None for v in (self.attention_heads, self.kv_heads, self.ffn, self.hidden)):
            raise ValueError("prune needs at least one of attention_heads, kv_heads, ffn, hidden")
        return self


class Sparsity24Spec(_StageSpec):
    """2:4 semi-structured sparsity in every decoder linear layer; the mask stays fixed while fine-tuning."""

    type: Literal["sparsity_24"] = "sparsity_24"
    mask: Literal["wanda", "magnitude"] = "wanda"


class QuantizeSpec(_StageSpec):
    """Int8 W8A8: per-channel symmetric weights, dynamic per-token symmetric activations."""

    type: Literal["quantize"] = "quantize"
    mode: Literal["qat", "ptq"] = "qat"
    embeddings: bool = Field(default=True, description="int8 token-embedding rows in the CPU runtime too")

    def default_epochs(self) -> int | None:
        return 0 if self.mode == "ptq" else None


class LowRankSpec(_StageSpec):
    """Truncated SVD of every decoder linear layer (a comparison row: factors are not a LlamaConfig)."""

    type: Literal["lowrank"] = "lowrank"
    rank_fraction: float = Field(default=0.25, gt=0, lt=1, description="rank kept, as a share of min(in, out)")

    def default_epochs(self) -> int | None:
        return 0


class WeightSharingSpec(_StageSpec):
    """k-means weight sharing per decoder linear layer (a comparison row: codebook + indices on disk)."""

    type: Literal["weight_sharing"] = "weight_sharing"
    clusters: int = Field(default=16, ge=2, le=256)
    iterations: int = Field(default=25, ge=1)

    def default_epochs(self) -> int | None:
        return 0

    @model_validator(mode="after")
    def _no_finetune(self) -> WeightSharingSpec:
        if self.finetune is not None and self.finetune.epochs:
            raise ValueError("weight_sharing does not fine-tune (shared weights would drift apart); set epochs: 0")
        return self


StageSpec = Annotated[
    Union[LayerDropSpec, PruneSpec, Sparsity24Spec, QuantizeSpec, LowRankSpec, WeightSharingSpec],
    Field(discriminator="type"),
]

STRUCTURAL = ("layer_drop", "prune")
BASELINES = ("dense_fp32", "dense_bf16", "int8_ptq", "layer_drop_one_shot")


def check_order(stages: list[Any], where: str) -> None:
    """Stages that change the structure come first, then 2:4 or a factorization, then int8 last."""
    rank = {"layer_drop": 0, "prune": 0, "sparsity_24": 1, "lowrank": 1, "weight_sharing": 1, "quantize": 2}
    for before, after in zip(stages, stages[1:]):
        if rank[after.type] < rank[before.type]:
            raise ValueError(
                f"{where}: {after.type} cannot follow {before.type}; order is layer_drop/prune, then "
                "sparsity_24/lowrank/weight_sharing, then quantize"
            )
    for s in stages[:-1]:
        if s.type in ("lowrank", "weight_sharing"):
            raise ValueError(f"{where}: {s.type} is a comparison and must be the last stage of its chain")
    once = [s.type for s in stages if s.type in ("sparsity_24", "lowrank", "weight_sharing", "quantize")]
    if len(once) != len(set(once)):
        raise ValueError(f"{where}: sparsity_24, lowrank, weight_sharing and quantize may each appear once")
    if sum(s.type in ("sparsity_24", "lowrank", "weight_sharing") for s in stages) > 1:
        raise ValueError(f"{where}: combine at most one of sparsity_24, lowrank, weight_sharing")


class Comparison(_Spec):
    """A branch measured as its own row: `stages` applied to the dense model or to a stage's output."""

    name: str
    start: str = Field(default="dense", description="'dense' or the name of a main-chain stage")
    stages: list[StageSpec] = Field(min_length=1)


def _default_stages() -> list[Any]:
    return [
        LayerDropSpec(),
        PruneSpec(attention_heads=0.5, ffn=0.5),
        QuantizeSpec(mode="qat", finetune=Finetune(epochs=1, learning_rate=2e-4)),
    ]


def _default_comparisons() -> list[Comparison]:
    return [
        Comparison(name="dense+sparsity_24", stages=[Sparsity24Spec(finetune=Finetune(epochs=1))]),
        Comparison(name="dense+lowrank", stages=[LowRankSpec()]),
        Comparison(name="dense+weight_sharing", stages=[WeightSharingSpec()]),
    ]


class Recipe(_Spec):
    """A whole compression run; `Recipe()` is the default used when no recipe file is given."""

    version: Literal[1] = 1
    name: str = "default"
    seed: int = 0
    finetune: Finetune = Finetune()
    distill: Distill = Distill()
    calibration: Calibration = Calibration()
    evaluation: Evaluation = Evaluation()
    stages: list[StageSpec] = Field(default_factory=_default_stages)
    comparisons: list[Comparison] = Field(default_factory=_default_comparisons)
    baselines: list[Literal["dense_fp32", "dense_bf16", "int8_ptq", "layer_drop_one_shot"]] = Field(
        default_factory=lambda: list(BASELINES)
    )
    keep_stage_checkpoints: bool = Field(default=True, description="keep every row's artifact under stages/")
    compare_one_shot: bool = Field(default=True, description="when the main chain drops layers successively, "
                                   "add a one-shot drop with the same fine-tune budget as a comparison row")

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if not self.stages:
            raise ValueError("a recipe needs at least one stage")
        check_order(list(self.stages), "stages")
        names = self.stage_names()
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        seen = set(names) | set(BASELINES)
        for comp in self.comparisons:
            check_order(list(comp.stages), f"comparison {comp.name!r}")
            if comp.start != "dense" and comp.start not in names:
                raise ValueError(f"comparison {comp.name!r} starts from unknown stage {comp.start!r}")
            if comp.start != "dense" and any(s.type == "quantize" for s in self.stages[: names.index(comp.start) + 1]):
                raise ValueError(f"comparison {comp.name!r} cannot start after quantization")
            if comp.name in seen:
                raise ValueError(f"row name {comp.name!r} is used twice")
            seen.add(comp.name)
        return self

    def stage_names(self) -> list[str]:
        """Row names of the main chain: the given name, else the type (numbered if repeated)."""
        names: list[str] = []
        for spec in self.stages:
            base = spec.name or spec.type
            name, k = base, 2
            while name in names:
                name, k = f"{base}-{k}", k + 1
            names.append(name)
        return names

    def finetune_for(self, spec: Any) -> Finetune:
        """The fine-tune a stage runs: its own override, else the recipe's, with the stage's default epochs."""
        if spec.finetune is not None:
            return spec.finetune
        default = spec.default_epochs()
        return self.finetune if default is None else self.finetune.model_copy(update={"epochs": default})


def pretrained_recipe(full: bool = False) -> Recipe:
    """The default for a fine-tuned pretrained LLaMA: 60% of its layers, then int8 W8A8 with QAT.

    Fine-tuning already cut depth by successive dropping and trimmed the vocabulary, keeping the depth that
    holds accuracy. Here the model is made faster on a CPU, distilling from the fine-tuned model at every
    step: successive drops of two layers at a time (by the label-free output KL, measured before each drop,
    one epoch of recovery between drops) to 60% of the depth, then int8 weights and embedding rows,
    per-token int8 activations and one epoch of QAT at a pretrained model's learning rate. Measured on
    12-layer SmolLM2 classifiers (twitter test set): from a dense 0.8137, 8 layers int8 scored 0.8154 at
    1.01x a MiniLM encoder's batch-1 latency side by side and 7 layers int8 (the default) 0.8043 at 0.86x
    (benchmarks/results/pretrained.md); from
    a dense 0.8031, 6 layers lost 3.7 points (0.7661) and 8 layers with the MLP halved 1.4 (0.7890).
    `full` adds the 2:4, low-rank and k-means comparison rows (each another fine-tune or measurement: hours
    on 2 CPU cores for a 135M model, so they are off by default) and the one-shot layer-drop comparison.
    """
    comparisons = _default_comparisons() if full else []
    if full:
        comparisons[0] = Comparison(name="dense+sparsity_24", stages=[Sparsity24Spec(
            finetune=Finetune(epochs=1, batch_size=16, learning_rate=2e-5))])
    recover = Finetune(epochs=1, batch_size=16, learning_rate=1e-4, warmup_fraction=0.06)
    return Recipe(
        name="pretrained-full" if full else "pretrained",
        finetune=Finetune(epochs=1, batch_size=16, learning_rate=2e-5, warmup_fraction=0.06),
        distill=Distill(temperature=2.0, alpha=0.5),
        calibration=Calibration(examples=256, batch_size=32),
        evaluation=Evaluation(throughput_rounds=1, latency_samples=100, timing_documents=640),
        stages=[
            LayerDropSpec(target_layers=0.6, mode="successive", criterion="output_kl", layers_per_drop=2,
                          final_epochs=1, finetune=recover),
            QuantizeSpec(mode="qat", embeddings=True),
        ],
        comparisons=comparisons,
        baselines=["dense_fp32", "dense_bf16", "int8_ptq"],
        compare_one_shot=full,  # another two epochs and a row: ~13 minutes on 2 cores for SmolLM2
    )


BUILTIN_RECIPES = {"small": Recipe, "pretrained": pretrained_recipe,
                   "pretrained-full": lambda: pretrained_recipe(full=True)}


def load_recipe(path: str | Path | None) -> Recipe:
    """Read a YAML/JSON recipe, or a built-in one by name (small, pretrained, pretrained-full); `None` gives
    the small-model default. Raises `RecipeError` with every problem."""
    import yaml

    if path is None:
        return Recipe()
    if isinstance(path, str) and path in BUILTIN_RECIPES and not Path(path).exists():
        return BUILTIN_RECIPES[path]()
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of settings, got {type(raw).__name__}")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'recipe'}: {err['msg']}" for err in exc.errors()
        )
        raise RecipeError(f"{path}: {problems}") from None
