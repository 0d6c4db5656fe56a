"""Redis goes away for ~10 s under a running worker: no commit meanwhile, retries, resumes, nothing lost."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from finsignal.embedded import EmbeddedRedis
from ingest.kafka import ensure_topics, make_producer
from signals import metrics
from signals.settings import RedisSettings
from tests.conftest import eventually
from tests.faults.helpers import signal_document_ids, start_worker
from tests.integration.test_pipeline import committed_total, make_docs

pytestmark = pytest.mark.integration

OUTAGE_S = 10.0


class DurableRedis(EmbeddedRedis):
    """redis-server with every write fsynced to an append-only file in `data_dir`, as compose runs it."""

    def __init__(self, data_dir, port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = data_dir

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]


def test_redis_outage_stops_commits_then_resumes_with_nothing_lost_or_duplicated(
        tiny_model_dir, kafka_settings, topics, tmp_path):
    import redis

    ensure_topics(kafka_settings, topics.all())
    docs = make_docs(300)
    before, during = docs[:150], docs[150:]
    symbols = {s for d in before + during for s in d.symbols}
    server = DurableRedis(tmp_path).start()
    client = redis.Redis.from_url(server.url)
    producer = make_producer(kafka_settings)
    group = f"faults-{topics.news}"
    running = start_worker(tiny_model_dir, kafka_settings, topics, RedisSettings(url=server.url, socket_timeout_s=1),
                           max_pending=32)
    try:
        for doc in before:
            producer.send(topics.news, key=doc.key, value=doc.to_bytes())
        producer.flush()
        eventually(lambda: len(signal_document_ids(client, symbols)) == len(before), timeout_s=90)
        eventually(lambda: committed_total(kafka_settings, topics, group) == len(before), timeout_s=30)

        # Fault: Redis dies (SIGKILL) while documents keep arriving.
        client.close()
        server.kill()
        retries_before = metrics.PUBLISH_RETRIES._value.get()
        for doc in during:
            producer.send(topics.news, key=doc.key, value=doc.to_bytes())
        producer.flush()
        time.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
        committed_in_outage = committed_total(kafka_settings, topics, group)
        retries_in_outage = metrics.PUBLISH_RETRIES._value.get() - retries_before

        # A new redis-server on the same port and data directory.
        server = DurableRedis(tmp_path, port=server.port).start()
        client = redis.Redis.from_url(server.url)
        eventually(lambda: len(signal_document_ids(client, symbols)) >= len(before) + len(during), timeout_s=90)
        eventually(lambda: committed_total(kafka_settings, topics, group) == len(before) + len(during), timeout_s=30)
        time.sleep(1.0)  # a late duplicate would show up here
        running.stop()
        ids = signal_document_ids(client, symbols)
    finally:
        running.stop()
        producer.close()
        client.close()
        server.stop()

    went_in = len(before) + len(during)
    print(f"\nredis outage {OUTAGE_S:.0f}s: documents in={went_in} signals out={len(ids)} "
          f"unique={len(set(ids))} publish retries={retries_in_outage:.0f} committed during outage="
          f"{committed_in_outage}")
    assert committed_in_outage == len(before), "the worker committed work Redis never acknowledged"
    assert retries_in_outage >= 2, "the worker did not retry while Redis was away"
    assert Counter(ids) == Counter(d.id for d in before + during)  # every document once, none twice
