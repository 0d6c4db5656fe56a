"""`finsignal compress run`: check everything, run the recipe, measure every row, write the outputs.

Order of work:

1. `prepare`: read the recipe, check the checkpoint (config only), read and check both corpora, and plan
   every stage on the model's shape. Any problem raises a `CompressError`/`DataError` here, before a
   single weight is loaded or any training starts.
2. `execute`: load the dense model (the teacher), cache its logits on the training set for distillation,
   then build the rows: the baselines (dense fp32, dense bf16, int8 PTQ alone, one-shot layer drop with
   no fine-tune), each stage of the main chain (cumulative), and each comparison branch. Every row's
   artifact is saved to disk and measured in a fresh process by `compressor.measure`.
3. Outputs: `model/` (final model as a plain checkpoint), `w8a8/` (compressed-tensors export, verified by
   loading it back), `stages/` (every row's artifact), `manifest.json`, `report.json`, `report.md` and
   the Pareto plots.
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from compressor.data import LABELS, Corpus, DataError, load_corpus
from compressor.errors import CompressError, RecipeError
from compressor.model_io import CheckedModel, ModelShape, check_checkpoint
from compressor.recipe import Comparison, Finetune, LayerDropSpec, QuantizeSpec, Recipe, load_recipe, resolve_count

log = structlog.get_logger(__name__)

MIN_TRAIN_EXAMPLES = 24
MIN_PER_CLASS = 2
MIN_EVAL_EXAMPLES = 10
REPORT_VERSION = 1


@dataclass
class ChainPlan:
    """A sequence of stage objects applied to a starting point, producing one report row per stage."""

    name: str
    start: str  # "dense" or a main-chain stage name
    stages: list[Any]
    role: str  # "stage", "comparison" or "baseline"
    rows: list[str] = field(default_factory=list)  # one row name per stage; only the last one for branches


@dataclass
class Plan:
    """Everything validated, nothing loaded yet."""

    recipe: Recipe
    checked: CheckedModel
    train: Corpus
    eval: Corpus
    out: Path
    main: ChainPlan
    branches: list[ChainPlan]
    shapes: dict[str, dict[str, int]]
    recipe_source: str | None


def _check_corpora(train_path: Path, eval_path: Path) -> tuple[Corpus, Corpus]:
    train = load_corpus(train_path)
    if len(train.examples) < MIN_TRAIN_EXAMPLES:
        raise DataError(f"{train.path}: {len(train.examples)} labeled examples; compression needs at least "
                        f"{MIN_TRAIN_EXAMPLES} to fine-tune and calibrate on")
    thin = {label: n for label, n in train.class_counts().items() if n < MIN_PER_CLASS}
    if thin:
        raise DataError(f"{train.path}: too few examples of {thin}; every class ({', '.join(LABELS)}) needs "
                        f"at least {MIN_PER_CLASS}")
    evaluation = load_corpus(eval_path, min_examples=1)
    if len(evaluation.examples) < MIN_EVAL_EXAMPLES:
        raise DataError(f"{evaluation.path}: {len(evaluation.examples)} labeled examples; the report needs at "
                        f"least {MIN_EVAL_EXAMPLES}")
    return train, evaluation


def _build(specs: list[Any], recipe: Recipe, names: list[str]) -> list[Any]:
    from compressor.stages import build_stage

    return [build_stage(spec, recipe, name) for spec, name in zip(specs, names)]


def _plan_chain(chain: ChainPlan, shape: ModelShape) -> ModelShape:
    for stage in chain.stages:
        try:
            shape = stage.plan(shape)
        except RecipeError:
            raise
        except ValueError as exc:
            raise RecipeError(f"{chain.name}: {exc}") from exc
    return shape


def _baseline_layer_target(recipe: Recipe, shape: ModelShape) -> LayerDropSpec | None:
    """The one-shot layer-drop baseline: the main chain's first layer drop target (default half)."""
    first = next((s for s in recipe.stages if s.type == "layer_drop"), None)
    target = resolve_count(first.target_layers if first else 0.5, shape.layers)
    if target >= shape.layers:
        return None
    return LayerDropSpec(target_layers=target, mode="one_shot", criterion=first.criterion if first else
                         "block_influence", finetune=Finetune(epochs=0))


