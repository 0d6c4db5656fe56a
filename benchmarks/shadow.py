"""The cost of shadowing: live throughput of the worker with and without a shadow model, in one run.

The live model is the demo model; the shadow is a copy of it with perturbed classifier weights (same size,
so exactly one more forward pass of the same cost). For each run, on fresh topics, the worker starts and
scores one warm-up document (and the shadow one); then a burst of documents is produced much faster than
it can be scored, and live throughput is the burst's size over the time from its first send to its last
live signal readable in Redis. Runs alternate off/on and each mode keeps its best. With a shadow, the table also
says how much of the stream the shadow covered and how many batches it dropped to keep live on time.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

from benchmarks.e2e import SYMBOLS, _doc, _texts
from finsignal.demo import demo_model_dir
from finsignal.embedded import EmbeddedKafka, EmbeddedRedis
from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings, TopicSettings
from signals import metrics
from signals.backends import load_backend
from signals.model import SentimentModel
from signals.redis_sink import stream_key
from signals.settings import RedisSettings, WorkerSettings
from signals.worker import Worker

TITLE = "shadow scoring cost: live throughput with and without a shadow model (demo model, CPU)"


def perturbed_copy(src: Path, dst: Path) -> Path:
    """A second model of the same size: classifier weights scaled by 1 +- 1% noise."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    gen = torch.Generator().manual_seed(7)
    weights["score.weight"] = weights["score.weight"] * (1 + 0.01 * torch.randn(weights["score.weight"].shape,
                                                                                generator=gen))
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "finsignal.json").unlink(missing_ok=True)  # its version becomes its own weights hash
    return dst


def _count(client: redis.Redis, prefix: str) -> int:
    return sum(client.xlen(prefix + stream_key(s)) for s in SYMBOLS)


def _wait_for(client: redis.Redis, prefix: str, count: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while _count(client, prefix) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} signals under {prefix!r} not seen within {timeout_s}s")
        time.sleep(0.005)


def _run(kafka: KafkaSettings, redis_url: str, model: SentimentModel, shadow_dir: Path | None, texts: list[str],
         backlog: int) -> dict:
    tag = uuid.uuid4().hex[:6]
    topics = TopicSettings(**{k: f"{v}.{tag}" for k, v in TopicSettings().model_dump().items()})
    ensure_topics(kafka, topics.all())
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    settings = WorkerSettings(group_id=f"bench-{tag}", market_context=False, link_symbols=False, model_poll_s=0,
                              poll_timeout_ms=20, shadow_dir=shadow_dir, drift_publish_s=60)
    worker = Worker(model, kafka=kafka, topics=topics, redis_settings=RedisSettings(url=redis_url),
                    settings=settings, model_loader=lambda path: load_backend(path, settings))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    producer = make_producer(kafka, linger_ms=0)
    # Warm up: group join, first fetch, and (with a shadow) its model loaded and one batch shadowed.
    warm = _doc(texts[0], -1, tag)
    producer.send(topics.news, key=warm.key, value=warm.to_bytes())
    producer.flush()
    _wait_for(client, "", 1)
    if shadow_dir is not None:
        _wait_for(client, settings.shadow_prefix, 1)
    dropped_before = metrics.SHADOW_DROPPED._value.get()
    # A burst produced much faster than it can be scored: the worker runs flat out.
    docs = [_doc(texts[i % len(texts)], i, tag) for i in range(backlog)]
    began = time.perf_counter()
    for d in docs:
        producer.send(topics.news, key=d.key, value=d.to_bytes())
    producer.flush()
    _wait_for(client, "", backlog + 1)
    live_s = time.perf_counter() - began
    shadowed = _count(client, settings.shadow_prefix) - 1 if shadow_dir else 0
    worker.stop()
    thread.join(120)
    producer.close()
    client.close()
    return {"shadow": "on" if shadow_dir else "off", "documents": backlog, "live_seconds": live_s,
            "live_docs_per_s": backlog / live_s, "shadowed_when_live_done": shadowed,
            "shadow_batches_dropped": int(metrics.SHADOW_DROPPED._value.get() - dropped_before)}


def run(quick: bool = False) -> list[dict]:
    live_dir = demo_model_dir(progress=False)
    model = SentimentModel.load(live_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    shadow_dir = perturbed_copy(live_dir, work / "shadow")
    texts = _texts()
    backlog = 300 if quick else 800
    rounds = 1 if quick else 3
    best: dict[str, dict] = {}
    try:
        with EmbeddedKafka() as broker, EmbeddedRedis() as server:
            kafka = KafkaSettings(bootstrap=broker.bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=2000)
            for _ in range(rounds):
                for shadow in (None, shadow_dir):
                    row = _run(kafka, server.url, model, shadow, texts, backlog)
                    if row["live_docs_per_s"] > best.get(row["shadow"], {}).get("live_docs_per_s", 0):
                        best[row["shadow"]] = row
    finally:
        shutil.rmtree(work, ignore_errors=True)
    off, on = best["off"], best["on"]
    on["live_ratio_vs_off"] = on["live_docs_per_s"] / off["live_docs_per_s"]
    off["live_ratio_vs_off"] = 1.0
    return [off, on]
