"""Pick up a new model version from the watched model path without a restart.

The path may be a checkpoint directory rewritten in place or a symlink flipped to a new one
(`ln -sfn v2 current`): the fingerprint covers both. A new version loads in the background;
the worker swaps it in between batches. A version that fails to load is logged and skipped;
the current one keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from signals import metrics

log = structlog.get_logger(__name__)

Fingerprint = tuple[str, tuple[tuple[str, int, int], ...]]


def fingerprint(path: Path) -> Fingerprint:
    """Where the path resolves to, and the names, sizes and mtimes of the files that define a model."""
    resolved = path.resolve()
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in resolved.glob("*")
        if p.suffix in {".safetensors", ".json"} and p.is_file()
    )
    return str(resolved), tuple(files)


class ModelWatcher:
    """Polls `path` every `interval_s`; `poll()` returns a newly loaded model once, else None."""

    def __init__(self, path: Path, loader: Callable[[Path], Any], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.loader = loader
        self.interval_s = interval_s
        self.clock = clock
        self._seen = fingerprint(path)
        self._next_check = clock() + interval_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._loading: Future | None = None

    def poll(self) -> Any | None:
        """A freshly loaded model if one finished loading since the last call."""
        if self._loading is not None and self._loading.done():
            future, self._loading = self._loading, None
            try:
                model = future.result()
            except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not stop scoring
                metrics.MODEL_RELOADS.labels("failed").inc()
                log.error("model.reload_failed", path=str(self.path), error=str(exc))
                return None
            metrics.MODEL_RELOADS.labels("loaded").inc()
            return model
        if self.interval_s <= 0 or self._loading is not None or self.clock() < self._next_check:
            return None
        self._next_check = self.clock() + self.interval_s
        try:
            current = fingerprint(self.path)
        except OSError as exc:
            log.warning("model.watch_failed", path=str(self.path), error=str(exc))
            return None
        if current != self._seen:
            self._seen = current
            log.info("model.changed", path=str(self.path), resolved=current[0])
            # Let a writer finish: the compressor writes finsignal.json last, but a copy may be mid-way.
            self._loading = self._pool.submit(self._settled_load)
        return None

    def _settled_load(self) -> Any:
        before = fingerprint(self.path)
        time.sleep(min(1.0, self.interval_s))
        after = fingerprint(self.path)
        if before != after:
            self._seen = before  # differs from whatever the files settle to, so the next check retries
            raise RuntimeError("model files still changing; will retry on the next change")
        return self.loader(self.path)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