def default_recipe_name(checked: CheckedModel) -> str:
    """`pretrained` for a model fine-tuned from a pretrained base (or LLaMA-sized), else `small`."""
    stage = ((checked.meta.get("lineage") or {}).get("recipe") or {}).get("stage")
    return "pretrained" if stage == "finetune" or checked.shape.hidden >= 512 else "small"


def prepare(
    model_dir: str | Path,
    train_path: str | Path,
    eval_path: str | Path,
    out: str | Path,
    recipe: str | Path | Recipe | None = None,
    *,
    label_words: list[str] | None = None,
    overwrite: bool = False,
) -> Plan:
    """Validate every input and plan every stage; raise before anything heavy happens."""
    recipe_source = str(recipe) if isinstance(recipe, (str, Path)) else None
    checked = check_checkpoint(model_dir, label_words)
    if recipe is None:
        recipe_source = default_recipe_name(checked)
        log.info("compress.recipe", recipe=recipe_source, reason="built-in default for this model")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe_source)
    train, evaluation = _check_corpora(Path(train_path), Path(eval_path))
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CompressError(f"{out}: exists and is not empty; choose a new --out or pass --overwrite")
    if out.resolve() == checked.directory.resolve():
        raise CompressError(f"{out}: the output directory cannot be the input model's directory")
    if recipe.calibration.examples > len(train.examples):
        recipe = recipe.model_copy(update={"calibration": recipe.calibration.model_copy(
            update={"examples": len(train.examples)})})

    names = recipe.stage_names()
    main = ChainPlan("main", "dense", _build(list(recipe.stages), recipe, names), "stage", rows=names)
    shapes = {"dense": checked.shape.as_dict()}
    shape = checked.shape
    for stage in main.stages:
        shape = _plan_chain(ChainPlan(stage.name, "", [stage], "stage"), shape)
        shapes[stage.name] = shape.as_dict()

    branches: list[ChainPlan] = []
    if "int8_ptq" in recipe.baselines:
        branches.append(ChainPlan("int8_ptq", "dense", _build([QuantizeSpec(mode="ptq")], recipe, ["int8_ptq"]),
                                  "baseline", rows=["int8_ptq"]))
    one_shot = _baseline_layer_target(recipe, checked.shape)
    if "layer_drop_one_shot" in recipe.baselines and one_shot is not None:
        branches.append(ChainPlan("layer_drop_one_shot", "dense",
                                  _build([one_shot], recipe, ["layer_drop_one_shot"]), "baseline",
                                  rows=["layer_drop_one_shot"]))
    first_drop = next((s for s in recipe.stages if s.type == "layer_drop"), None)
    if recipe.compare_one_shot and first_drop is not None and first_drop.mode == "successive" and one_shot is not None:
        # like-for-like: same target, same criterion; its fine-tune budget is set after the successive
        # stage ran (see `_match_successive_budget`)
        spec = one_shot.model_copy(update={"finetune": None, "name": "layer_drop_one_shot_ft"})
        branches.append(ChainPlan("layer_drop_one_shot_ft", "dense",
                                  _build([spec], recipe, ["layer_drop_one_shot_ft"]), "comparison",
                                  rows=["layer_drop_one_shot_ft"]))
    for comp in recipe.comparisons:
        branch_names = [f"{comp.name}/{s.name or s.type}" for s in comp.stages]
        branches.append(ChainPlan(comp.name, comp.start, _build(list(comp.stages), recipe, branch_names),
                                  "comparison", rows=[comp.name]))
    for branch in branches:
        start = checked.shape if branch.start == "dense" else ModelShape(**shapes[branch.start])
        shapes[branch.name] = _plan_chain(branch, start).as_dict()
    return Plan(recipe, checked, train, evaluation, out, main, branches, shapes, recipe_source)


