"""Live ingestion inside `finsignal run`: every configured source, in one thread, until an Event is set."""

from __future__ import annotations

import asyncio
import threading

import structlog

from ingest.runner import IngestSettings, run_sources
from ingest.settings import KafkaSettings, TopicSettings

log = structlog.get_logger(__name__)


def run_ingestors(kafka: KafkaSettings, topics: TopicSettings, stop: threading.Event,
                  redis_url: str | None = None, ingest: IngestSettings | None = None) -> None:
    """Run the sources of `FINSIGNAL_INGEST_SOURCES` (default bybit, news, filings) until `stop` is set.

    Meant to be the target of a thread; returns after every source stopped and flushed.
    `redis_url` is where news and filings remember what they published (else FINSIGNAL_REDIS_URL).
    """
    ingest = ingest or IngestSettings()

    async def main() -> None:
        done = asyncio.Event()
        watcher = asyncio.create_task(_watch(stop, done))
        try:
            await run_sources(list(ingest.sources), kafka, topics, done, redis_url=redis_url, ingest=ingest)
        finally:
            watcher.cancel()

    log.info("ingest.live", sources=list(ingest.sources))
    asyncio.run(main())


async def _watch(stop: threading.Event, done: asyncio.Event) -> None:
    """Bridge a thread's Event into the loop (polling: threading.Event cannot be awaited)."""
    while not stop.is_set():
        await asyncio.sleep(0.2)
    done.set()
