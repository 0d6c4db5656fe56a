"""The backfill's state in the output directory, and the recording assembled from it.

Every unit of work (a chunk of candles, a filing, an imported archive) is written as its own part
under `<out>/.backfill/`, atomically (a temporary file renamed into place), in the recording's line
format. A part that exists is done: an interrupted backfill, rerun, fetches only the units that have no
part yet. `assemble` then writes `<topic>.jsonl` and `manifest.json` from the parts, sorted, so the
recording is the same bytes whatever order the units were fetched in.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ingest.recording import FORMAT, MANIFEST, record_line

STATE_DIR = ".backfill"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class BackfillStateError(ValueError):
    """The output directory holds a backfill that this run cannot continue."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a rerun after a crash) sees all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a recording is read by others (compose, CI)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lines(records: Iterable[tuple[int, bytes | None, bytes]]) -> bytes:
    """Recording lines of (ts, key, value) records."""
    return "".join(record_line(ts, key, value) + "\n" for ts, key, value in records).encode()


def read_sorted(path: Path) -> Iterator[tuple[tuple[int, str], str]]:
    """A part's lines as ((ts, key), line): what `assemble` merges, without decoding the values."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                yield (row["ts"], row.get("key") or ""), line.rstrip("\n")


def sortable(rows: Iterable[dict[str, Any]]) -> list[tuple[tuple[int, str], str]]:
    """Decoded lines in assembly order."""
    return sorted(((r["ts"], r.get("key") or ""), json.dumps(r, ensure_ascii=False)) for r in rows)


def read_part(path: Path) -> Iterator[dict[str, Any]]:
    """The recording lines of one part."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


class Store:
    """Parts and cached source files under `<out>/.backfill/`."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.root = self.out / STATE_DIR
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def bind_window(self, window: dict[str, str]) -> None:
        """Refuse to mix windows: the parts of another window would be assembled into this one."""
        path = self.path("window.json")
        if path.is_file():
            held = json.loads(path.read_text())
            if held != window:
                raise BackfillStateError(f"{self.out} holds a backfill of {held['from']} .. {held['to']}; use "
                                         f"another --out for {window['from']} .. {window['to']}")
            return
        write_atomic(path, (json.dumps(window) + "\n").encode())

    def assemble(self, topics: dict[str, list[Iterable[tuple[tuple[int, str], str]]]],
                 manifest: dict[str, Any]) -> dict[str, int]:
        """Write each topic's lines and the manifest; returns counts per topic.

        A topic is given as streams of ((ts, key), line), each in that order (ties by the line itself);
        they are merged as they are written, so a recording far larger than memory takes one pass.
        """
        counts: dict[str, int] = {}
        for topic, streams in sorted(topics.items()):
            path = self.out / f"{topic}.jsonl"
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.out)
            n = 0
            try:
                os.fchmod(fd, 0o666 & ~_UMASK)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    for _, line in heapq.merge(*streams):
                        fh.write(line + "\n")
                        n += 1
                    fh.flush()
                    os.fsync(fh.fileno())
                if n:
                    os.replace(tmp, path)
                    counts[topic] = n
                else:
                    Path(tmp).unlink()
                    path.unlink(missing_ok=True)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        body = {"format": FORMAT, "topics": counts, **manifest}
        write_atomic(self.out / MANIFEST, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())
        return counts

