"""Recipes: YAML in, every mistake refused with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressor.errors import RecipeError
from compressor.model_io import ModelShape
from compressor.recipe import Recipe, load_recipe, resolve_count

SHAPE = ModelShape(layers=4, attention_heads=8, kv_heads=2, head_dim=32, ffn=704, hidden=256, vocab=4096)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def plan(recipe: Recipe, shape: ModelShape = SHAPE) -> ModelShape:
    from compressor.stages import build_stage

    for spec, name in zip(recipe.stages, recipe.stage_names()):
        shape = build_stage(spec, recipe, name).plan(shape)
    return shape


def test_default_recipe_is_valid_and_plans_on_a_small_model() -> None:
    recipe = load_recipe(None)
    assert recipe.stage_names() == ["layer_drop", "prune", "quantize"]
    assert plan(recipe) == SHAPE.with_(layers=2, attention_heads=4, ffn=352)


def test_yaml_recipe_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, """
finetune: {epochs: 1, learning_rate: 1.0e-3}
distill: {temperature: 3.0, alpha: 0.5}
stages:
  - {type: layer_drop, target_layers: 2, mode: one_shot, criterion: angular}
  - {type: prune, attention_heads: 4, kv_heads: 1, ffn: 256, hidden: 0.5}
  - {type: sparsity_24, mask: magnitude}
  - {type: quantize, mode: ptq}
comparisons:
  - {name: svd, stages: [{type: lowrank, rank_fraction: 0.5}]}
baselines: [dense_fp32]
""")
    recipe = load_recipe(path)
    assert plan(recipe) == SHAPE.with_(layers=2, attention_heads=4, kv_heads=1, ffn=256, hidden=128)
    assert recipe.finetune_for(recipe.stages[3]).epochs == 0  # ptq does not fine-tune by default
    assert recipe.finetune_for(recipe.stages[0]).epochs == 1
    assert Recipe.model_validate(recipe.model_dump()) == recipe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("finetun: {epochs: 1}", "Extra inputs are not permitted"),
        ("stages: [{type: layer_drop, target_layers: 0}]", "at least 1 must remain"),
        ("stages: [{type: prune, ffn: 1.5}]", "fraction to keep must be in"),
        ("stages: [{type: prune}]", "at least one of"),
        ("stages: [{type: quantize}, {type: prune, ffn: 0.5}]", "cannot follow quantize"),
        ("stages: [{type: lowrank}, {type: quantize}]", "must be the last stage"),
        ("stages: [{type: magic}]", "does not match any of the expected tags"),
        ("stages: []", "at least one stage"),
        ("comparisons: [{name: x, start: nowhere, stages: [{type: lowrank}]}]", "unknown stage 'nowhere'"),
        ("stages: [{type: weight_sharing, finetune: {epochs: 1}}]", "does not fine-tune"),
        ("- just a list", "a mapping of settings"),
        ("stages: [{type: layer_drop", "not valid YAML"),
    ],
)
def test_bad_recipes_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("[{type: layer_drop, target_layers: 6}]", "has only 4 layers"),
        ("[{type: prune, attention_heads: 16}]", "has only 8 query heads"),
        ("[{type: prune, kv_heads: 4}]", "has only 2 key/value heads"),
        ("[{type: prune, attention_heads: 6, kv_heads: 4}]", "has only 2 key/value heads"),
        ("[{type: prune, attention_heads: 3}]", "set kv_heads"),
        ("[{type: prune, attention_heads: 2, kv_heads: 1, hidden: 99}]", "not a multiple of 2 attention heads"),
        ("[{type: prune, ffn: 1000}]", "only 704 channels"),
        ("[{type: prune, hidden: 512}]", "only 256 channels"),
        ("[{type: layer_drop, target_layers: 1}, {type: layer_drop, target_layers: 2}]", "has only 1 layers"),
        ("[{type: prune, attention_heads: 4, hidden: 100}, {type: sparsity_24}]", "divisible by 8"),
    ],
)
def test_recipes_asking_more_than_the_model_has_fail_in_planning(tmp_path: Path, stages: str, message: str) -> None:
    recipe = load_recipe(write(tmp_path, f"stages: {stages}"))
    with pytest.raises(RecipeError, match=message):
        plan(recipe)


def test_counts_resolve_absolute_or_as_share() -> None:
    assert resolve_count(3, 8) == 3
    assert resolve_count(0.5, 8) == 4
    assert resolve_count(0.01, 8) == 1


def test_builtin_pretrained_recipe_and_default_choice(tmp_path: Path) -> None:
    from compressor.model_io import CheckedModel, ModelShape
    from compressor.pipeline import default_recipe_name
    from compressor.recipe import load_recipe

    recipe = load_recipe("pretrained")
    assert [s.type for s in recipe.stages] == ["layer_drop", "quantize"]
    drop, quantize = recipe.stages
    assert (drop.criterion, drop.mode, resolve_count(drop.target_layers, 12)) == ("output_kl", "successive", 7)
    assert quantize.mode == "qat" and quantize.embeddings
    assert not recipe.compare_one_shot and load_recipe("pretrained-full").compare_one_shot
    assert recipe.comparisons == [] and "int8_ptq" in recipe.baselines
    assert [c.name for c in load_recipe("pretrained-full").comparisons] == [
        "dense+sparsity_24", "dense+lowrank", "dense+weight_sharing"]
    shape = ModelShape(layers=2, hidden=128, attention_heads=4, kv_heads=2, head_dim=32, ffn=352, vocab=300)

    def checked(meta: dict, hidden: int = 128) -> CheckedModel:
        return CheckedModel(directory=tmp_path, config={}, architecture="LlamaForSequenceClassification",
                            shape=shape.with_(hidden=hidden), meta=meta, content_hash="x", label_words=None)

    assert default_recipe_name(checked({"lineage": {"recipe": {"stage": "finetune"}}})) == "pretrained"
    assert default_recipe_name(checked({"lineage": {"recipe": {"stage": "train"}}})) == "small"
    assert default_recipe_name(checked({}, hidden=2048)) == "pretrained"
