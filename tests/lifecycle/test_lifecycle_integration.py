"""The lifecycle on the real broker and Redis: the gate and rollback move a running worker, shadow scoring
stays apart from live and cannot hurt it, and drift shows a changed input stream."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from ingest.contracts import Document
from ingest.kafka import ensure_topics, make_producer
from signals import metrics
from signals.backends import load_backend
from signals.contracts import decode_signal
from signals.model import SentimentModel
from signals.keys import SignalKeys
from signals.redis_sink import stream_key
from signals.registry import ModelRegistry
from signals.settings import RedisSettings, WorkerSettings
from signals.worker import Worker
from tests.conftest import eventually
from tests.integration.test_cli import finsignal
from tests.lifecycle.conftest import texts_by_label

# Each test starts a worker (a group join) and some run the gate in a subprocess: minutes on 2 shared cores.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SYMBOLS = ("AAPL", "BTCUSDT", "TSLA")
_serial = itertools.count()


def docs(texts: list[str], tag: str) -> list[Document]:
    now = time.time_ns()
    return [Document.create(kind="news", source="wire", title=t, url=f"https://example.com/{tag}/{next(_serial)}",
                            symbols=[SYMBOLS[i % len(SYMBOLS)]], ts_event=now, ts_ingest=now)
            for i, t in enumerate(texts)]


def start(serve_dir: Path, kafka_settings, topics, redis_server, loader=None, **overrides) -> tuple[Worker, threading.Thread]:
    settings = WorkerSettings(group_id=f"g-{topics.news}", market_context=False, link_symbols=False,
                              model_poll_s=0.2, **overrides)
    worker = Worker(SentimentModel.load(serve_dir), kafka=kafka_settings, topics=topics,
                    redis_settings=RedisSettings(url=redis_server.url), settings=settings,
                    model_loader=loader or (lambda path: load_backend(path, settings)))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def send(kafka_settings, topic: str, documents: list[Document]) -> None:
    producer = make_producer(kafka_settings)
    for d in documents:
        producer.send(topic, key=d.key, value=d.to_bytes())
    producer.flush()
    producer.close()


def signals_in(redis_client, prefix: str = "") -> list:
    return [decode_signal(f[b"signal"]) for s in SYMBOLS for _, f in redis_client.xrange(prefix + stream_key(s))]


def topic_signals(kafka_settings, topic: str) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, **kafka_settings.client_options(), auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return [decode_signal(r.value) for r in consumer]
    finally:
        consumer.close()


def test_gate_refuses_a_worse_candidate_promotes_a_good_one_and_rollback_restores_live(
        tiny_model_dir, worse_model_dir, good_model_dir, eval_path, kafka_settings, topics, redis_server,
        redis_client, tmp_path):
    ensure_topics(kafka_settings, topics.all())
    registry = ModelRegistry(tmp_path / "registry")
    env = {"FINSIGNAL_REGISTRY_ROOT": str(registry.root), "FINSIGNAL_GATE_LATENCY_DOCS": "50"}
    first = finsignal("model", "promote", str(tiny_model_dir), "--eval", str(eval_path), env=env)
    assert first.returncode == 0, first.stderr
    v1 = registry.pointer("live")
    worker, thread = start(registry.pointer_path("live"), kafka_settings, topics, redis_server,
                           model_dir=registry.pointer_path("live"))
    texts = texts_by_label()["bullish"]
    batches = iter(range(1000))

    seen: set[str] = set()

    def next_versions() -> set[str]:
        """Send a fresh document; the versions of the signals published since the last call."""
        send(kafka_settings, topics.news, docs([texts[next(batches) % len(texts)]], "probe"))
        new = eventually(lambda: [s for s in signals_in(redis_client) if s.id not in seen], timeout_s=30)
        seen.update(s.id for s in new)
        return {s.model.version for s in new}

    try:
        assert next_versions() == {v1}

        # (a) a worse candidate: refused, the failed gates named, live unchanged, the worker still on v1
        refused = finsignal("model", "promote", str(worse_model_dir), "--eval", str(eval_path), env=env)
        assert refused.returncode == 1
        failed = [line for line in refused.stdout.splitlines() if line.startswith("FAIL ")]
        assert any(line.startswith("FAIL accuracy:") for line in failed), refused.stdout
        assert registry.pointer("live") == v1 and registry.history() == [v1]
        time.sleep(1.0)  # several watcher polls
        assert next_versions() == {v1}

        # (b) a passing candidate: live moves and the running worker's next signals carry its version
        passed = finsignal("model", "promote", str(good_model_dir), "--eval", str(eval_path), env=env)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert not any(line.startswith("FAIL") for line in passed.stdout.splitlines())
        v2 = registry.pointer("live")
        assert v2 != v1 and registry.history() == [v1, v2]
        eventually(lambda: next_versions() == {v2}, timeout_s=60, interval_s=0.5)

        # (c) rollback: live is v1 again, in the running worker too
        back = finsignal("model", "rollback", env=env)
        assert back.returncode == 0 and f"live {v2} -> {v1}" in back.stdout
        eventually(lambda: next_versions() == {v1}, timeout_s=60, interval_s=0.5)
    finally:
        worker.stop()
        thread.join(30)

    audit = registry.audit()
    decisions = [(r["action"], r.get("version")) for r in audit if r["action"] != "register"]
    refused_version = next(r["version"] for r in audit if r["action"] == "refuse")
    assert decisions == [("promote", v1), ("refuse", refused_version), ("promote", v2), ("rollback", v1)]
    refusal = next(r for r in audit if r["action"] == "refuse")
    assert "accuracy" in refusal["failed_gates"] and refusal["figures"]["eval"]["candidate"]["accuracy"] < 0.6
    assert (registry.versions_dir / v2 / "reference.json").is_file()  # the drift reference from its eval


def test_force_moves_live_past_failed_gates_and_is_recorded(tiny_model_dir, worse_model_dir, eval_path, tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    env = {"FINSIGNAL_REGISTRY_ROOT": str(registry.root), "FINSIGNAL_GATE_LATENCY_DOCS": "50"}
    assert finsignal("model", "promote", str(tiny_model_dir), "--eval", str(eval_path), env=env).returncode == 0
    forced = finsignal("model", "promote", str(worse_model_dir), "--eval", str(eval_path), "--force", env=env)
    assert forced.returncode == 0 and "FORCED past failed gates" in forced.stdout
    record = registry.audit()[-1]
    assert record["action"] == "promote" and record["forced"] is True and record["passed"] is False
    assert registry.pointer("live") == record["version"]


def test_shadow_signals_go_only_to_the_shadow_streams_and_topic(tiny_model_dir, worse_model_dir, kafka_settings,
                                                                topics, redis_server, redis_client, tmp_path):
    ensure_topics(kafka_settings, topics.all())
    shadow_link = tmp_path / "shadow"
    shadow_link.symlink_to(worse_model_dir)
    compared_before = metrics.SHADOW_COMPARED._value.get()
    worker, thread = start(tiny_model_dir, kafka_settings, topics, redis_server, shadow_dir=shadow_link)
    labelled = texts_by_label()
    sent = docs(labelled["bullish"][:10] + labelled["bearish"][:10] + labelled["neutral"][:10], "shadow")
    try:
        eventually(lambda: worker.shadow is not None and worker.shadow.model is not None, timeout_s=30)
        send(kafka_settings, topics.news, sent)
        eventually(lambda: len(signals_in(redis_client, "shadow:")) == len(sent), timeout_s=60)
    finally:
        worker.stop()
        thread.join(30)
    live_version = SentimentModel.load(tiny_model_dir).info.version
    shadow_version = SentimentModel.load(worse_model_dir).info.version
    live, shadow = signals_in(redis_client), signals_in(redis_client, "shadow:")
    assert {s.model.version for s in live} == {live_version} and len(live) == len(sent)
    assert {s.model.version for s in shadow} == {shadow_version}
    assert {s.document_ids for s in shadow} == {s.document_ids for s in live}  # the same documents
    # Redis: nothing of the shadow under the live names, which is all `signals:*` readers see
    live_keys = {k.decode() for k in redis_client.scan_iter("signals:*")}
    assert live_keys == {stream_key(s) for s in SYMBOLS}
    live_keys, shadow_keys = SignalKeys(), SignalKeys(prefix="shadow:")
    latest = {decode_signal(redis_client.get(live_keys.latest(s))).model.version for s in SYMBOLS}
    assert latest == {live_version}
    assert {decode_signal(redis_client.get(shadow_keys.latest(s))).model.version for s in SYMBOLS} == {shadow_version}
    # Kafka: the audit topic holds live only, signals.shadow the shadow only
    assert {s.model.version for s in topic_signals(kafka_settings, topics.signals)} == {live_version}
    shadow_topic = topic_signals(kafka_settings, topics.signals_shadow)
    assert len(shadow_topic) == len(sent) and {s.model.version for s in shadow_topic} == {shadow_version}
    # agreement figures: every pair compared; the shuffled-label shadow disagrees on some
    assert metrics.SHADOW_COMPARED._value.get() - compared_before == len(sent)
    agree = sum(a.direction is b.direction for a, b in zip(sorted(live, key=lambda s: s.document_ids),
                                                           sorted(shadow, key=lambda s: s.document_ids)))
    assert metrics.SHADOW_AGREEMENT._value.get() == pytest.approx(agree / len(sent))


class Raising:
    """A shadow model that fails every forward pass."""

    def __init__(self, model: SentimentModel) -> None:
        self.inner, self.info, self.max_length = model, model.info, model.max_length

    def encode_chunks(self, texts, overlap):
        return self.inner.encode_chunks(texts, overlap)

    def score_ids(self, batch):
        raise RuntimeError("shadow model exploded")


def test_a_shadow_model_that_always_fails_leaves_live_signals_untouched(tiny_model_dir, worse_model_dir,
                                                                        kafka_settings, topics, redis_server,
                                                                        redis_client, tmp_path):
    ensure_topics(kafka_settings, topics.all())
    shadow_link = tmp_path / "shadow"
    shadow_link.symlink_to(worse_model_dir)
    settings = WorkerSettings()

    def loader(path: Path):
        model = load_backend(path, settings)
        return Raising(model) if path == shadow_link else model

    failures_before = metrics.SHADOW_FAILURES.labels("score")._value.get()
    deadletters_before = metrics.DEADLETTERS.labels("score")._value.get()
    worker, thread = start(tiny_model_dir, kafka_settings, topics, redis_server, loader=loader,
                           shadow_dir=shadow_link, max_wait_ms=5)
    sent = docs(texts_by_label()["bullish"][:20], "raising")
    try:
        eventually(lambda: worker.shadow is not None and worker.shadow.model is not None, timeout_s=30)
        for chunk in (sent[:7], sent[7:14], sent[14:]):  # several batches, each one failing in the shadow
            send(kafka_settings, topics.news, chunk)
            time.sleep(0.3)
        eventually(lambda: len(signals_in(redis_client)) == len(sent), timeout_s=60)
        eventually(lambda: metrics.SHADOW_FAILURES.labels("score")._value.get() > failures_before, timeout_s=30)
    finally:
        worker.stop()
        thread.join(30)
    live = signals_in(redis_client)
    assert {s.document_ids[0] for s in live} == {d.id for d in sent}
    assert {s.model.version for s in live} == {worker.model.info.version}
    assert metrics.DEADLETTERS.labels("score")._value.get() == deadletters_before  # live scored every document
    assert signals_in(redis_client, "shadow:") == [] and not list(redis_client.scan_iter("shadow:*"))
    assert topic_signals(kafka_settings, topics.signals_shadow) == []
    assert len(topic_signals(kafka_settings, topics.signals)) == len(sent)


def drift_run(tiny_model_dir, kafka_settings, topics, redis_server, redis_client, window: list[str]):
    """40 neutral headlines as the warm-up reference, then `window`; the worker's drift figures."""
    ensure_topics(kafka_settings, topics.all())
    worker, thread = start(tiny_model_dir, kafka_settings, topics, redis_server, drift_warmup=40, drift_window=40,
                           drift_min_signals=40, drift_publish_s=0)
    neutral = texts_by_label()["neutral"]
    try:
        send(kafka_settings, topics.news, docs(neutral[:40], "reference"))
        eventually(lambda: worker.drift.reference is not None, timeout_s=60)
        send(kafka_settings, topics.news, docs(window, "window"))
        eventually(lambda: len(worker.drift.window) == len(window), timeout_s=60)
        eventually(lambda: redis_client.keys("finsignal:drift:*"), timeout_s=10)
    finally:
        worker.stop()
        thread.join(30)
    return worker


