"""The demo model: trained on the shipped sample corpus on first use, then cached."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def sample_corpus() -> tuple[Path, Path]:
    """Paths of the shipped sample train and eval corpora (template-generated; see `sample_card`)."""
    root = Path(str(files("compressor") / "data"))
    return root / "sample_train.jsonl", root / "sample_eval.jsonl"


def sample_card() -> dict:
    """What the sample corpus is: template-generated headlines, not real news (`compressor/make_sample.py`)."""
    return json.loads((Path(str(files("compressor") / "data")) / "sample_corpus.json").read_text())


def training_data(model_dir: Path) -> dict | None:
    """The data card a model was trained with (`finsignal.json` lineage), if it recorded one."""
    meta_path = Path(model_dir) / "finsignal.json"
    try:
        return json.loads(meta_path.read_text()).get("lineage", {}).get("data")
    except (OSError, ValueError):
        return None


def eval_accuracy(model_dir: Path) -> float | None:
    """The eval accuracy in the model's `report.json`, if any."""
    try:
        return json.loads((Path(model_dir) / "report.json").read_text()).get("eval", {}).get("accuracy")
    except (OSError, ValueError):
        return None


def cache_dir() -> Path:
    """`FINSIGNAL_CACHE_DIR`, else `~/.cache/finsignal`."""
    return Path(os.environ.get("FINSIGNAL_CACHE_DIR") or Path.home() / ".cache" / "finsignal")


def demo_model_dir(progress: bool = True) -> Path:
    """Directory of the demo model, training it if this corpus and recipe have not been built yet."""
    from compressor.train import TrainConfig, train

    train_path, eval_path = sample_corpus()
    config = TrainConfig(name="finsignal-demo", max_length=512)  # room for article-length chunks
    card = sample_card()
    key = hashlib.sha256(train_path.read_bytes() + eval_path.read_bytes() + json.dumps(card, sort_keys=True).encode()
                         + json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()
    target = cache_dir() / "models" / f"demo-{key[:12]}"
    if (target / "finsignal.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("demo_model.build", out=str(target))
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        train(train_path, staging, eval_path, config, progress=progress, data_card=card)
        try:
            staging.rename(target)  # atomic: a concurrent builder either wins or finds ours
        except OSError:
            if not (target / "finsignal.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
