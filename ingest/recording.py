"""Recordings of Kafka topics on disk, and their replay.

A recording is a directory:

    manifest.json          {"format": 1, "topics": {"news": 42, ...}, "created_ns": ...}
    <topic>.jsonl          one record per line, in the order it was read:
                           {"ts": <ns>, "key": <str|null>, "value": <str>}
                           (`value_b64` / `key_b64` instead when the bytes are not UTF-8)

`ts` is the record's event time in nanoseconds. Replay merges every file by
(`ts`, topic, line number), a stable order, so the same recording always plays
back the same way.
"""

from __future__ import annotations

import base64
import heapq
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from ingest.contracts import ContractError, Document, decode_document

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = structlog.get_logger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"


class RecordingError(ValueError):
    """A recording directory or line that cannot be read; the message says where."""


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """One recorded Kafka record."""

    topic: str
    ts: int
    key: bytes | None
    value: bytes
    line: int = 0


def _enc(data: bytes | None, name: str) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode()}


def _dec(row: dict[str, Any], name: str) -> bytes | None:
    if f"{name}_b64" in row:
        return base64.b64decode(row[f"{name}_b64"])
    value = row.get(name)
    return None if value is None else str(value).encode("utf-8")


def record_line(ts: int, key: bytes | None, value: bytes) -> str:
    """One line of a `<topic>.jsonl` file (without the newline)."""
    return json.dumps({"ts": ts, **_enc(key, "key"), **_enc(value, "value")}, ensure_ascii=False)


class RecordingWriter:
    """Appends records to a recording directory; `close()` writes the manifest."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, TextIO] = {}
        self._counts: dict[str, int] = {}

    def write(self, topic: str, ts: int, key: bytes | None, value: bytes) -> None:
        fh = self._files.get(topic)
        if fh is None:
            fh = self._files[topic] = (self.directory / f"{topic}.jsonl").open("a", encoding="utf-8")
        fh.write(record_line(ts, key, value) + "\n")
        self._counts[topic] = self._counts.get(topic, 0) + 1

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        manifest = {"format": FORMAT, "topics": self._counts, "created_ns": time.time_ns()}
        (self.directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_topic(path: Path, topic: str) -> Iterator[RecordedMessage]:
    try:
        yield from _read_lines(path, topic)
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path}: not UTF-8 text ({exc.reason}); is this a recording?") \
            from None


def _read_lines(path: Path, topic: str) -> Iterator[RecordedMessage]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                value = _dec(row, "value")
                if value is None:
                    raise KeyError("value")
                yield RecordedMessage(topic, int(row["ts"]), _dec(row, "key"), value, lineno)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise RecordingError(f"{path}:{lineno}: bad record ({type(exc).__name__}: {exc}); "
                                     "fix or delete the line, or record again") from None


def _topic_files(directory: Path, topics: list[str] | None = None) -> list[Path]:
    """The recording's topic files, after checking its manifest."""
    manifest_path = directory / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordingError(f"{manifest_path}: not JSON ({exc}); is this a recording?") from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != FORMAT:
            raise RecordingError(f"{manifest_path}: format {fmt!r}, this version reads {FORMAT}")
    files = sorted(directory.glob("*.jsonl"))
    if topics is not None:
        files = [f for f in files if f.stem in topics]
    if not files:
        raise RecordingError(f"{directory}: no <topic>.jsonl files; make a recording with `finsignal record`")
    return files


def check_recording(directory: str | Path) -> dict[str, int]:
    """Read every record once (raising `RecordingError` at the first bad one); return topic -> records.

    A recording with no records is refused too: replaying it would run a pipeline with nothing to do.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordingError(f"{directory}: not a recording directory")
    counts = {f.stem: sum(1 for _ in _read_topic(f, f.stem)) for f in _topic_files(directory)}
    if not any(counts.values()):
        raise RecordingError(f"{directory}: the recording holds no records; record some with `finsignal record`")
    return counts


def read_recording(directory: str | Path, topics: list[str] | None = None) -> Iterator[RecordedMessage]:
    """Every recorded message, merged in (ts, topic, line) order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordingError(f"{directory}: not a recording directory")
    files = _topic_files(directory, topics)
    # Each file is in read order, which across partitions is not time order: sort per topic
    # (in memory), then merge the topics.
    order = lambda m: (m.ts, m.topic, m.line)  # noqa: E731
    streams = [sorted(_read_topic(f, f.stem), key=order) for f in files]
    yield from heapq.merge(*streams, key=order)


def restamp_ingest(value: bytes, ts_ingest: int) -> bytes:
    """A document with `ts_ingest` set to now, as when it is fed live; other payloads unchanged."""
    try:
        doc = decode_document(value)
    except ContractError:
        return value  # not a document (market data, or deliberately malformed): replay as recorded
    return Document.model_validate({**doc.model_dump(), "ts_ingest": ts_ingest}).to_bytes()


def replay(
    directory: str | Path,
    producer: KafkaProducer,
    *,
    speed: float | None = None,
    topic_map: dict[str, str] | None = None,
    restamp: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = False,
) -> int:
    """Produce a recording to Kafka; `speed` None plays as fast as possible, 10.0 at ten times real time.

    Returns how many records were sent; all are acknowledged when it returns.
    """
    from tqdm.auto import tqdm

    topic_map = topic_map or {}
    first_ts: int | None = None
    started = time.monotonic()
    sent = 0
    bar = tqdm(desc="replay", unit="msg", disable=not progress)
    for msg in read_recording(directory):
        if should_stop():
            break
        if speed:
            first_ts = msg.ts if first_ts is None else first_ts
            due = started + (msg.ts - first_ts) / 1e9 / speed
            while (wait := due - time.monotonic()) > 0 and not should_stop():
                time.sleep(min(wait, 0.2))
        value = restamp_ingest(msg.value, time.time_ns()) if restamp else msg.value
        producer.send(topic_map.get(msg.topic, msg.topic), key=msg.key, value=value)
        sent += 1
        bar.update(1)
    producer.flush()
    bar.close()
    log.info("replay.done", directory=str(directory), records=sent)
    return sent


def parse_speed(text: str) -> float | None:
    """`max` -> None; `1x`, `10x`, `0.5` -> a factor."""
    text = text.strip().lower()
    if text == "max":
        return None
    try:
        factor = float(text.removesuffix("x"))
    except ValueError:
        raise RecordingError(f"speed {text!r}: use max, or a factor such as 1x or 10x") from None
    if factor <= 0:
        raise RecordingError(f"speed {text!r} must be positive")
    return factor
