"""Worker behaviour on the real broker and Redis: slow batches, model hot reload, market context."""

from __future__ import annotations

import json
import shutil
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ingest.contracts import Kline
from ingest.kafka import ensure_topics, make_producer
from signals import metrics
from signals.backends import load_backend
from signals.model import SentimentModel, weights_hash
from signals.settings import RedisSettings, WorkerSettings
from signals.worker import Worker
from tests.conftest import eventually
from tests.integration.test_pipeline import make_docs, stream_signals

pytestmark = pytest.mark.integration


class SlowModel:
    """A real model whose every forward pass takes longer than the consumer's max poll interval."""

    def __init__(self, model: SentimentModel, seconds: float) -> None:
        self.inner, self.seconds = model, seconds
        self.info, self.max_length = model.info, model.max_length

    def encode_chunks(self, texts, overlap):
        return self.inner.encode_chunks(texts, overlap)

    def score_ids(self, batch):
        time.sleep(self.seconds)
        return self.inner.score_ids(batch)


def run_worker(model, kafka_settings, topics, redis_server, **overrides) -> tuple[Worker, threading.Thread]:
    settings = WorkerSettings(group_id=f"g-{topics.news}", **overrides)
    worker = Worker(model, kafka=kafka_settings, topics=topics, redis_settings=RedisSettings(url=redis_server.url),
                    settings=settings, model_loader=lambda path: load_backend(path, settings))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def test_a_batch_slower_than_max_poll_interval_costs_no_rebalance(tiny_model_dir, kafka_settings, topics,
                                                                  redis_server, redis_client):
    ensure_topics(kafka_settings, topics.all())
    kafka = kafka_settings.model_copy(update={"max_poll_interval_ms": 1500})
    docs = make_docs(6)
    producer = make_producer(kafka)
    for d in docs:
        producer.send(topics.news, key=d.key, value=d.to_bytes())
    producer.flush()
    failed_before = metrics.COMMITS.labels("failed")._value.get()
    model = SlowModel(SentimentModel.load(tiny_model_dir), seconds=2.5)
    worker, thread = run_worker(model, kafka, topics, redis_server, max_batch=2, market_context=False)
    try:
        eventually(lambda: len(stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})) == 6, timeout_s=90)
    finally:
        worker.stop()
        thread.join(60)
    assert metrics.COMMITS.labels("failed")._value.get() == failed_before


