"""`finsignal record` writes what replay reads; `run_ingestors` runs the configured sources until stopped."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from ingest.contracts import Document, decode_document
from ingest.kafka import ensure_topics, make_producer
from ingest.live import run_ingestors
from ingest.recording import read_recording
from ingest.runner import IngestSettings
from tests.conftest import eventually
from tests.ingest.kafka_io import read_topic
from tests.ingest.servers import FIXTURES

pytestmark = pytest.mark.integration


def finsignal(kafka_settings, *args: str) -> subprocess.CompletedProcess:
    """The real command line, in its own process (its logging setup stays out of this one)."""
    env = {**os.environ, "FINSIGNAL_KAFKA_BOOTSTRAP": kafka_settings.bootstrap, "FINSIGNAL_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "finsignal.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_record_cli_captures_topics_in_the_recording_format(kafka_settings, topics, tmp_path, monkeypatch):
    ensure_topics(kafka_settings, topics.all())
    now = time.time_ns()
    docs = [Document.create(kind="news", source="t", title=f"Headline {i}", url=f"https://e.x/{i}",
                            ts_event=now - i, ts_ingest=now) for i in range(3)]
    producer = make_producer(kafka_settings)
    for doc in docs:
        producer.send(topics.news, key=doc.key, value=doc.to_bytes())
    producer.send(topics.trade, key=b"BTCUSDT", value=b"\xffnot utf-8")
    producer.flush()
    producer.close()
    out = tmp_path / "rec"

    result = finsignal(kafka_settings, "record", "--topics", f"{topics.news},{topics.trade}", "--out", str(out),
                       "--from-beginning", "--max-records", "4", "--duration", "20")

    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["topics"] == {topics.news: 3, topics.trade: 1}
    played = list(read_recording(out))
    assert sorted(decode_document(m.value).id for m in played if m.topic == topics.news) == sorted(d.id for d in docs)
    news_ts = {decode_document(m.value).id: m.ts for m in played if m.topic == topics.news}
    assert news_ts == {d.id: d.ts_event for d in docs}  # event time, so replay orders by when things happened
    assert [m.value for m in played if m.topic == topics.trade] == [b"\xffnot utf-8"]  # bytes kept exactly


def test_record_refuses_a_missing_topic(kafka_settings, tmp_path):
    result = finsignal(kafka_settings, "record", "--topics", "no-such-topic-xyz", "--out", str(tmp_path / "r"),
                       "--duration", "1")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_run_ingestors_runs_news_until_stopped_and_skips_filings_without_user_agent(kafka_settings, topics,
                                                                                     monkeypatch):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(FIXTURES / "news"))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setenv("FINSIGNAL_NEWS_FEEDS", json.dumps([f"http://127.0.0.1:{port}/markets.rss",
                                                           f"http://127.0.0.1:{port}/press.atom"]))
    monkeypatch.delenv("FINSIGNAL_FILINGS_USER_AGENT", raising=False)
    monkeypatch.delenv("FINSIGNAL_REDIS_URL", raising=False)
    stop = threading.Event()
    thread = threading.Thread(target=run_ingestors, args=(kafka_settings, topics, stop),
                              kwargs={"ingest": IngestSettings(sources=["news", "filings"], stats_interval_s=0.5)})
    try:
        thread.start()
        eventually(lambda: len(read_topic(kafka_settings, topics.news, 5, timeout_s=2, settle_s=0)) >= 5)
    finally:
        stop.set()
        thread.join(30)
        server.shutdown()
    assert not thread.is_alive()
    docs = [decode_document(r.value) for r in read_topic(kafka_settings, topics.news, 5)]
    assert len(docs) == 5 and {d.source for d in docs} == {"feed:127.0.0.1"}
