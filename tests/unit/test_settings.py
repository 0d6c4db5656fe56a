"""Settings: defaults, the TOML file, environment variables over the file, unknown keys refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.settings import KafkaSettings, TopicSettings
from signals.settings import WorkerSettings


def test_defaults_run_out_of_the_box(monkeypatch):
    monkeypatch.delenv("FINSIGNAL_CONFIG", raising=False)
    assert TopicSettings().all()[:2] == ["news", "filings"]
    assert KafkaSettings().bootstrap is None  # embedded broker for `finsignal run`


def test_file_then_environment(monkeypatch, tmp_path):
    config = tmp_path / "finsignal.toml"
    config.write_text('[kafka]\nbootstrap = "file:9092"\npartitions = 6\n[worker]\nmax_batch = 8\n')
    monkeypatch.setenv("FINSIGNAL_CONFIG", str(config))
    monkeypatch.setenv("FINSIGNAL_KAFKA_BOOTSTRAP", "env:9092")
    kafka = KafkaSettings()
    assert kafka.bootstrap == "env:9092"
    assert kafka.partitions == 6
    assert WorkerSettings().max_batch == 8


def test_unknown_key_in_file_is_refused(monkeypatch, tmp_path):
    config = tmp_path / "finsignal.toml"
    config.write_text("[worker]\nmax_bath = 8\n")
    monkeypatch.setenv("FINSIGNAL_CONFIG", str(config))
    with pytest.raises(ValidationError, match="max_bath"):
        WorkerSettings()


def test_secret_is_not_printed(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_KAFKA_SASL_PASSWORD", "hunter2")
    assert "hunter2" not in repr(KafkaSettings())
