"""The model registry: versioned model artifacts by content hash, their manifests, and named pointers.

Layout under the registry root (`FINSIGNAL_REGISTRY_ROOT`):

    versions/<version>/     a copy of the checkpoint, `manifest.json`, and (after a promotion gate)
                            `reference.json`, the drift reference of the model's outputs on the eval set
    live -> versions/<v>    symlink the worker serves (`FINSIGNAL_WORKER_MODEL_DIR=<root>/live`)
    shadow -> versions/<v>  symlink the worker scores beside live (`FINSIGNAL_WORKER_SHADOW_DIR=<root>/shadow`)
    state.json              versions that have been live, oldest first: what `rollback` goes back to
    audit.jsonl             every decision (register, promote, refuse, rollback, shadow, remove) with figures

A version is the first 12 hex digits of SHA-256 over the artifact's files (path and bytes), metadata
files excepted; the stored copy's `finsignal.json` carries it, so signals name the registry version.
Pointers move by `os.replace` of a fresh symlink: a reader sees the old target or the new, never
neither, and the worker's model watcher picks the change up. A version that a pointer or the live
history references is never deleted. Mutations hold an exclusive lock on `<root>/.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ingest.settings import ComponentSettings
from signals.model import ModelLoadError, check_directory, weights_hash

MANIFEST = "manifest.json"
REFERENCE = "reference.json"
# Files that describe an artifact rather than make it: outside the content hash, so registering
# the same weights twice gives the same version whatever their metadata says.
METADATA_FILES = frozenset({"finsignal.json", "report.json", MANIFEST, REFERENCE})
POINTERS = ("live", "shadow")
VERSION_LENGTH = 12


def _default_root() -> Path:
    base = os.environ.get("FINSIGNAL_CACHE_DIR") or Path.home() / ".cache" / "finsignal"
    return Path(base) / "registry"


class RegistrySettings(ComponentSettings):
    """Where the model store is (`FINSIGNAL_REGISTRY_*`)."""

    section: ClassVar[str] = "registry"

    root: Path = Field(default_factory=_default_root,
                       description="model store directory; default $FINSIGNAL_CACHE_DIR/registry")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One registered version: where it lives and what its manifest says."""

    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", ""))

    @property
    def eval(self) -> dict[str, Any]:
        return dict(self.manifest.get("eval") or {})


