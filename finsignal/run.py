"""`finsignal run`: the whole pipeline on one machine, embedded broker and Redis by default."""

from __future__ import annotations

import asyncio
import contextlib
import signal as signal_module
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings, TopicSettings
from signals.settings import RedisSettings, WorkerSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Infrastructure:
    """Where Kafka and Redis are, for this run."""

    kafka: KafkaSettings
    redis: RedisSettings


@contextlib.contextmanager
def infrastructure(kafka: KafkaSettings, redis: RedisSettings) -> Iterator[Infrastructure]:
    """Use the configured Kafka and Redis, starting embedded ones for whatever is not configured."""
    from finsignal.embedded import EmbeddedKafka, EmbeddedRedis

    with contextlib.ExitStack() as stack:
        if not kafka.bootstrap:
            broker = stack.enter_context(EmbeddedKafka())
            kafka = kafka.model_copy(update={"bootstrap": broker.bootstrap})
            log.info("run.embedded_kafka", bootstrap=broker.bootstrap)
        if not redis.url:
            server = stack.enter_context(EmbeddedRedis())
            redis = redis.model_copy(update={"url": server.url})
            log.info("run.embedded_redis", url=server.url)
        yield Infrastructure(kafka, redis)


def run(
    replay_dir: Path | None = None,
    speed: float | None = 1.0,
    duration_s: float | None = None,
    symbols: list[str] | None = None,
    quiet: bool = False,
) -> int:
    """Run ingest (live or replayed), the worker and a signal tail until Ctrl-C or `duration_s`.

    Returns the number of signals shown.
    """
    from finsignal.demo import demo_model_dir
    from signals.backends import load_backend
    from signals.worker import Worker

    worker_settings = WorkerSettings()
    topics = TopicSettings()
    stop = threading.Event()
    _install_signal_handlers(stop)
    with infrastructure(KafkaSettings(), RedisSettings()) as infra:
        ensure_topics(infra.kafka, topics.all())
        model_dir = worker_settings.model_dir or demo_model_dir()
        model = load_backend(model_dir, worker_settings)
        _log_model(model_dir)
        worker = Worker(model, kafka=infra.kafka, topics=topics, redis_settings=infra.redis, settings=worker_settings,
                        model_loader=lambda path: load_backend(path, worker_settings))
        threads = [threading.Thread(target=worker.run, name="worker", daemon=True)]
        if replay_dir is not None:
            threads.append(threading.Thread(
                target=_replay, args=(replay_dir, infra.kafka, speed, stop), name="replay", daemon=True))
        else:
            from ingest.live import run_ingestors

            threads.append(threading.Thread(
                target=run_ingestors, args=(infra.kafka, topics, stop), kwargs={"redis_url": infra.redis.url},
                name="ingest", daemon=True))
        for t in threads:
            t.start()
        shown = asyncio.run(_show(infra.redis, symbols, stop, duration_s, quiet))
        stop.set()
        worker.stop()
        for t in threads:
            t.join(timeout=30)
        log.info("run.stopped", signals_shown=shown)
        return shown


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("run.stopping", signal=signal_module.Signals(signum).name)
        stop.set()

    signal_module.signal(signal_module.SIGINT, handler)
    signal_module.signal(signal_module.SIGTERM, handler)


def _log_model(model_dir: Path) -> None:
    """Say which model scores, and what its eval accuracy was measured on."""
    from finsignal.demo import eval_accuracy, training_data

    card = training_data(model_dir)
    fields = {"path": str(model_dir), "eval_accuracy": eval_accuracy(model_dir)}
    if card is None:
        log.info("run.model", **fields, training_data="not recorded")
    elif card.get("real_news") is False:
        # The demo model: a number like 0.9 on template headlines must not pass for real-world skill.
        log.warning("run.model", **fields, training_data=card.get("kind"), real_news=False, caveat=card.get("caveat"))
    else:
        log.info("run.model", **fields, training_data=card.get("kind"))


def _replay(directory: Path, kafka: KafkaSettings, speed: float | None, stop: threading.Event) -> None:
    from ingest.recording import replay

    producer = make_producer(kafka)
    try:
        replay(directory, producer, speed=speed, restamp=True, should_stop=stop.is_set)
    except Exception:
        log.exception("run.replay_failed", directory=str(directory))
        stop.set()
    finally:
        producer.close(timeout=10)


async def _show(redis_settings: RedisSettings, symbols: list[str] | None, stop: threading.Event,
                duration_s: float | None, quiet: bool) -> int:
    from consumers.watch import print_signals, tail
    from ingest.redis_client import async_client
    from signals.contracts import Signal

    client = async_client(redis_settings)
    printer = print_signals()
    shown = 0

    def handler(sig: Signal) -> None:
        nonlocal shown
        shown += 1
        if not quiet:
            printer(sig)

    task = asyncio.create_task(tail(client, symbols, handler, from_start=True, block_ms=200))
    loop = asyncio.get_running_loop()
    deadline = None if duration_s is None else loop.time() + duration_s
    try:
        while not stop.is_set() and not task.done() and (deadline is None or loop.time() < deadline):
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
    return shown
