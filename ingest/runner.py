"""Running ingestors as services: settings, the Kafka sink, the HTTP session, dedupe state, stats, shutdown.

`finsignal ingest bybit | news | filings` runs one source; `finsignal run` runs
every configured one (`FINSIGNAL_INGEST_SOURCES`) through `ingest.live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import structlog
from pydantic import Field

from ingest.kafka import ensure_topics, make_producer
from ingest.seen import MemorySeen, SeenStore, open_seen
from ingest.settings import ComponentSettings, KafkaSettings, RedisSettings, TopicSettings
from ingest.sink import KafkaSink

log = structlog.get_logger(__name__)

Source = Literal["bybit", "news", "filings"]
SOURCES: tuple[str, ...] = ("bybit", "news", "filings")
# Sources whose producer runs in its own process unless FINSIGNAL_INGEST_PRODUCER_PROCESS says otherwise:
# those whose event loop is busy enough to compete with kafka-python for the GIL.
PRODUCER_PROCESS_SOURCES = frozenset({"bybit"})


class IngestSettings(ComponentSettings):
    """What runs and how it reaches Kafka (`FINSIGNAL_INGEST_*`)."""

    section: ClassVar[str] = "ingest"

    sources: list[Source] = Field(default_factory=lambda: list(SOURCES),
                                  description="sources `finsignal run` starts; filings also needs a User-Agent")
    metrics_port: int | None = Field(None, description="serve Prometheus metrics on this port")
    stats_interval_s: float = Field(30.0, gt=0, description="how often an `ingest.stats` line is logged")
    max_in_flight_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024,
                                     description="unacknowledged bytes per source before the source is paused")
    producer_max_block_ms: int = Field(10_000, ge=100, description="how long one send() blocks before re-trying")
    producer_process: bool | None = Field(
        None, description="run each source's Kafka producer in a child process, so the source's event loop and "
        "kafka-python use two cores; unset: on for bybit, off for news and filings (a few records a second)")

    def uses_producer_process(self, source: str) -> bool:
        """Whether `source` gets a `ProcessKafkaSink` (its producer in a child process)."""
        return self.producer_process if self.producer_process is not None else source in PRODUCER_PROCESS_SOURCES


def redis_url_for(own: str | None) -> str | None:
    """A component's own Redis URL, else the pipeline's FINSIGNAL_REDIS_URL."""
    return own or os.environ.get("FINSIGNAL_REDIS_URL") or None


def make_sink(kafka: KafkaSettings, topics: TopicSettings, source: str, queue_size: int,
              ingest: IngestSettings | None = None) -> KafkaSink:
    """A sink whose producer is made by `make_producer`: in the sink's own thread, or in a child process."""
    ingest = ingest or IngestSettings()
    factory = functools.partial(make_producer, kafka, max_block_ms=ingest.producer_max_block_ms,
                                client_id=f"{kafka.client_id}-{source}")  # picklable, for the child process
    if ingest.uses_producer_process(source):
        from ingest.process_sink import ProcessKafkaSink

        return ProcessKafkaSink(factory, topics, source=source, queue_size=queue_size,
                                max_in_flight_bytes=ingest.max_in_flight_bytes)
    return KafkaSink(factory, topics, source=source, queue_size=queue_size,
                     max_in_flight_bytes=ingest.max_in_flight_bytes)


async def _stats(sink: KafkaSink, interval_s: float, stop: asyncio.Event) -> None:
    last, last_t = sink.sent, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        now = time.monotonic()
        log.info("ingest.stats", source=sink.source, messages=sink.sent,
                 messages_per_s=round((sink.sent - last) / max(now - last_t, 1e-9), 2), queued=sink.pending)
        last, last_t = sink.sent, now


async def _until_sink_fails(work: Any, sink: KafkaSink) -> None:
    """Await `work`, or stop it and raise the sink's failure (its producer process died) if that comes first."""
    task = asyncio.ensure_future(work)
    failed = asyncio.ensure_future(sink.wait_failed())
    try:
        await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise failed.result()
    task.result()


