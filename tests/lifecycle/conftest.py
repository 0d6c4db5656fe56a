"""Models for lifecycle tests: a worse candidate (shuffled labels) and a near copy of the tiny model."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from compressor.train import TrainConfig, train
from finsignal.demo import sample_corpus


def near_copy(src: Path, dst: Path, scale: float = 0.01, seed: int = 1) -> Path:
    """A new artifact with the same behaviour: classifier weights scaled by 1 +- `scale` noise."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    weights["score.weight"] = weights["score.weight"] * (1 + scale * torch.randn(weights["score.weight"].shape,
                                                                                 generator=gen))
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="session")
def worse_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's shape trained one epoch on shuffled labels: about chance on the eval set."""
    train_path, eval_path = sample_corpus()
    root = tmp_path_factory.mktemp("worse")
    rows = [json.loads(line) for line in train_path.read_text().splitlines() if line.strip()]
    labels = [r["label"] for r in rows]
    random.Random(0).shuffle(labels)
    shuffled = root / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps({"text": r["text"], "label": lab}) + "\n" for r, lab in zip(rows, labels)))
    config = TrainConfig(hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=128,
                         vocab_size=1024, epochs=1, name="tiny-shuffled")
    train(shuffled, root / "model", eval_path, config, progress=False)
    return root / "model"


@pytest.fixture
def good_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return near_copy(tiny_model_dir, tmp_path / "good")


@pytest.fixture
def eval_path() -> Path:
    return sample_corpus()[1]


def texts_by_label() -> dict[str, list[str]]:
    """The shipped sample corpus's texts, by label."""
    out: dict[str, list[str]] = {}
    for path in sample_corpus():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(row["label"], []).append(row["text"])
    return out
