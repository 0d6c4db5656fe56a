"""End to end on the real broker and Redis: documents in, signals out, offsets committed, bad records dead-lettered."""

from __future__ import annotations

import json
import threading
import time

import pytest

from ingest.contracts import Document
from ingest.kafka import DEADLETTER_REASON, DEADLETTER_SOURCE, ensure_topics, make_producer
from signals.contracts import decode_signal
from signals.model import SentimentModel
from signals.keys import KEYS
from signals.redis_sink import stream_key
from signals.settings import RedisSettings, WorkerSettings
from signals.worker import Worker
from tests.conftest import FAST_GROUP, eventually

pytestmark = pytest.mark.integration


def make_docs(n: int, symbols: tuple[str, ...] = ("AAPL", "BTCUSDT", "TSLA")) -> list[Document]:
    now = time.time_ns()
    return [
        Document.create(kind="news", source="test", title=f"Company {i} beats estimates and raises guidance",
                        url=f"https://example.com/a/{i}", symbols=[symbols[i % len(symbols)]],
                        ts_event=now - 1_000_000, ts_ingest=now)
        for i in range(n)
    ]


def start_worker(model_dir, kafka_settings, topics, redis_server, **overrides) -> tuple[Worker, threading.Thread]:
    model = SentimentModel.load(model_dir)
    settings = WorkerSettings(group_id=f"g-{topics.news}", poll_timeout_ms=100, **overrides)
    worker = Worker(model, kafka=kafka_settings, topics=topics, redis_settings=RedisSettings(url=redis_server.url),
                    settings=settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def stream_signals(redis_client, symbols) -> list:
    return [decode_signal(fields[b"signal"]) for s in symbols for _, fields in redis_client.xrange(stream_key(s))]


def committed_total(kafka_settings, topics, group: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_settings.client_options(), group_id=group, enable_auto_commit=False, **FAST_GROUP)
    try:
        parts = [TopicPartition(topics.news, p) for p in consumer.partitions_for_topic(topics.news) or ()]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close()


def test_documents_become_signals_and_offsets_are_committed(tiny_model_dir, kafka_settings, topics, redis_server,
                                                             redis_client):
    ensure_topics(kafka_settings, topics.all())
    docs = make_docs(30)
    producer = make_producer(kafka_settings)
    for doc in docs:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.flush()
    worker, thread = start_worker(tiny_model_dir, kafka_settings, topics, redis_server)
    try:
        symbols = {s for d in docs for s in d.symbols}
        eventually(lambda: len(stream_signals(redis_client, symbols)) == len(docs), timeout_s=60)
        eventually(lambda: committed_total(kafka_settings, topics, worker.settings.group_id) == len(docs))
    finally:
        worker.stop()
        thread.join(30)
    signals = stream_signals(redis_client, symbols)
    assert {s.document_ids[0] for s in signals} == {d.id for d in docs}
    for sig in signals:
        doc = next(d for d in docs if d.id == sig.document_ids[0])
        assert sig.symbol == doc.symbols[0]
        assert sig.ts_event == doc.ts_event and sig.ts_ingest == doc.ts_ingest <= sig.ts_scored
        assert sig.model.name == "tiny-test"
    assert {s.decode() for s in redis_client.smembers(KEYS.symbols)} == symbols
    assert all(redis_client.exists(KEYS.latest(s)) for s in symbols)


def test_malformed_record_goes_to_deadletter_and_worker_keeps_going(tiny_model_dir, kafka_settings, topics,
                                                                   redis_server, redis_client):
    from kafka import KafkaConsumer

    ensure_topics(kafka_settings, topics.all())
    good = make_docs(3)
    bad_payloads = [b"{not json", json.dumps({"id": "x", "kind": "news"}).encode(), b"\xff\xfe\x00garbage"]
    producer = make_producer(kafka_settings)
    producer.send(topics.news, key=b"k", value=bad_payloads[0])
    for doc in good[:2]:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.send(topics.filings, key=b"k", value=bad_payloads[1])
    producer.send(topics.news, key=b"k", value=bad_payloads[2])
    producer.send(topics.news, key=good[2].key, value=good[2].to_bytes())
    producer.flush()
    worker, thread = start_worker(tiny_model_dir, kafka_settings, topics, redis_server)
    try:
        eventually(lambda: len(stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})) == 3, timeout_s=60)
    finally:
        worker.stop()
        thread.join(30)
    consumer = KafkaConsumer(topics.deadletter, **kafka_settings.client_options(), auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    letters = list(consumer)
    consumer.close()
    assert sorted(r.value for r in letters) == sorted(bad_payloads)  # original bytes, untouched
    for rec in letters:
        headers = dict(rec.headers)
        assert headers[DEADLETTER_REASON]
        assert headers[DEADLETTER_SOURCE].decode().startswith((topics.news, topics.filings))
    reasons = {dict(r.headers)[DEADLETTER_REASON].decode() for r in letters}
    assert any("Document" in r for r in reasons)


def test_signals_are_copied_to_the_audit_topic(tiny_model_dir, kafka_settings, topics, redis_server, redis_client):
    from kafka import KafkaConsumer

    ensure_topics(kafka_settings, topics.all())
    docs = make_docs(4)
    producer = make_producer(kafka_settings)
    for doc in docs:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.flush()
    worker, thread = start_worker(tiny_model_dir, kafka_settings, topics, redis_server)
    try:
        eventually(lambda: len(stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})) == 4, timeout_s=60)
    finally:
        worker.stop()
        thread.join(30)
    consumer = KafkaConsumer(topics.signals, **kafka_settings.client_options(), auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    records = list(consumer)
    consumer.close()
    audit = [decode_signal(r.value) for r in records]
    assert {s.id for s in audit} == {s.id for s in stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})}
    assert [r.key.decode() for r in records] == [s.symbol for s in audit]  # keyed by symbol
