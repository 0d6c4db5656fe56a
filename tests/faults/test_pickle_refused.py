"""A checkpoint whose weights are a pickle is refused by every loader, and the pickle never runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from compressor.runtime.loader import ArtifactError, load_classifier
from signals.model import ModelLoadError, SentimentModel


class Payload:
    """Unpickling this writes a marker file: proof that the loader executed the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle executed"))


@pytest.fixture
def pickle_checkpoint(tiny_model_dir, tmp_path) -> tuple[Path, Path]:
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    (directory / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    return directory, marker


def test_worker_loader_refuses_a_pickle_checkpoint_without_running_it(pickle_checkpoint):
    directory, marker = pickle_checkpoint
    with pytest.raises(ModelLoadError, match="pickle checkpoints are refused"):
        SentimentModel.load(directory)
    assert not marker.exists()


def test_compressor_runtime_loader_refuses_a_pickle_checkpoint_without_running_it(pickle_checkpoint):
    directory, marker = pickle_checkpoint
    with pytest.raises(ArtifactError, match="needs model.safetensors"):
        load_classifier(directory)
    assert not marker.exists()
