"""Soak: the highest document rate the real worker holds with bounded memory and lag that does not grow.

The worker runs as its own process (`finsignal worker`, demo model) on the embedded broker and
Redis, so its resident memory is read from /proc alone. A producer thread publishes documents at a
fixed rate; every second we sample the worker's RSS and the consumer lag (end offsets minus the
group's committed offsets: documents not yet safely published).

1. Ladder: rates doubling from `START_RATE`, each held for `step_s`; a rate is held when the lag
   at the end of the step is under two seconds' worth of documents and the median lag over the
   last third of the step is no higher than over the first third (plus half a second's worth).
2. Soak: the highest rate held is kept for `soak_s` (several minutes; 30 s with --quick); the
   report gives lag and RSS at start and end, the RSS growth over the second half, and whether it
   was held again.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from benchmarks.e2e import SYMBOLS, _texts
from finsignal.demo import demo_model_dir
from finsignal.embedded import EmbeddedKafka, EmbeddedRedis
from ingest.contracts import Document
from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings, TopicSettings

TITLE = "soak: highest steady document rate held with bounded RSS and non-growing lag (worker process, demo model)"
START_RATE = 10.0
MAX_STEPS = 8
FAST_GROUP = {"FINSIGNAL_KAFKA_SESSION_TIMEOUT_MS": "6000", "FINSIGNAL_KAFKA_HEARTBEAT_INTERVAL_MS": "2000"}


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class LagProbe:
    """Committed-offset lag of the worker's group on the news topic."""

    def __init__(self, kafka: KafkaSettings, topic: str, group: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(**kafka.client_options(), group_id=group, enable_auto_commit=False)
        self.parts = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]

    def lag(self) -> int:
        ends = self.consumer.end_offsets(self.parts)
        return sum(max(0, ends[tp] - (self.consumer.committed(tp) or 0)) for tp in self.parts)

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Step:
    rate: float
    seconds: float
    lag: list[int] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    sent: int = 0

    def held(self) -> bool:
        # Medians, so one slow flush (the machine is shared) is not read as a trend.
        third = max(1, len(self.lag) // 3)
        first, last = statistics.median(self.lag[:third]), statistics.median(self.lag[-third:])
        return self.lag[-1] <= 2 * self.rate and last <= first + 0.5 * self.rate

    def row(self, phase: str) -> dict:
        half = len(self.rss) // 2
        return {
            "phase": phase, "rate_docs_s": self.rate, "seconds": self.seconds, "sent": self.sent,
            "lag_start": self.lag[0], "lag_max": max(self.lag), "lag_end": self.lag[-1],
            "rss_start_mb": round(self.rss[0], 1), "rss_end_mb": round(self.rss[-1], 1),
            "rss_growth_2nd_half_mb": round(self.rss[-1] - self.rss[half], 1), "held": self.held(),
        }


class Pacer(threading.Thread):
    """Publishes documents at `rate` per second until stopped."""

    def __init__(self, kafka: KafkaSettings, topic: str, rate: float, texts: list[str], run: str) -> None:
        super().__init__(daemon=True)
        self.producer = make_producer(kafka)
        self.topic, self.rate, self.texts, self.run_id = topic, rate, texts, run
        self.sent = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                i = self.sent
                now = time.time_ns()
                doc = Document.create(kind="news", source=f"soak-{self.run_id}", title=self.texts[i % len(self.texts)],
                                      url=f"https://soak.local/{self.run_id}/{i}", symbols=[SYMBOLS[i % len(SYMBOLS)]],
                                      ts_event=now, ts_ingest=now)
                self.producer.send(self.topic, key=doc.key, value=doc.to_bytes())
                self.sent += 1
            time.sleep(0.005)
        self.producer.flush()
        self.producer.close()


def hold(kafka: KafkaSettings, topic: str, probe: LagProbe, pid: int, rate: float, seconds: float,
         texts: list[str]) -> Step:
    """Publish at `rate` for `seconds`, sampling lag and RSS every second."""
    step = Step(rate, seconds)
    pacer = Pacer(kafka, topic, rate, texts, uuid.uuid4().hex[:8])
    pacer.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        step.lag.append(probe.lag())
        step.rss.append(rss_mb(pid))
    pacer.stop_event.set()
    pacer.join(30)
    step.sent = pacer.sent
    return step


def drain(probe: LagProbe, timeout_s: float = 120.0) -> None:
    """Wait until the worker has caught up, so each step starts from an empty backlog."""
    deadline = time.monotonic() + timeout_s
    while probe.lag() > 0 and time.monotonic() < deadline:
        time.sleep(0.5)


def run(quick: bool) -> list[dict]:
    step_s, soak_s = (6.0, 30.0) if quick else (30.0, 300.0)
    model = demo_model_dir(progress=False)
    texts = _texts()
    rows: list[dict] = []
    with EmbeddedKafka() as broker, EmbeddedRedis() as redis_server:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        topics = TopicSettings()
        ensure_topics(kafka, topics.all())
        group = f"soak-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, **FAST_GROUP, "FINSIGNAL_KAFKA_BOOTSTRAP": broker.bootstrap,
               "FINSIGNAL_REDIS_URL": redis_server.url, "FINSIGNAL_WORKER_MODEL_DIR": str(model),
               "FINSIGNAL_WORKER_GROUP_ID": group, "FINSIGNAL_WORKER_MARKET_CONTEXT": "false",
               "FINSIGNAL_LOG_LEVEL": "WARNING"}
        worker = subprocess.Popen([sys.executable, "-m", "finsignal.cli", "worker"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = LagProbe(kafka, topics.news, group)
        try:
            warm = hold(kafka, topics.news, probe, worker.pid, 2.0, 2.0, texts)  # the group joins meanwhile
            drain(probe)
            rows.append(warm.row("warm-up") | {"held": probe.lag() == 0})
            best: float | None = None
            rate = START_RATE
            for _ in range(MAX_STEPS):
                step = hold(kafka, topics.news, probe, worker.pid, rate, step_s, texts)
                rows.append(step.row("ladder"))
                drain(probe)
                if not step.held():
                    break
                best, rate = rate, rate * 2
            if best is not None:
                rows.append(hold(kafka, topics.news, probe, worker.pid, best, soak_s, texts).row("soak"))
        finally:
            probe.close()
            worker.terminate()
            worker.wait(60)
    return rows