def artifact_hash(directory: Path) -> str:
    """SHA-256 over every file of an artifact except metadata, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in METADATA_FILES:
            continue
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class ModelRegistry:
    """The store at `root`; see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.audit_path = self.root / "audit.jsonl"
        self.state_path = self.root / "state.json"

    @classmethod
    def from_settings(cls, settings: RegistrySettings | None = None) -> ModelRegistry:
        return cls((settings or RegistrySettings()).root)

    # --- reading ---------------------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every registered version, oldest registration first."""
        if not self.versions_dir.is_dir():
            return []
        found = [self._entry(p) for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file()]
        return sorted(found, key=lambda e: (e.manifest.get("registered_unix", 0), e.version))

    def get(self, ref: str) -> Entry:
        """A version by full id, unique prefix, or pointer name (`live`, `shadow`, `previous`)."""
        if ref in POINTERS:
            version = self.pointer(ref)
            if version is None:
                raise RegistryError(f"no {ref} version is set")
            return self._entry(self.versions_dir / version)
        if ref == "previous":
            history = self.history()
            if len(history) < 2:
                raise RegistryError("no previous live version")
            return self._entry(self.versions_dir / history[-2])
        if not re.fullmatch(r"[0-9a-f]{1,64}", ref):
            raise RegistryError(f"{ref!r} is not a version (hex digits), nor live, shadow or previous")
        matches = [p for p in self.versions_dir.glob(f"{ref[:VERSION_LENGTH]}*") if (p / MANIFEST).is_file()]
        if not matches:
            raise RegistryError(f"no registered version {ref!r}; see `finsignal model list`")
        if len(matches) > 1:
            raise RegistryError(f"{ref!r} is ambiguous: {', '.join(sorted(p.name for p in matches))}")
        return self._entry(matches[0])

    def pointer(self, name: str) -> str | None:
        """The version a pointer names, or None when it is unset."""
        link = self.root / name
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def pointer_path(self, name: str) -> Path:
        """The symlink path a worker is configured with (`<root>/live`, `<root>/shadow`)."""
        return self.root / name

    def history(self) -> list[str]:
        """Versions that have been live, oldest first; the last one is live now."""
        return list(_read_json(self.state_path).get("live_history", []))

    def references(self, version: str) -> list[str]:
        """What points at a version: `live`, `shadow`, `history` (a rollback target)."""
        refs = [name for name in POINTERS if self.pointer(name) == version]
        if version in self.history() and "live" not in refs:
            refs.append("history")
        return refs

    def audit(self) -> list[dict[str, Any]]:
        """The audit log's records, oldest first."""
        if not self.audit_path.is_file():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]

    def _entry(self, path: Path) -> Entry:
        if not (path / MANIFEST).is_file():
            raise RegistryError(f"{path}: not a registered version (no {MANIFEST})")
        return Entry(path.name, path, _read_json(path / MANIFEST))

    # --- writing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's exclusive lock: one writer at a time, across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def register(self, source: str | Path) -> tuple[Entry, bool]:
        """Copy a checkpoint directory into the store; return its entry and whether it was new."""
        source = Path(source).resolve()
        try:
            check_directory(source)
        except ModelLoadError as exc:
            raise RegistryError(str(exc)) from exc
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=False,
                            ignore=shutil.ignore_patterns(MANIFEST, REFERENCE))
            digest = artifact_hash(staging)  # what is hashed is what is stored
            version = digest[:VERSION_LENGTH]
            target = self.versions_dir / version
            with self.locked():
                if (target / MANIFEST).is_file():
                    return self._entry(target), False
                meta = _read_json(staging / "finsignal.json")
                source_version = meta.get("version")
                meta.update(version=version, content_hash=meta.get("content_hash") or weights_hash(staging))
                meta.setdefault("name", source.name)
                (staging / "finsignal.json").write_text(json.dumps(meta, indent=2) + "\n")
                manifest = self._manifest(source, staging, digest, meta, source_version)
                _write_json_atomic(staging / MANIFEST, manifest)
                staging.rename(target)
                self._append_audit({"action": "register", "version": version, "name": manifest["name"],
                                    "source": str(source), "eval": manifest["eval"]})
            return self._entry(target), True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _manifest(self, source: Path, staging: Path, digest: str, meta: dict[str, Any],
                  source_version: str | None) -> dict[str, Any]:
        report = _read_json(staging / "report.json")
        compression = _read_json(source.parent / "report.json")  # `compress run --out` holds the run's report
        files = [{"path": p.relative_to(staging).as_posix(), "bytes": p.stat().st_size}
                 for p in sorted(staging.rglob("*")) if p.is_file()]
        return {
            "format": 1,
            "version": digest[:VERSION_LENGTH],
            "artifact_sha256": digest,
            "name": meta.get("name"),
            "weights_sha256": meta.get("content_hash"),
            "source": str(source),
            "source_version": source_version,
            "registered_unix": time.time(),
            "registered_by": _user(),
            "runtime": meta.get("runtime", {"kind": "hf"}),
            "lineage": meta.get("lineage"),
            "eval": {k: v for k, v in (report.get("eval") or {}).items() if k != "confusion"},
            "compression": _compression_summary(compression) if compression.get("rows") else None,
            "size_bytes": sum(f["bytes"] for f in files),
            "files": files,
        }

    def set_pointer(self, name: str, version: str | None) -> None:
        """Point `name` at a version (None removes it); atomic for readers."""
        if name not in POINTERS:
            raise RegistryError(f"unknown pointer {name!r}; one of {POINTERS}")
        link = self.root / name
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            return
        if not (self.versions_dir / version / MANIFEST).is_file():
            raise RegistryError(f"no registered version {version!r}")
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("versions") / version)  # relative: the store can be mounted anywhere
        os.replace(tmp, link)

    def promote(self, version: str, record: dict[str, Any]) -> str | None:
        """Move `live` to `version` and append the decision; return the version that was live."""
        with self.locked():
            before = self.pointer("live")
            history = self.history()
            if version != before:
                self.set_pointer("live", version)
                history = [v for v in history if v != version] + [version]
                _write_json_atomic(self.state_path, {"live_history": history})
            self._append_audit({"action": "promote", "version": version, "live_before": before,
                                "live_after": version, **record})
            return before

    def rollback(self, record: dict[str, Any] | None = None) -> tuple[str, str]:
        """Move `live` back to the version live before it; return (from, to)."""
        with self.locked():
            history = self.history()
            current = self.pointer("live")
            if current is None or len(history) < 2 or history[-1] != current:
                raise RegistryError("no previous live version to roll back to")
            target = history[-2]
            if not (self.versions_dir / target / MANIFEST).is_file():
                raise RegistryError(f"previous version {target} is missing from the store")
            self.set_pointer("live", target)
            _write_json_atomic(self.state_path, {"live_history": history[:-1]})
            self._append_audit({"action": "rollback", "version": target, "live_before": current,
                                "live_after": target, **(record or {})})
            return current, target

    def set_shadow(self, version: str | None) -> None:
        """Point `shadow` at a version, or clear it; recorded in the audit log."""
        with self.locked():
            before = self.pointer("shadow")
            self.set_pointer("shadow", version)
            self._append_audit({"action": "shadow", "version": version, "shadow_before": before})

    def remove(self, version: str) -> None:
        """Delete a version that nothing references."""
        with self.locked():
            entry = self.get(version)
            refs = self.references(entry.version)
            if refs:
                raise RegistryError(f"{entry.version} is referenced by {', '.join(refs)}; not removed")
            trash = self.versions_dir / f".removing-{entry.version}"
            entry.path.rename(trash)  # the version disappears at once; the bytes go after
            shutil.rmtree(trash)
            self._append_audit({"action": "remove", "version": entry.version})

    def append_audit(self, record: dict[str, Any]) -> None:
        """Append one decision to the audit log (under the lock)."""
        with self.locked():
            self._append_audit(record)

    def _append_audit(self, record: dict[str, Any]) -> None:
        line = json.dumps({"ts_unix": time.time(), "user": _user(), **record}, default=str)
        with self.audit_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _compression_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The rows of a `compress run` report, reduced to what a reviewer compares."""
    keys = ("name", "role", "accuracy", "macro_f1", "agreement", "signal_flips", "ece", "size_on_disk_bytes")
    return {"rows": [{k: row.get(k) for k in keys if k in row} for row in report.get("rows", [])],
            "outputs": report.get("outputs")}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return str(os.getuid())
