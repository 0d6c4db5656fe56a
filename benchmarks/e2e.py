"""End-to-end latency and throughput: document produced to Kafka -> signal readable in Redis.

For each worker batch size (1 and 32), on the embedded broker and Redis with the demo model:
- throughput: a backlog of documents is already on the topic when the worker starts; documents/s
  until the last signal is readable;
- latency: documents produced at a steady rate (a quarter of the batch-1 throughput, at most 50/s,
  the same for every batch size), each one's latency measured from its produce time to the
  moment a reader sees it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from finsignal.demo import demo_model_dir, sample_corpus
from finsignal.embedded import EmbeddedKafka, EmbeddedRedis
from ingest.contracts import Document
from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings, TopicSettings
from signals.model import SentimentModel
from signals.redis_sink import stream_key
from signals.settings import RedisSettings, WorkerSettings
from signals.worker import Worker

TITLE = "end-to-end latency and throughput, demo model, embedded Kafka + Redis"
SYMBOLS = ("AAPL", "TSLA", "BTCUSDT", "ETHUSDT")
ROOT = Path(__file__).resolve().parents[1]
SHARED_TEST = ROOT.parent / "shared" / "data" / "twitter_fin_news_test.jsonl"


def _texts() -> list[str]:
    """Real headlines when the shared set is beside the checkout, else the shipped sample."""
    path = SHARED_TEST if SHARED_TEST.is_file() else sample_corpus()[1]
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _doc(text: str, i: int, run: str) -> Document:
    now = time.time_ns()
    return Document.create(kind="news", source=f"bench-{run}", title=text, url=f"https://bench.local/{run}/{i}",
                           symbols=[SYMBOLS[i % len(SYMBOLS)]], ts_event=now, ts_ingest=now)


class _Reader(threading.Thread):
    """Records the wall time at which each signal becomes readable."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.seen: dict[str, int] = {}
        self.ingest: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        cursors = {stream_key(s): "0-0" for s in SYMBOLS}
        while not self.stop.is_set():
            for stream, entries in self.client.xread(cursors, block=50, count=1000) or []:
                now = time.time_ns()
                for entry_id, fields in entries:
                    cursors[stream.decode()] = entry_id
                    sig = json.loads(fields[b"signal"])
                    self.seen[sig["document_ids"][0]] = now
                    self.ingest[sig["document_ids"][0]] = sig["ts_ingest"]


def _scenario(kafka: KafkaSettings, redis_url: str, model: SentimentModel, batch: int, texts: list[str],
              backlog: int, rate: float | None, seconds: float) -> dict:
    tag = uuid.uuid4().hex[:6]
    topics = TopicSettings(**{k: f"{v}.{tag}" for k, v in TopicSettings().model_dump().items()})
    ensure_topics(kafka, topics.all())
    redis.Redis.from_url(redis_url).flushall()
    producer = make_producer(kafka, linger_ms=0)
    reader = _Reader(redis_url)
    reader.start()
    worker = Worker(model, kafka=kafka, topics=topics, redis_settings=RedisSettings(url=redis_url),
                    settings=WorkerSettings(group_id=f"bench-{tag}", max_batch=batch, poll_timeout_ms=20,
                                            market_context=False))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    # Warm up: the group join and first fetch are not part of throughput or steady-state latency.
    warm = _doc(texts[0], -1, tag)
    producer.send(topics.news, key=warm.key, value=warm.to_bytes())
    producer.flush()
    while warm.id not in reader.seen:
        time.sleep(0.01)
    result: dict = {}
    if backlog:
        # A burst produced much faster than it can be scored: the worker runs flat out.
        docs = [_doc(texts[i % len(texts)], i, tag) for i in range(backlog)]
        began = time.time_ns()
        for d in docs:
            producer.send(topics.news, key=d.key, value=d.to_bytes())
        producer.flush()
        while any(d.id not in reader.seen for d in docs):
            time.sleep(0.01)
        span = (max(reader.seen[d.id] for d in docs) - began) / 1e9
        result["docs_per_s"] = backlog / span
    if rate:
        sent: list[str] = []
        start = time.perf_counter()
        i = backlog
        while time.perf_counter() - start < seconds:
            due = start + len(sent) / rate
            if time.perf_counter() < due:
                time.sleep(min(due - time.perf_counter(), 0.01))
                continue
            d = _doc(texts[i % len(texts)], i, tag)
            producer.send(topics.news, key=d.key, value=d.to_bytes())
            producer.flush()  # each document leaves now, as a live ingestor would send it
            sent.append(d.id)
            i += 1
        deadline = time.time() + 30
        while any(s not in reader.seen for s in sent) and time.time() < deadline:
            time.sleep(0.02)
        lat = np.array([(reader.seen[s] - reader.ingest[s]) / 1e6 for s in sent if s in reader.seen])
        result.update(rate_docs_per_s=rate, sent=len(sent), delivered=len(lat),
                      p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)))
    worker.stop()
    thread.join(30)
    reader.stop.set()
    reader.join(5)
    producer.close()
    return result


