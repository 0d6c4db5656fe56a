"""The broker restarts under a running worker: it reconnects by itself and keeps scoring new documents.

The embedded broker (Tansu) keeps everything in memory, so a restart is a worst case a real Kafka
with a volume never shows: topics, committed offsets and the consumer group are all gone. What must
hold is that the worker, untouched, rejoins, finds its topics again once a producer recreates them
(as the ingestors' start-up `ensure_topics` does), resets to the start of the new, empty partitions
and scores every document published after the restart exactly once.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from finsignal.embedded import EmbeddedKafka
from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings
from signals.settings import RedisSettings
from tests.conftest import FAST_GROUP, eventually
from tests.faults.helpers import signal_document_ids, start_worker
from tests.integration.test_pipeline import make_docs

pytestmark = pytest.mark.integration


def publish(kafka: KafkaSettings, topic: str, docs) -> None:
    producer = make_producer(kafka)
    try:
        for doc in docs:
            producer.send(topic, key=doc.key, value=doc.to_bytes())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


def test_worker_survives_a_broker_restart_and_scores_what_comes_after(tiny_model_dir, topics, redis_server,
                                                                     redis_client):
    docs = make_docs(120)
    before, after = docs[:60], docs[60:]
    symbols = {s for d in docs for s in d.symbols}
    broker = EmbeddedKafka().start()
    kafka = KafkaSettings(bootstrap=broker.bootstrap, **FAST_GROUP)
    ensure_topics(kafka, topics.all())
    running = start_worker(tiny_model_dir, kafka, topics, RedisSettings(url=redis_server.url))
    try:
        publish(kafka, topics.news, before)
        eventually(lambda: len(signal_document_ids(redis_client, symbols)) == len(before), timeout_s=90)

        # Fault: the broker process dies (SIGKILL) and a new one starts on the same port, empty.
        broker.kill()
        time.sleep(3.0)  # the outage itself
        broker = EmbeddedKafka(port=broker.port).start()
        ensure_topics(kafka, topics.all())  # what an ingestor does when it starts
        publish(kafka, topics.news, after)

        eventually(lambda: len(signal_document_ids(redis_client, symbols)) >= len(docs), timeout_s=120)
        time.sleep(1.0)  # a late duplicate would show up here
        assert running.thread.is_alive(), "the worker loop died with the broker"
    finally:
        running.stop()
        broker.stop()

    ids = signal_document_ids(redis_client, symbols)
    print(f"\nbroker restart: documents in={len(docs)} ({len(before)} before, {len(after)} after); "
          f"signals out={len(ids)} unique={len(set(ids))}")
    assert Counter(ids) == Counter(d.id for d in docs)