# ---- execution ----------------------------------------------------------------------------------------


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def _logits(model: Any, ids: list[list[int]], pad_id: int, batch_size: int = 64) -> Any:
    """The model's logits for pre-tokenized texts, batched by length, in input order."""
    import numpy as np
    import torch

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            longest = max(len(ids[i]) for i in idx)
            batch = torch.full((len(idx), longest), pad_id, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for row, i in enumerate(idx):
                batch[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            out[idx] = model(input_ids=batch, attention_mask=mask, use_cache=False).logits.float().numpy()
    return out


def _max_length(checked: CheckedModel, tokenizer: Any, config: Any) -> int:
    declared = checked.meta.get("max_length") or tokenizer.model_max_length
    return int(min(declared, getattr(config, "max_position_embeddings", 512), 4096))


class _Runner:
    """Holds the shared state of one `compress run` while rows are produced and measured."""

    def __init__(self, plan: Plan, progress: bool) -> None:
        self.plan = plan
        self.progress = progress
        self.out = plan.out
        self.rows: list[dict[str, Any]] = []
        self.stage_reports: dict[str, dict[str, Any]] = {}
        self.work = self.out / "measurements"
        self.texts_path = self.work / "eval_texts.json"
        self.reference_probs: Any = None
        self.to_discard: list[Path] = []
        self.row_paths: list[Path] = []  # absolute artifact directory of each row, in row order
        from tqdm.auto import tqdm

        total = 1 + ("dense_bf16" in plan.recipe.baselines) + len(plan.main.stages) + len(plan.branches)
        self.bar = tqdm(total=total, desc="compress", unit="row", disable=not progress)

    # ---- setup ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        import random

        import torch

        from compressor.loop import TrainSet
        from compressor.model_io import load_model, load_tokenizer
        from compressor.stages.calibration import calibration_batches

        plan, recipe = self.plan, self.plan.recipe
        torch.manual_seed(recipe.seed)
        self.tokenizer = load_tokenizer(plan.checked)
        self.teacher = load_model(plan.checked, self.tokenizer)
        self.max_length = _max_length(plan.checked, self.tokenizer, self.teacher.config)
        ids = _encode(self.tokenizer, plan.train.texts, self.max_length)
        teacher_logits = _logits(self.teacher, ids, self.tokenizer.pad_token_id) if recipe.distill.enabled else None
        self.train_set = TrainSet(
            input_ids=ids, labels=plan.train.labels, pad_id=self.tokenizer.pad_token_id,
            unk_id=self.tokenizer.unk_token_id, special_ids=frozenset(self.tokenizer.all_special_ids),
            teacher_logits=teacher_logits,
        )
        rng = random.Random(recipe.seed)
        calib_texts = rng.sample(plan.train.texts, recipe.calibration.examples)
        self.calibration = calibration_batches(self.tokenizer, calib_texts, recipe.calibration.batch_size,
                                               self.max_length)
        eval_examples = plan.eval.examples[: recipe.evaluation.max_examples]
        self.eval_texts = [e.text for e in eval_examples]
        self.eval_labels = [e.label for e in eval_examples]
        self.work.mkdir(parents=True, exist_ok=True)
        self.texts_path.write_text(json.dumps(self.eval_texts))

    def context(self, model: Any) -> Any:
        from compressor.stages import Context

        return Context(model=model, tokenizer=self.tokenizer, recipe=self.plan.recipe, train=self.train_set,
                       calibration=self.calibration, progress=self.progress)

    # ---- artifacts --------------------------------------------------------------------------------------
    def lineage(self, chain: list[str]) -> dict[str, Any]:
        checked = self.plan.checked
        return {
            "base": {"path": str(checked.directory), "content_hash": checked.content_hash,
                     "name": checked.meta.get("name"), "version": checked.meta.get("version"),
                     "architecture": checked.architecture, "label_words": checked.label_words},
            "chain": chain,
            "recipe": self.plan.recipe.model_dump(mode="json"),
            "recipe_source": self.plan.recipe_source,
            "train_sha256": self.plan.train.sha256,
            "eval_sha256": self.plan.eval.sha256,
        }

    def save(self, ctx: Any, directory: Path, name: str, chain: list[str]) -> tuple[str, str]:
        """Write the row's artifact in the form that runs it; return (runtime kind, dtype)."""
        from compressor import artifacts
        from compressor.stages.lowrank.base import LOWRANK
        from compressor.stages.quantization.base import INT8
        from compressor.stages.sparsity.base import MASKS
        from compressor.stages.weight_sharing.base import KMEANS

        common = {"name": f"{self.base_name}-{name}".replace("/", "-"), "lineage": self.lineage(chain),
                  "max_length": self.max_length}
        props = ctx.properties
        int8 = props.get(INT8)
        if LOWRANK in props:
            artifacts.save_lowrank(ctx.model, self.tokenizer, directory, **common)
            return "lowrank", "float32"
        if KMEANS in props:
            artifacts.save_kmeans(ctx.model, props[KMEANS], self.tokenizer, directory, **common)
            return "kmeans", "float32"
        if MASKS in props:
            artifacts.save_sparse24(ctx.model, props[MASKS], self.tokenizer, directory,
                                    int8_embeddings=bool(int8 and int8["embeddings"]), **common)
            return "sparse24", "float32"
        if int8:
            artifacts.save_w8a8(ctx.model, self.tokenizer, directory, int8_embeddings=int8["embeddings"], **common)
            return "w8a8", "float32"
        artifacts.save_hf(ctx.model, self.tokenizer, directory, **common)
        return "hf", "float32"

    @property
    def base_name(self) -> str:
        return str(self.plan.checked.meta.get("name") or self.plan.checked.directory.name)

    # ---- measurement ------------------------------------------------------------------------------------
    def measure(self, row: dict[str, Any], artifact: Path, dtype: str = "float32") -> dict[str, Any]:
        import numpy as np

        from compressor.measure import measure_artifact, measure_in_process
        from compressor.metrics import trading_metrics

        ev = self.plan.recipe.evaluation
        safe = row["name"].replace("/", "-")
        # with side-by-side timing to follow, this pass only needs predictions and memory: time it briefly
        result = (measure_artifact if ev.isolated else measure_in_process)(
            artifact, self.texts_path, self.work / f"{safe}.json", threads=ev.threads, batch_size=ev.batch_size,
            rounds=1 if ev.side_by_side else ev.throughput_rounds,
            latency_samples=min(ev.latency_samples, 20) if ev.side_by_side else ev.latency_samples, dtype=dtype,
            timing_docs=ev.timing_documents,
        )
        probs = np.load(result["probs_path"])
        if self.reference_probs is None:
            self.reference_probs = probs
        row.update(trading_metrics(probs, self.reference_probs, self.eval_labels))
        row.update({k: result[k] for k in ("size_on_disk_bytes", "model_bytes", "peak_memory_bytes",
                                           "docs_per_second", "p50_latency_ms", "p95_latency_ms", "threads",
                                           "dtype", "compute_dtype", "load_seconds")})
        if result["compute_dtype"] != result["dtype"]:
            row.setdefault("notes", []).append(f"{result['dtype']} weights computed in {result['compute_dtype']}: "
                                               "this CPU has no native bf16")
        row["runtime"] = result["kind"]
        artifact = artifact.resolve()
        out = self.out.resolve()
        row["artifact"] = str(artifact.relative_to(out)) if artifact.is_relative_to(out) else str(artifact)
        self.row_paths.append(artifact)
        log.info("row.measured", row=row["name"], accuracy=round(row["accuracy"], 4),
                 docs_per_second=round(row["docs_per_second"], 1), size=row["size_on_disk_bytes"])
        self.rows.append(row)
        self.bar.update(1)
        self.bar.set_postfix(row=row["name"], accuracy=f"{row['accuracy']:.3f}")
        return row

    def _row(self, name: str, role: str, chain: list[str], shape: dict[str, int] | None, **extra: Any) -> dict:
        from compressor.model_io import ModelShape

        params = ModelShape(**shape).parameters() if shape else None
        return {"name": name, "role": role, "chain": chain, "shape": shape, "parameters": params, **extra}

    def _discard(self, directory: Path) -> None:
        """Remove an intermediate artifact once it is no longer needed (after the side-by-side timing)."""
        if not self.plan.recipe.keep_stage_checkpoints:
            self.to_discard.append(directory)

    def side_by_side(self) -> None:
        """Re-time every row in one process, alternating between artifacts, so that load from other work
        on a shared machine falls on all rows alike; these timings replace the per-process ones."""
        from compressor.measure import compare_artifacts

        ev = self.plan.recipe.evaluation
        result = compare_artifacts(self.row_paths, self.texts_path, self.work / "side_by_side.json",
                                   dtypes=[r["dtype"] for r in self.rows], threads=ev.threads,
                                   batch_size=ev.batch_size, rounds=ev.throughput_rounds,
                                   latency_samples=ev.latency_samples, timing_docs=ev.timing_documents)
        for row, timed in zip(self.rows, result["results"]):
            row["isolated_timing"] = {k: row[k] for k in ("docs_per_second", "p50_latency_ms", "p95_latency_ms")}
            row.update(docs_per_second=timed["docs_per_second"], p50_latency_ms=timed["p50_latency_ms"],
                       p95_latency_ms=timed["p95_latency_ms"], timing="side by side")

    def cleanup(self) -> None:
        for directory in self.to_discard:
            shutil.rmtree(directory, ignore_errors=True)

    # ---- rows -------------------------------------------------------------------------------------------
    def dense_rows(self) -> None:
        from compressor import artifacts
        from compressor.model_io import CLASSIFIER

        shape = self.plan.shapes["dense"]
        checked = self.plan.checked
        if checked.architecture == CLASSIFIER:
            dense_dir = checked.directory
        else:  # a causal LM: measure the classifier built from it
            dense_dir = self.out / "stages" / "00-dense_fp32"
            artifacts.save_hf(self.teacher, self.tokenizer, dense_dir, name=f"{self.base_name}-dense",
                              lineage=self.lineage([]), max_length=self.max_length)
        self.measure(self._row("dense_fp32", "baseline", [], shape, notes=["the input model, float32"]), dense_dir)
        if "dense_bf16" in self.plan.recipe.baselines:
            bf16_dir = self.out / "stages" / "00-dense_bf16"
            artifacts.save_hf(self.teacher, self.tokenizer, bf16_dir, name=f"{self.base_name}-bf16",
                              lineage=self.lineage(["dense_bf16"]), max_length=self.max_length, dtype="bfloat16")
            self.measure(self._row("dense_bf16", "baseline", ["dense_bf16"], shape,
                                   notes=["weights and compute in bfloat16"]), bf16_dir, dtype="bfloat16")
            self._discard(bf16_dir)

    def run_chain(self, chain: ChainPlan, ctx: Any, index: int, snapshots: dict[str, Any] | None = None) -> Any:
        """Run a chain's stages in order; measure after every stage (main) or after the last (branches)."""
        done: list[str] = [] if chain.start == "dense" else self._chain_to(chain.start)
        for k, stage in enumerate(chain.stages):
            started = time.perf_counter()
            report = stage.run(ctx)
            seconds = time.perf_counter() - started
            done.append(stage.name)
            self.stage_reports[stage.name] = {"type": stage.type, "spec": stage.spec.model_dump(mode="json"),
                                              "seconds": round(seconds, 2), "details": report.details,
                                              "history": report.history, "notes": report.notes}
            last = k == len(chain.stages) - 1
            if chain.role == "stage" or last:
                row_name = chain.rows[k] if chain.role == "stage" else chain.rows[0]
                directory = self.out / "stages" / f"{index:02d}-{row_name.replace('/', '-')}"
                kind, dtype = self.save(ctx, directory, row_name, list(done))
                notes = list(report.notes)
                if kind == "sparse24":
                    notes.append("2:4 storage only on CPU (no 2:4 kernels): runs dense; GPU 2:4 timing not measured")
                row = self._row(row_name, chain.role, list(done), self.plan.shapes.get(stage.name if chain.role ==
                                "stage" else chain.name), notes=notes, stage_seconds=round(seconds, 2),
                                finetune_epochs=sum(1 for h in report.history if "epoch" in h))
                self.measure(row, directory, dtype)
                if not (chain.role == "stage" and last):
                    self._discard(directory)
                index += 1
            if snapshots is not None and stage.name in snapshots:
                snapshots[stage.name] = (copy.deepcopy(ctx.model), copy.deepcopy(ctx.properties), list(ctx.hooks))
        return index

    def _chain_to(self, stage_name: str) -> list[str]:
        names = self.plan.main.rows
        return list(names[: names.index(stage_name) + 1])

    def _match_successive_budget(self, branch: ChainPlan) -> None:
        """Give the one-shot comparison exactly the fine-tune epochs the successive drop used."""
        first = next((s for s in self.plan.main.stages if s.type == "layer_drop"), None)
        epochs = self.stage_reports.get(first.name, {}).get("details", {}).get("epochs") if first else None
        if epochs is None:
            epochs = self.plan.recipe.finetune_for(first.spec).epochs if first else 0
        stage = branch.stages[0]
        stage.spec = stage.spec.model_copy(update={"finetune": self.plan.recipe.finetune_for(stage.spec)
                                                   .model_copy(update={"epochs": epochs})})


def execute(plan: Plan, progress: bool = True) -> dict[str, Any]:
    """Run a prepared plan end to end; return the report (also written to `plan.out`)."""
    from compressor import artifacts
    from compressor.report import write_report

    started = time.perf_counter()
    plan.out.mkdir(parents=True, exist_ok=True)
    for stale in ("stages", "model", "w8a8", "measurements"):
        shutil.rmtree(plan.out / stale, ignore_errors=True)
    runner = _Runner(plan, progress)
    runner.setup()
    log.info("compress.start", model=str(plan.checked.directory), stages=plan.main.rows,
             branches=[b.name for b in plan.branches], out=str(plan.out))
    runner.dense_rows()

    main_ctx = runner.context(copy.deepcopy(runner.teacher))
    starts = {b.start for b in plan.branches if b.start != "dense"}
    snapshots: dict[str, Any] = {name: None for name in starts}
    index = runner.run_chain(plan.main, main_ctx, 1, snapshots)

    for branch in plan.branches:
        if branch.name == "layer_drop_one_shot_ft":
            runner._match_successive_budget(branch)
        if branch.start == "dense":
            ctx = runner.context(copy.deepcopy(runner.teacher))
        else:
            model, properties, hooks = snapshots[branch.start]
            ctx = runner.context(copy.deepcopy(model))
            ctx.properties, ctx.hooks = copy.deepcopy(properties), list(hooks)
        index = runner.run_chain(branch, ctx, index)

    if plan.recipe.evaluation.side_by_side:
        log.info("compress.side_by_side", rows=len(runner.rows))
        runner.side_by_side()
    runner.cleanup()

    # final outputs: the main chain's model in its plain form, and the vLLM export when quantized
    from compressor.stages.quantization.base import INT8

    final_row = next(r for r in reversed(runner.rows) if r["role"] == "stage")
    lineage = runner.lineage(plan.main.rows)
    outputs: dict[str, Any] = {}
    meta = artifacts.save_hf(main_ctx.model, runner.tokenizer, plan.out / "model", name=f"{runner.base_name}-compressed",
                             lineage=lineage, max_length=runner.max_length)
    (plan.out / "model" / "report.json").write_text(json.dumps({"eval": {k: final_row[k] for k in (
        "accuracy", "macro_f1", "agreement", "signal_flips", "ece")}, "row": final_row["name"]}, indent=2) + "\n")
    outputs["model"] = {"path": "model", "version": meta["version"], "size_on_disk_bytes":
                        artifacts.weight_bytes(plan.out / "model"), "note": "plain LLaMA checkpoint, float32"}
    if INT8 in main_ctx.properties:
        int8 = main_ctx.properties[INT8]
        meta = artifacts.save_w8a8(main_ctx.model, runner.tokenizer, plan.out / "w8a8",
                                   name=f"{runner.base_name}-w8a8", lineage=lineage, max_length=runner.max_length,
                                   int8_embeddings=int8["embeddings"])
        outputs["w8a8"] = {"path": "w8a8", "version": meta["version"],
                           "size_on_disk_bytes": artifacts.weight_bytes(plan.out / "w8a8"),
                           "verification": artifacts.verify_w8a8(plan.out / "w8a8", main_ctx.model),
                           "note": "compressed-tensors int-quantized W8A8, for vLLM and the int8 CPU runtime"}

    runner.bar.close()
    report = {
        "version": REPORT_VERSION,
        "rows": runner.rows,
        "final_row": final_row["name"],
        "outputs": outputs,
        "eval": {"path": str(plan.eval.path), "sha256": plan.eval.sha256, "documents": len(runner.eval_texts)},
        "environment": _environment(plan),
        "notes": _notes(plan, runner),
        "seconds": round(time.perf_counter() - started, 1),
    }
    manifest = {
        "version": REPORT_VERSION,
        "lineage": {**lineage, "train_examples": len(plan.train.examples), "eval_examples": len(plan.eval.examples)},
        "shapes": plan.shapes,
        "stages": runner.stage_reports,
        "rows": runner.rows,
        "outputs": outputs,
        "environment": report["environment"],
    }
    (plan.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    write_report(plan.out, report)
    log.info("compress.done", out=str(plan.out), seconds=report["seconds"], final=final_row["name"])
    return report


def _environment(plan: Plan) -> dict[str, Any]:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "machine": platform.machine(), "processor": platform.processor() or None,
           "cpu_threads_timed": plan.recipe.evaluation.threads, "cuda": torch.cuda.is_available()}
    try:
        import compressed_tensors

        env["compressed_tensors"] = compressed_tensors.__version__
    except ImportError:
        env["compressed_tensors"] = None
    return env


def _int8_note() -> str:
    from compressor.runtime.int8 import INT8_KERNEL

    kernel = {
        "int_mm": "torch._int_mm (int32 accumulation; VNNI/AMX), per-token int8 activations",
        "fbgemm": "FBGEMM's AVX2 u8 x s8 kernels (this CPU has no VNNI/AMX), per-token activations on a 7-bit "
                  "grid, which QAT rows were trained on",
        "fp32": "an fp32 copy of the int8 grid (no int8 kernel for this CPU): memory counts the copy",
    }[INT8_KERNEL]
    return (f"Int8 rows run W8A8 on {kernel}; per-channel symmetric int8 weights. For layers a few hundred "
            "wide, quantizing activations and rescaling results costs part of what the int8 multiply saves; "
            "the per-layer kernel timings in benchmarks/compress.py show where it pays.")


def _notes(plan: Plan, runner: _Runner) -> list[str]:
    ev = plan.recipe.evaluation
    notes = [
        f"Timings: CPU, {ev.threads} thread(s), batches of {ev.batch_size} documents sorted by length, median of "
        f"{ev.throughput_rounds} passes; p50 latency over {min(ev.latency_samples, len(runner.eval_texts))} "
        "single documents. Tokenization excluded, padding included. "
        + ("Every artifact is loaded, scored and its memory measured in its own fresh process. "
           if ev.isolated else "Artifacts were measured in-process (evaluation.isolated: false): no peak-memory "
           "figures. ")
        + ("Documents/s and latency come from one process timing all rows in alternation (side by side), so "
           "background load on the machine falls on every row alike." if ev.side_by_side else
           "Documents/s and latency come from each row's own measurement, taken one after the other."),
        "Agreement: share of documents whose class (= trading direction) equals the dense fp32 model's. "
        "Signal flips: documents where one says bullish and the other bearish. ECE: 10-bin expected "
        "calibration error against the true labels.",
        "Size on disk: the artifact's safetensors files. Model memory: bytes of the loaded module's tensors. "
        "Peak memory: resident memory above the process's level before loading, while loading and scoring; "
        "for models of a few MB it is dominated by activations and allocator caches, not by the weights.",
        "2:4 sparsity: there are no 2:4 kernels on CPU, so it saves storage only (compact values + 2-bit "
        "positions); it runs as dense. No GPU was available to this run: PyTorch's semi-structured 2:4 "
        "kernels were not timed." if not runner_has_cuda() else
        "2:4 sparsity: CPU rows run dense; see the GPU measurement in the manifest.",
        _int8_note(),
        "Backtest metrics need a recording with prices; none was supplied to this run.",
    ]
    return notes


def runner_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def compress_run(
    model_dir: str | Path,
    train_path: str | Path,
    eval_path: str | Path,
    out: str | Path,
    recipe: str | Path | Recipe | None = None,
    *,
    label_words: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate, then compress `model_dir` with `recipe`, writing everything under `out`."""
    plan = prepare(model_dir, train_path, eval_path, out, recipe, label_words=label_words, overwrite=overwrite)
    return execute(plan, progress=progress)


__all__ = ["Comparison", "Plan", "compress_run", "execute", "prepare"]
