"""The cost of shadowing: live throughput of the worker with and without a shadow model, in one run.

The live model is the demo model; the shadow is a copy of it with perturbed classifier weights (same size,
so exactly one more forward pass of the same cost). For each run a backlog of documents is on fresh topics
before the worker starts, and the worker flushes at most 64 documents at a time; live throughput is the
documents published after the first live signal readable in Redis over the time to the last (the group
join and the first batch are left out). Runs alternate off/on and each mode keeps its best. The CPU time
this process spent per live document in that window is printed beside it: on a machine shared with other
work, wall-clock throughput swings with their load, CPU time much less. With a shadow, the table also
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

MAX_PENDING = 64
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
    producer = make_producer(kafka)
    for i in range(backlog):
        d = _doc(texts[i % len(texts)], i, tag)
        producer.send(topics.news, key=d.key, value=d.to_bytes())
    producer.flush()
    producer.close()
    # Flushes of at most MAX_PENDING documents: many live batches, each handed to the shadow in turn.
    settings = WorkerSettings(group_id=f"bench-{tag}", market_context=False, link_symbols=False, model_poll_s=0,
                              max_pending=MAX_PENDING, shadow_dir=shadow_dir, drift_publish_s=60)
    shadow_model = load_backend(shadow_dir, settings) if shadow_dir is not None else None
    worker = Worker(model, kafka=kafka, topics=topics, redis_settings=RedisSettings(url=redis_url),
                    settings=settings, model_loader=lambda path: shadow_model or load_backend(path, settings))
    dropped_before = metrics.SHADOW_DROPPED._value.get()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    _wait_for(client, "", 1)  # the group joined and the first batch is out: the clock starts here
    first_at, first_n, cpu0 = time.perf_counter(), _count(client, ""), time.process_time()
    _wait_for(client, "", backlog)
    live_s = time.perf_counter() - first_at
    cpu_s = time.process_time() - cpu0  # every thread of this process: worker, shadow, this loop
    shadowed = _count(client, settings.shadow_prefix)
    worker.stop()
    thread.join(300)
    client.close()
    return {"shadow": "on" if shadow_dir else "off", "documents": backlog - first_n, "live_seconds": live_s,
            "live_docs_per_s": (backlog - first_n) / live_s,
            "cpu_ms_per_doc": cpu_s * 1000 / (backlog - first_n), "shadowed_when_live_done": shadowed,
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
