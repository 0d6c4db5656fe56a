"""What the fault-injection tests share: a worker on a thread, the dead-letter topic read back, counts."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ingest.kafka import DEADLETTER_SOURCE
from ingest.settings import KafkaSettings, TopicSettings
from signals.backends import load_backend
from signals.redis_sink import stream_key
from signals.settings import RedisSettings, WorkerSettings
from signals.worker import Worker


@dataclass
class RunningWorker:
    worker: Worker
    thread: threading.Thread

    def stop(self, timeout_s: float = 60.0) -> None:
        self.worker.stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"


def start_worker(model_dir, kafka: KafkaSettings, topics: TopicSettings, redis: RedisSettings,
                 **overrides) -> RunningWorker:
    """The real worker loop on a daemon thread, in a group of its own."""
    settings = WorkerSettings(group_id=f"faults-{topics.news}", market_context=False, **overrides)
    worker = Worker(load_backend(model_dir, settings), kafka=kafka, topics=topics, redis_settings=redis,
                    settings=settings)
    thread = threading.Thread(target=worker.run, daemon=True, name="worker")
    thread.start()
    return RunningWorker(worker, thread)


def signal_document_ids(client, symbols) -> list[str]:
    """The document id behind every entry of every signals:{SYMBOL} stream, duplicates kept."""
    from signals.contracts import decode_signal

    ids: list[str] = []
    for symbol in symbols:
        for _, fields in client.xrange(stream_key(symbol)):
            ids.extend(decode_signal(fields[b"signal"]).document_ids)
    return ids


def read_dead_letters(kafka: KafkaSettings, topics: TopicSettings, expected: int,
                      timeout_s: float = 60.0) -> dict[str, dict[str, str]]:
    """`source topic[partition]@offset` -> headers (and `value_bytes`) of every record on the dead-letter topic."""
    import time

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topics.deadletter, **kafka.client_options(), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    letters: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(letters) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    headers = {k: v.decode() for k, v in rec.headers}
                    headers["value_bytes"] = str(len(rec.value or b""))
                    letters[headers[DEADLETTER_SOURCE]] = headers
    finally:
        consumer.close()
    return letters