def compressed_demo_dir() -> Path:
    """The demo model after int8 post-training quantization by the compressor (built once, cached)."""
    from compressor.pipeline import compress_run
    from compressor.recipe import Recipe, QuantizeSpec
    from finsignal.demo import cache_dir

    dense = demo_model_dir(progress=False)
    out = cache_dir() / "models" / f"{dense.name}-int8"
    if not (out / "w8a8" / "finsignal.json").is_file():
        train_path, eval_path = sample_corpus()
        recipe = Recipe(name="e2e-int8", stages=[QuantizeSpec(mode="ptq")], comparisons=[], baselines=[])
        compress_run(dense, train_path, eval_path, out, recipe, overwrite=True, progress=False)
    return out / "w8a8"


def run(quick: bool = False) -> list[dict]:
    texts = _texts()
    model = SentimentModel.load(demo_model_dir(progress=False))
    backlog = 300 if quick else 2000
    seconds = 5 if quick else 20
    rows = []
    with EmbeddedKafka() as broker, EmbeddedRedis() as server:
        kafka = KafkaSettings(bootstrap=broker.bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=2000)
        capacity = {}
        for batch in (1, 32):
            capacity[batch] = _scenario(kafka, server.url, model, batch, texts, backlog, None, 0)["docs_per_s"]
        # A steady rate well inside batch-1 capacity: the backlog figure amortizes a commit over
        # many documents, a live trickle pays it per flush.
        rate = round(min(capacity[1] * 0.25, 50.0), 1)
        for batch in (1, 32):
            steady = _scenario(kafka, server.url, model, batch, texts, 0, rate, seconds)
            rows.append({"batch": batch, "throughput_docs_s": capacity[batch], **steady})
        # Dense against compressed, same rate, default batching.
        compressed = SentimentModel.load(compressed_demo_dir())
        for name, candidate in (("dense fp32", model), ("int8 (compressor)", compressed)):
            steady = _scenario(kafka, server.url, candidate, 32, texts, 0, rate, seconds)
            rows.append({"batch": f"32, {name}", **steady})
        rows += _pretrained_rows(kafka, server.url, texts, backlog, rate, seconds)
    rows.append({"batch": "32 vs 1", "throughput_docs_s": capacity[32] / capacity[1]})
    return rows


def pretrained_dir() -> Path | None:
    """The compressed pretrained model (`python -m benchmarks pretrained` writes it), or $FINSIGNAL_E2E_PRETRAINED."""
    import os

    configured = os.environ.get("FINSIGNAL_E2E_PRETRAINED")
    path = Path(configured) if configured else ROOT / "artifacts" / "bench-pretrained" / "compressed" / "w8a8"
    return path if (path / "finsignal.json").is_file() else None


def _pretrained_rows(kafka: KafkaSettings, redis_url: str, texts: list[str], backlog: int, rate: float,
                     seconds: float) -> list[dict]:
    """The compressed fine-tuned SmolLM2 through the same worker: capacity at batch 32, then a steady rate
    that it holds (the demo rate, or half its capacity if that is lower)."""
    directory = pretrained_dir()
    if directory is None:
        return [{"batch": "32, SmolLM2 fine-tuned int8", "note": "skipped: no compressed pretrained model "
                 "(run `python -m benchmarks pretrained` first or set FINSIGNAL_E2E_PRETRAINED)"}]
    model = SentimentModel.load(directory)
    capacity = _scenario(kafka, redis_url, model, 32, texts, backlog, None, 0)["docs_per_s"]
    steady_rate = round(min(rate, capacity * 0.5), 1)
    steady = _scenario(kafka, redis_url, model, 32, texts, 0, steady_rate, seconds)
    return [{"batch": f"32, SmolLM2 fine-tuned int8 @ {steady_rate}/s", "throughput_docs_s": capacity, **steady}]
