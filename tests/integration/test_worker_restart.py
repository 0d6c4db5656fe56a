"""kill -9 the worker mid-stream and start it again: every document yields exactly one visible signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ingest.kafka import ensure_topics, make_producer
from signals.redis_sink import stream_key
from tests.conftest import FAST_GROUP, eventually
from tests.integration.test_pipeline import make_docs

pytestmark = pytest.mark.integration


def spawn_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "finsignal.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def entries(redis_client, symbols) -> list[bytes]:
    return [fields[b"id"] for s in symbols for _, fields in redis_client.xrange(stream_key(s))]


def test_kill_and_restart_loses_nothing_and_duplicates_nothing(tiny_model_dir, kafka_settings, topics,
                                                               redis_server, redis_client):
    ensure_topics(kafka_settings, topics.all())
    docs = make_docs(300)
    producer = make_producer(kafka_settings)
    for doc in docs:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.flush()
    symbols = {s for d in docs for s in d.symbols}
    env = {
        **os.environ,
        "FINSIGNAL_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
        "FINSIGNAL_KAFKA_SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        "FINSIGNAL_KAFKA_HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
        "FINSIGNAL_REDIS_URL": redis_server.url,
        "FINSIGNAL_WORKER_MODEL_DIR": str(tiny_model_dir),
        "FINSIGNAL_WORKER_GROUP_ID": f"restart-{topics.news}",
        # Many small flushes, each a publish then a commit: a kill lands between the two.
        "FINSIGNAL_WORKER_MAX_BATCH": "1",
        "FINSIGNAL_WORKER_MAX_PENDING": "2",
        **{f"FINSIGNAL_TOPICS_{k.upper()}": v for k, v in topics.model_dump().items()},
    }

    first = spawn_worker(env)
    try:
        eventually(lambda: len(entries(redis_client, symbols)) >= 20, timeout_s=90)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    at_kill = len(entries(redis_client, symbols))
    assert at_kill < len(docs), "worker finished before the kill; the test would prove nothing"

    second = spawn_worker(env)
    try:
        eventually(lambda: len(entries(redis_client, symbols)) >= len(docs), timeout_s=120)
        time.sleep(1.0)  # a late duplicate would show up here
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err.decode()[-2000:]

    ids = entries(redis_client, symbols)
    assert len(ids) == len(docs)
    assert len(set(ids)) == len(docs)
