"""`finsignal run`: the whole pipeline on one machine, embedded broker and Redis by default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signal_module
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ingest.kafka import ensure_topics, make_producer
from ingest.settings import KafkaSettings, TopicSettings
from finsignal.errors import PipelineFailed
from signals.settings import RedisSettings, WorkerSettings

if TYPE_CHECKING:
    from finsignal.embedded import _Service

log = structlog.get_logger(__name__)


# Shutdown waits are bounded: a part stuck on a dead service must not hold the operator's Ctrl-C.
SHUTDOWN_S = 15.0  # time for the worker to publish and commit what it holds
ABANDON_S = 3.0  # after a service died: what is still waiting on it will not finish
SUPERVISE_S = 0.1  # how often the embedded services are looked at


@dataclass(frozen=True)
class Infrastructure:
    """Where Kafka and Redis are, for this run, and the embedded services started for it."""

    kafka: KafkaSettings
    redis: RedisSettings
    embedded: tuple[_Service, ...] = ()

    def failure(self) -> str | None:
        """Why an embedded service is gone, if one exited without being asked to."""
        reason = next((reason for s in self.embedded if (reason := s.exit_reason()) is not None), None)
        return None if reason is None else f"{reason}; the pipeline stopped: run it again"


class _Failures:
    """The first reason the pipeline must stop, from whichever thread sees it."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self.first: str | None = None

    def add(self, reason: str) -> None:
        with self._lock:
            if self.first is None:
                self.first = reason
        self._stop.set()


@contextlib.contextmanager
def infrastructure(kafka: KafkaSettings, redis: RedisSettings) -> Iterator[Infrastructure]:
    """Use the configured Kafka and Redis, starting embedded ones for whatever is not configured."""
    from finsignal.embedded import EmbeddedKafka, EmbeddedRedis

    embedded: list[_Service] = []
    with contextlib.ExitStack() as stack:
        if not kafka.bootstrap:
            broker = stack.enter_context(EmbeddedKafka())
            embedded.append(broker)
            kafka = kafka.model_copy(update={"bootstrap": broker.bootstrap})
            log.info("run.embedded_kafka", bootstrap=broker.bootstrap)
        if not redis.url:
            server = stack.enter_context(EmbeddedRedis())
            embedded.append(server)
            redis = redis.model_copy(update={"url": server.url})
            log.info("run.embedded_redis", url=server.url)
        yield Infrastructure(kafka, redis, tuple(embedded))


def preflight(kafka: KafkaSettings, redis: RedisSettings, worker: WorkerSettings) -> None:
    """Check what is configured before starting anything: external services answer, the model directory is one."""
    from finsignal.service import check_model_dir
    from ingest.reachability import check_kafka, check_redis
    from ingest.settings import ConfigError
    from signals.model import ModelLoadError

    if kafka.bootstrap:
        check_kafka(kafka, hint=", or unset it to use an embedded broker")
    if redis.url:
        check_redis(redis, hint=", or unset it to use an embedded Redis")
    if worker.model_dir is not None:
        try:
            check_model_dir(worker.model_dir, worker)
        except ModelLoadError as exc:
            raise ConfigError(f"FINSIGNAL_WORKER_MODEL_DIR: {exc}; point it at a directory written by "
                              "`finsignal compress train`, or unset it for the demo model") from None


def run(
    replay_dir: Path | None = None,
    speed: float | None = 1.0,
    duration_s: float | None = None,
    symbols: list[str] | None = None,
    quiet: bool = False,
) -> int:
    """Run ingest (live or replayed), the worker and a signal tail until Ctrl-C or `duration_s`.

    Returns the number of signals shown; raises `PipelineFailed` when a part stopped it (an
    embedded service died, the recording broke, the worker failed).
    """
    from finsignal.demo import demo_model_dir
    from finsignal.service import announce_model
    from signals.backends import load_backend
    from signals.worker import Worker

    worker_settings, topics, kafka, redis = WorkerSettings(), TopicSettings(), KafkaSettings(), RedisSettings()
    preflight(kafka, redis, worker_settings)
    stop = threading.Event()
    failures = _Failures(stop)
    _install_signal_handlers(stop)
    with infrastructure(kafka, redis) as infra:
        try:
            ensure_topics(infra.kafka, topics.all())
            model_dir = worker_settings.model_dir or demo_model_dir()
            model = load_backend(model_dir, worker_settings)
        except Exception:
            if infra.failure() is None:
                raise
        if infra.failure() is not None:  # a service died while we set up
            raise PipelineFailed(infra.failure())
        _log_model(model_dir)
        announce_model(model, model_dir, worker_settings, demo=worker_settings.model_dir is None)
        worker = Worker(model, kafka=infra.kafka, topics=topics, redis_settings=infra.redis, settings=worker_settings,
                        model_loader=lambda path: load_backend(path, worker_settings))
        threads = [_thread("worker", worker.run, failures)]
        if replay_dir is not None:
            threads.append(_thread("replay", lambda: _replay(replay_dir, infra.kafka, speed, stop), failures))
        else:
            from ingest.live import run_ingestors

            threads.append(_thread("ingest", lambda: run_ingestors(infra.kafka, topics, stop,
                                                                   redis_url=infra.redis.url), failures))
        for t in threads:
            t.start()
        shown = asyncio.run(_show(infra, symbols, stop, failures, duration_s, quiet))
        reason = infra.failure()
        if reason is not None:
            # The line saying the service died is the news; the clients' reconnect errors that follow are not.
            logging.getLogger("kafka").setLevel(logging.CRITICAL)
        stop.set()
        worker.stop()
        _join(threads, SHUTDOWN_S if reason is None else ABANDON_S)
        reason = reason or infra.failure() or failures.first
    log.info("run.stopped", signals_shown=shown)
    if reason is not None:
        raise PipelineFailed(reason)
    return shown


def _thread(name: str, target: Callable[[], object], failures: _Failures) -> threading.Thread:
    """A daemon thread whose exception stops the pipeline with one line, not a traceback."""
    def body() -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - reported by run() as the reason it stopped
            log.debug("run.part_failed", part=name, exc_info=True)
            failures.add(f"the {name} failed: {exc}; the pipeline stopped")

    return threading.Thread(target=body, name=name, daemon=True)


def _join(threads: list[threading.Thread], timeout_s: float) -> None:
    """Wait for the threads, all together at most `timeout_s`; name those left behind."""
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        log.warning("run.shutdown_timeout", threads=stuck, waited_s=timeout_s)


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: the operator will not wait; children die with us (PDEATHSIG)
            log.warning("run.forced_exit", signal=signal_module.Signals(signum).name)
            os._exit(128 + signum)
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
    finally:
        producer.close(timeout=5)


async def _show(infra: Infrastructure, symbols: list[str] | None, stop: threading.Event, failures: _Failures,
                duration_s: float | None, quiet: bool) -> int:
    """Print signals as they arrive until stopped; watch the embedded services meanwhile."""
    from consumers.watch import print_signals, tail
    from ingest.redis_client import async_client
    from signals.contracts import Signal

    client = async_client(infra.redis)
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
            if infra.failure() is not None:
                break
            await asyncio.sleep(SUPERVISE_S)
        if task.done() and not task.cancelled() and task.exception() is not None:
            # Most likely the embedded Redis just died: give its exit a moment to show, to name the cause.
            for _ in range(10):
                if infra.failure() is not None:
                    break
                await asyncio.sleep(SUPERVISE_S)
            failures.add(f"the signal tail failed: {task.exception()}; the pipeline stopped")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):  # Redis may be the part that died
            await asyncio.wait_for(client.aclose(), timeout=2)
    return shown
