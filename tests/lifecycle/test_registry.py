"""The registry: content-hash versions, manifests, atomic pointers, rollback history, nothing referenced deleted."""

from __future__ import annotations

import json
import os

import pytest

from signals.model import SentimentModel
from signals.registry import ModelRegistry, RegistryError, artifact_hash


def test_register_copies_under_the_content_hash_and_is_idempotent(tiny_model_dir, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    entry, new = reg.register(tiny_model_dir)
    again, new_again = reg.register(tiny_model_dir)
    assert new and not new_again and again.version == entry.version
    assert entry.version == artifact_hash(entry.path)[:12] == entry.manifest["artifact_sha256"][:12]
    assert entry.manifest["name"] == "tiny-test"
    assert entry.manifest["lineage"]["recipe"]["stage"] == "train"
    trained = json.loads((tiny_model_dir / "report.json").read_text())
    assert entry.manifest["eval"]["accuracy"] == trained["eval"]["accuracy"]  # from the trainer's report.json
    assert {f["path"] for f in entry.manifest["files"]} >= {"config.json", "model.safetensors", "finsignal.json"}
    # the stored copy names the registry version, so signals carry it
    assert SentimentModel.load(entry.path).info.version == entry.version
    assert [e.version for e in reg.entries()] == [entry.version]
    assert [r["action"] for r in reg.audit()] == ["register"]


def test_register_refuses_what_the_worker_could_not_load(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.bin").write_bytes(b"pickle")
    with pytest.raises(RegistryError, match="config.json"):
        ModelRegistry(tmp_path / "reg").register(tmp_path / "junk")


def test_pointers_are_relative_symlinks_replaced_atomically(tiny_model_dir, tmp_path):
    from tests.lifecycle.conftest import near_copy

    reg = ModelRegistry(tmp_path / "reg")
    a, _ = reg.register(tiny_model_dir)
    b, _ = reg.register(near_copy(tiny_model_dir, tmp_path / "b"))
    assert a.version != b.version
    reg.promote(a.version, {})
    reg.promote(b.version, {})
    link = reg.pointer_path("live")
    assert os.readlink(link) == f"versions/{b.version}" and link.resolve() == b.path.resolve()
    assert reg.history() == [a.version, b.version]
    assert not list(reg.root.glob(".live.*"))  # no temp link left behind
    assert reg.rollback() == (b.version, a.version)
    assert reg.pointer("live") == a.version
    with pytest.raises(RegistryError, match="no previous"):
        reg.rollback()
    actions = [r["action"] for r in reg.audit()]
    assert actions == ["register", "register", "promote", "promote", "rollback"]


def test_nothing_referenced_is_removed(tiny_model_dir, tmp_path):
    from tests.lifecycle.conftest import near_copy

    reg = ModelRegistry(tmp_path / "reg")
    a, _ = reg.register(tiny_model_dir)
    b, _ = reg.register(near_copy(tiny_model_dir, tmp_path / "b"))
    c, _ = reg.register(near_copy(tiny_model_dir, tmp_path / "c", seed=2))
    reg.promote(a.version, {})
    reg.promote(b.version, {})
    reg.set_shadow(c.version)
    for version, ref in ((a.version, "history"), (b.version, "live"), (c.version, "shadow")):
        with pytest.raises(RegistryError, match=ref):
            reg.remove(version)
        assert (reg.versions_dir / version).is_dir()
    reg.set_shadow(None)
    reg.remove(c.version)
    assert not (reg.versions_dir / c.version).exists()
    assert reg.get("previous").version == a.version and reg.get("live").version == b.version
    assert reg.get(b.version[:6]).version == b.version


def test_audit_log_is_one_json_object_per_line(tiny_model_dir, tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    a, _ = reg.register(tiny_model_dir)
    reg.promote(a.version, {"passed": True, "forced": False})
    lines = reg.audit_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[-1]["action"] == "promote" and records[-1]["live_after"] == a.version
    assert all("ts_unix" in r and "user" in r for r in records)