def _seen(redis_url: str | None, source: str, ttl_s: int) -> SeenStore:
    # Credentials and TLS come from FINSIGNAL_REDIS_* whichever URL is used.
    store = open_seen(RedisSettings(url=redis_url) if redis_url else None, f"finsignal:ingest:seen:{source}", ttl_s)
    if isinstance(store, MemorySeen):
        log.warning("ingest.dedupe_in_memory", source=source,
                    hint="set FINSIGNAL_REDIS_URL so duplicates are also caught across restarts")
    return store


async def run_source(source: str, kafka: KafkaSettings, topics: TopicSettings, stop: asyncio.Event, *,
                     settings: ComponentSettings | None = None, redis_url: str | None = None,
                     ingest: IngestSettings | None = None, clock: Callable[[], int] = time.time_ns) -> None:
    """Run one ingestor until `stop` is set; configuration errors raise before anything connects."""
    import aiohttp

    ingest = ingest or IngestSettings()
    if source == "bybit":
        from ingest.bybit.service import BybitIngestor
        from ingest.bybit.settings import BybitSettings

        cfg: Any = settings or BybitSettings()
    elif source == "news":
        from ingest.news.service import NewsIngestor
        from ingest.news.settings import NewsSettings

        cfg = settings or NewsSettings()
    elif source == "filings":
        from ingest.filings.service import FilingsIngestor
        from ingest.filings.settings import FilingsSettings

        cfg = settings or FilingsSettings()
        cfg.require_user_agent()  # refuse before connecting anywhere
    else:
        raise ValueError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")

    sink = make_sink(kafka, topics, source, cfg.queue_size, ingest)
    seen: SeenStore | None = None
    await sink.start()
    stats = asyncio.create_task(_stats(sink, ingest.stats_interval_s, stop))
    try:
        async with aiohttp.ClientSession() as session:
            if source == "bybit":
                ingestor: Any = BybitIngestor(cfg, sink, topics, session, clock=clock)
            else:
                seen = _seen(redis_url_for(redis_url or cfg.redis_url), source, cfg.dedupe_ttl_s)
                cls = NewsIngestor if source == "news" else FilingsIngestor
                ingestor = cls(cfg, sink, topics, session, seen, clock=clock)
            log.info("ingest.started", source=source)
            await _until_sink_fails(ingestor.run(stop), sink)
    finally:
        stop.set()
        await stats
        await sink.close()
        if seen is not None:
            await seen.close()
        log.info("ingest.stopped", source=source, messages=sink.sent)


async def run_sources(sources: list[str], kafka: KafkaSettings, topics: TopicSettings, stop: asyncio.Event, *,
                      redis_url: str | None = None, ingest: IngestSettings | None = None) -> None:
    """Run several ingestors side by side; one failing is logged and does not stop the others."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, kafka, topics.all())
    names = list(dict.fromkeys(sources))

    async def guarded(name: str) -> None:
        own_stop = asyncio.Event()
        relay = asyncio.create_task(_relay(stop, own_stop))
        try:
            await run_source(name, kafka, topics, own_stop, redis_url=redis_url, ingest=ingest)
        except ValueError as exc:  # configuration (e.g. filings without a User-Agent): say so, run the rest
            log.error("ingest.source_not_started", source=name, reason=str(exc))
        except Exception:  # noqa: BLE001 - a source that died must not take the others with it
            log.exception("ingest.source_failed", source=name)
        finally:
            relay.cancel()

    await asyncio.gather(*(guarded(name) for name in names))


async def _relay(src: asyncio.Event, dst: asyncio.Event) -> None:
    await src.wait()
    dst.set()


def serve(source: str) -> None:
    """Blocking entry point of `finsignal ingest <source>`: until SIGINT / SIGTERM."""
    ingest = IngestSettings()
    kafka, topics = KafkaSettings(), TopicSettings()
    if source == "filings":
        from ingest.filings.settings import FilingsSettings

        FilingsSettings().require_user_agent()  # refuse before touching Kafka or the network
    if ingest.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(ingest.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await loop.run_in_executor(None, ensure_topics, kafka, topics.all())
        await run_source(source, kafka, topics, stop, ingest=ingest)

    asyncio.run(main())