def test_a_bearish_stream_after_a_neutral_reference_raises_drift_past_the_alert(
        tiny_model_dir, kafka_settings, topics, redis_server, redis_client):
    worker = drift_run(tiny_model_dir, kafka_settings, topics, redis_server, redis_client,
                       texts_by_label()["bearish"][:40])
    threshold = worker.settings.drift_psi_alert
    figures = worker.drift.figures()
    assert figures.psi["all"]["direction"] > threshold
    assert metrics.DRIFT_PSI.labels("direction", "all")._value.get() == figures.psi["all"]["direction"]
    assert metrics.DRIFT_KS_PVALUE._value.get() < worker.settings.drift_ks_alpha
    shown = finsignal("model", "drift", env={"FINSIGNAL_REDIS_URL": redis_server.url})
    assert shown.returncode == 0, shown.stderr
    assert "DRIFT (PSI > 0.25" in shown.stdout and "psi direction/all" in shown.stdout


def test_a_like_for_like_stream_stays_below_the_alert(tiny_model_dir, kafka_settings, topics, redis_server,
                                                      redis_client):
    worker = drift_run(tiny_model_dir, kafka_settings, topics, redis_server, redis_client,
                       texts_by_label()["neutral"][40:80])
    figures = worker.drift.figures()
    assert max(figures.psi["all"].values()) < worker.settings.drift_psi_alert
    assert metrics.DRIFT_PSI.labels("direction", "all")._value.get() == figures.psi["all"]["direction"]
    shown = finsignal("model", "drift", env={"FINSIGNAL_REDIS_URL": redis_server.url})
    assert "no drift" in shown.stdout