def perturbed_copy(src: Path, dst: Path, version: str) -> None:
    """A new model version: same architecture, different classifier weights."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    torch.manual_seed(1)
    weights["score.weight"] = torch.randn_like(weights["score.weight"])
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    meta = json.loads((dst / "finsignal.json").read_text())
    meta.update(version=version, content_hash=weights_hash(dst))
    (dst / "finsignal.json").write_text(json.dumps(meta))


def test_new_model_version_is_picked_up_without_restart(tiny_model_dir, kafka_settings, topics, redis_server,
                                                        redis_client, tmp_path):
    ensure_topics(kafka_settings, topics.all())
    current = tmp_path / "current"
    current.symlink_to(tiny_model_dir)
    perturbed_copy(tiny_model_dir, tmp_path / "v2", "v2")
    model = SentimentModel.load(current)
    worker, thread = run_worker(model, kafka_settings, topics, redis_server, model_dir=current, model_poll_s=0.2,
                                market_context=False)
    producer = make_producer(kafka_settings)
    sent = iter(make_docs(200))

    def send_one() -> None:
        d = next(sent)
        producer.send(topics.news, key=d.key, value=d.to_bytes())
        producer.flush()

    def versions() -> set[str]:
        send_one()
        return {s.model.version for s in stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})}

    try:
        eventually(lambda: model.info.version in versions(), timeout_s=60, interval_s=0.5)
        current.unlink()
        current.symlink_to(tmp_path / "v2")  # ops flip the symlink to the new version
        eventually(lambda: "v2" in versions(), timeout_s=60, interval_s=0.5)
    finally:
        worker.stop()
        thread.join(30)
    assert worker.model.info.version == "v2"


def test_signals_carry_market_context_from_bybit_topics(tiny_model_dir, kafka_settings, topics, redis_server,
                                                        redis_client):
    ensure_topics(kafka_settings, topics.all())
    producer = make_producer(kafka_settings)
    now = time.time_ns()
    minute = 60_000_000_000
    start0 = now - 10 * minute
    for i, close in enumerate(["67000", "67100", "66900", "67250.5"]):
        start = start0 + i * minute
        c = Decimal(close)
        k = Kline(category="linear", symbol="BTCUSDT", interval="1", start=start, end=start + minute - 1, open=c,
                  high=c, low=c, close=c, volume=Decimal(1), turnover=c, closed=True, ts_event=start + minute - 1,
                  ts_ingest=start + minute)
        producer.send(topics.kline, key=k.key, value=k.to_bytes())
    producer.flush()
    worker, thread = run_worker(SentimentModel.load(tiny_model_dir), kafka_settings, topics, redis_server)
    try:
        time.sleep(1.0)  # the market feed reads the topic at start-up
        [d] = make_docs(2)[1:]  # symbol BTCUSDT
        producer.send(topics.news, key=d.key, value=d.to_bytes())
        producer.flush()
        eventually(lambda: stream_signals(redis_client, {"BTCUSDT"}), timeout_s=60)
    finally:
        worker.stop()
        thread.join(30)
    [sig] = stream_signals(redis_client, {"BTCUSDT"})
    assert sig.market is not None
    assert sig.market.last_price == Decimal("67250.5")
    assert sig.market.vol_samples == 3 and sig.market.realized_vol > 0


def test_two_workers_in_one_group_share_partitions_and_publish_each_signal_once(tiny_model_dir, kafka_settings,
                                                                                 topics, redis_server, redis_client):
    ensure_topics(kafka_settings, topics.all())
    model = SentimentModel.load(tiny_model_dir)
    first = run_worker(model, kafka_settings, topics, redis_server, market_context=False, max_pending=4)
    second = run_worker(model, kafka_settings, topics, redis_server, market_context=False, max_pending=4)
    workers = [first[0], second[0]]
    try:
        eventually(lambda: all(w._consumer is not None and w._consumer.assignment() for w in workers),
                   timeout_s=60)
        assignments = [{tp.partition for tp in w._consumer.assignment() if tp.topic == topics.news}
                       for w in workers]
        assert not assignments[0] & assignments[1]
        docs = make_docs(60)
        producer = make_producer(kafka_settings)
        for d in docs:
            producer.send(topics.news, key=d.key, value=d.to_bytes())
        producer.flush()
        eventually(lambda: len(stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})) >= 60, timeout_s=60)
    finally:
        for worker, thread in (first, second):
            worker.stop()
            thread.join(30)
    signals = stream_signals(redis_client, {"AAPL", "BTCUSDT", "TSLA"})
    assert sorted(s.document_ids[0] for s in signals) == sorted(d.id for d in docs)


def test_stop_while_redis_is_down_returns_promptly_and_commits_nothing(tiny_model_dir, kafka_settings, topics):
    from finsignal.embedded import free_port
    from tests.integration.test_pipeline import committed_total

    ensure_topics(kafka_settings, topics.all())
    producer = make_producer(kafka_settings)
    for d in make_docs(3):
        producer.send(topics.news, key=d.key, value=d.to_bytes())
    producer.flush()
    retries_before = metrics.PUBLISH_RETRIES._value.get()
    settings = WorkerSettings(group_id=f"g-{topics.news}", market_context=False)
    unreachable = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5)
    worker = Worker(SentimentModel.load(tiny_model_dir), kafka=kafka_settings, topics=topics,
                    redis_settings=unreachable, settings=settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    eventually(lambda: metrics.PUBLISH_RETRIES._value.get() > retries_before, timeout_s=60)
    worker.stop()
    thread.join(15)
    assert not thread.is_alive()
    assert committed_total(kafka_settings, topics, settings.group_id) == 0  # redelivered to whoever comes next
