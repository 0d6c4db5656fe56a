"""`finsignal record`: capture Kafka topics into a recording directory that replay can play back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from ingest.recording import RecordingWriter
from ingest.settings import KafkaSettings

log = structlog.get_logger(__name__)


class RecordError(ValueError):
    """The recording cannot be made (e.g. a topic that does not exist)."""


def event_time_ns(value: bytes, kafka_timestamp_ms: int | None) -> int:
    """`ts_event` of a Document or MarketEvent, else the Kafka record timestamp, in nanoseconds."""
    try:
        ts = json.loads(value).get("ts_event")
    except (ValueError, AttributeError, UnicodeDecodeError):
        ts = None
    if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0:
        return ts
    return max(0, kafka_timestamp_ms or 0) * 1_000_000


def record(kafka: KafkaSettings, topics: list[str], out: Path, *, from_beginning: bool = False,
           duration_s: float | None = None, max_records: int | None = None,
           should_stop: Callable[[], bool] = lambda: False, progress: bool = False,
           metadata_timeout_s: float = 10.0) -> dict[str, int]:
    """Write every record of `topics` to `out` until stopped, `duration_s` or `max_records`; returns counts."""
    from kafka import KafkaConsumer, TopicPartition
    from tqdm.auto import tqdm

    if not topics:
        raise RecordError("name at least one topic")
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest" if from_beginning else "latest")
    counts: dict[str, int] = {t: 0 for t in topics}
    try:
        partitions = []
        deadline = time.monotonic() + metadata_timeout_s
        for topic in topics:
            while (found := consumer.partitions_for_topic(topic)) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if not found:
                raise RecordError(f"topic {topic!r} does not exist on {kafka.bootstrap}")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
            for tp in partitions:
                consumer.position(tp)  # resolve "end" now, so records produced from here on are all kept
        started = time.monotonic()
        total = 0
        bar = tqdm(desc="record", unit="msg", disable=not progress)
        with RecordingWriter(out) as writer:
            while not should_stop():
                if duration_s is not None and time.monotonic() - started >= duration_s:
                    break
                if max_records is not None and total >= max_records:
                    break
                batches = consumer.poll(timeout_ms=200)
                for records in batches.values():
                    for rec in records:
                        if max_records is not None and total >= max_records:
                            break
                        writer.write(rec.topic, event_time_ns(rec.value or b"", rec.timestamp), rec.key,
                                     rec.value or b"")
                        counts[rec.topic] += 1
                        total += 1
                        bar.update(1)
        bar.close()
    finally:
        consumer.close()
    log.info("record.done", out=str(out), counts=counts)
    return counts
