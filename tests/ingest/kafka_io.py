"""Reading what the ingestors wrote to the embedded broker."""

from __future__ import annotations

import time
from typing import Any

from ingest.settings import KafkaSettings


def read_topic(kafka: KafkaSettings, topic: str, expected: int | None = None, timeout_s: float = 15.0,
               settle_s: float = 0.5) -> list[Any]:
    """Every record of `topic` from the start: at least `expected` (or whatever arrives), then `settle_s` more."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + timeout_s
        while (parts := consumer.partitions_for_topic(topic)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        quiet_until = None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=100)
            new = [r for rs in batch.values() for r in rs]
            records += new
            if expected is None or len(records) >= expected:
                if new or quiet_until is None:
                    quiet_until = time.monotonic() + settle_s
                elif time.monotonic() >= quiet_until:
                    break
        return sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset))
    finally:
        consumer.close()
