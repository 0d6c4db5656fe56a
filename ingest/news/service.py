"""The news ingestor: one polling task per feed, conditional GETs, de-duplication that survives restarts.

Each feed is polled on its own schedule with `If-None-Match` / `If-Modified-Since`
from its last answer, so an unchanged feed costs a 304 and no parsing. A feed that
fails (HTTP error, broken XML, undecodable bytes) backs off alone; the others keep
their pace. An entry is published once: its GUID and canonical URL are marked seen
(in Redis when configured) only after Kafka acknowledged the document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog

from ingest import http
from ingest.contracts import Document, canonical_url
from ingest.kafka import DeadLetter
from ingest.limits import Backoff
from ingest.metrics import BACKOFFS, DEDUPES, ERRORS
from ingest.news.feeds import FeedEntry, FeedError, parse_feed
from ingest.news.settings import FeedSpec, NewsSettings
from ingest.news.symbols import SymbolExtractor
from ingest.seen import SeenStore
from ingest.settings import TopicSettings
from ingest.sink import KafkaSink

log = structlog.get_logger(__name__)

SOURCE = "news"
MAX_DEADLETTER_BYTES = 900_000  # under Kafka's default 1 MiB message limit


@dataclass
class _Validators:
    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        out = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out


def dedupe_keys(entry: FeedEntry) -> list[str]:
    """An entry is the same story as another if it shares the GUID or the canonical URL."""
    keys = []
    if entry.guid:
        keys.append(f"guid:{entry.guid.strip()}")
    if entry.url:
        keys.append(f"url:{canonical_url(entry.url)}")
    return keys


class NewsIngestor:
    """Polls every configured feed until stopped."""

    def __init__(self, settings: NewsSettings, sink: KafkaSink, topics: TopicSettings,
                 session: aiohttp.ClientSession, seen: SeenStore, clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.sink = sink
        self.topics = topics
        self.session = session
        self.seen = seen
        self.clock = clock
        self.symbols = SymbolExtractor(settings.names, settings.cashtags)
        self._validators: dict[str, _Validators] = {}
        self._refused: dict[str, bytes] = {}  # feed URL -> digest of the last body that could not be read
        # Keys of entries published and not yet acknowledged: two feeds carrying one story (a publisher's
        # feed and its FeedBurner copy) are polled concurrently, and the seen store only knows acked ones.
        self._claimed: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.settings.feeds:
            raise ValueError("no news feeds configured (FINSIGNAL_NEWS_FEEDS)")
        await asyncio.gather(*(self._poll_forever(spec, stop) for spec in self.settings.feeds))

    async def _poll_forever(self, spec: FeedSpec, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.backoff_base_s, self.settings.backoff_cap_s)
        interval = spec.interval_s or self.settings.poll_interval_s
        while not stop.is_set():
            wait = interval
            try:
                await self.poll_once(spec)
                backoff.reset()
            except (http.RateLimited, http.Unavailable, http.Forbidden) as exc:
                wait = max(exc.retry_after or 0.0, backoff.next_delay(), interval)
                BACKOFFS.labels(SOURCE, f"http_{exc.status}").inc()
                log.warning("news.backoff", feed=spec.label, status=exc.status, wait_s=round(wait, 1))
            except (http.HttpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                wait = max(backoff.next_delay(), interval)
                ERRORS.labels(SOURCE, "fetch").inc()
                log.warning("news.fetch_failed", feed=spec.label, error=repr(exc), wait_s=round(wait, 1))
            except Exception:  # noqa: BLE001 - one feed's surprise must not stop the others
                wait = max(backoff.next_delay(), interval)
                ERRORS.labels(SOURCE, "unexpected").inc()
                log.exception("news.poll_failed", feed=spec.label)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def poll_once(self, spec: FeedSpec) -> int:
        """Fetch one feed and publish its new entries; returns how many were published."""
        validators = self._validators.setdefault(spec.url, _Validators())
        headers = {"User-Agent": self.settings.user_agent,
                   "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
                             "application/json;q=0.9, application/xml;q=0.9, */*;q=0.5",
                   **validators.headers()}
        resp = await http.get(self.session, spec.url, source=SOURCE, headers=headers,
                              timeout_s=self.settings.timeout_s, max_bytes=self.settings.max_feed_bytes)
        if resp.not_modified:
            log.debug("news.not_modified", feed=spec.label)
            return 0
        loop = asyncio.get_running_loop()
        try:
            parsed = await loop.run_in_executor(None, parse_feed, resp.body, resp.headers.get("Content-Type"),
                                                resp.url)
        except FeedError as exc:
            digest = hashlib.sha256(resp.body).digest()
            if self._refused.get(spec.url) != digest:  # the same broken body is dead-lettered once, not every poll
                await self._dead_letter(spec, resp.body, f"feed unreadable: {exc}", "news.feed")
                self._refused[spec.url] = digest
            ERRORS.labels(SOURCE, "unreadable_feed").inc()
            log.warning("news.feed_unreadable", feed=spec.label, error=str(exc)[:300])
            self._remember(validators, resp)
            return 0
        self._refused.pop(spec.url, None)
        if parsed.problem:
            log.info("news.feed_forgiven", feed=spec.label, problem=parsed.problem[:300],
                     entries=len(parsed.entries))
        published = await self._publish_new(spec, parsed.entries)
        self._remember(validators, resp)
        log.info("news.polled", feed=spec.label, entries=len(parsed.entries), published=published)
        return published

    @staticmethod
    def _remember(validators: _Validators, resp: http.Response) -> None:
        validators.etag = resp.headers.get("ETag") or validators.etag
        validators.last_modified = resp.headers.get("Last-Modified") or validators.last_modified

    async def _publish_new(self, spec: FeedSpec, entries: list[FeedEntry]) -> int:
        keys_of = [dedupe_keys(e) for e in entries]
        already = await self.seen.seen({k for keys in keys_of for k in keys})
        pending: list[tuple[list[str], asyncio.Future]] = []
        this_poll: set[str] = set()
        now = self.clock()
        claimed: list[str] = []
        try:
            for entry, keys in sorted(zip(entries, keys_of), key=lambda p: p[0].published_ns or now):
                if any(k in already or k in this_poll or k in self._claimed for k in keys):
                    DEDUPES.labels(SOURCE, "entry").inc()
                    continue
                this_poll.update(keys)
                doc = await self._document(spec, entry, now)
                if doc is None:
                    continue
                keys = keys or [f"id:{doc.id}"]
                self._claimed.update(keys)  # before the publish, which may wait on a full queue
                claimed += keys
                ack = await self.sink.publish(self.topics.news, doc.key, doc.to_bytes(), kind="news", ack=True)
                assert ack is not None
                pending.append((keys, ack))
            published = 0
            for keys, ack in pending:
                try:
                    await ack
                except Exception as exc:  # noqa: BLE001 - not acknowledged: not marked, so the next poll retries it
                    log.error("news.not_acknowledged", feed=spec.label, error=repr(exc))
                    continue
                await self.seen.mark(keys)
                published += 1
            return published
        finally:
            self._claimed.difference_update(claimed)

    async def _document(self, spec: FeedSpec, entry: FeedEntry, now: int) -> Document | None:
        body = entry.body
        if len(body) > self.settings.max_body_chars:
            log.info("news.body_cut", feed=spec.label, url=entry.url, chars=len(body))
            body = body[: self.settings.max_body_chars]
        try:
            return Document.create(
                kind="news", source=f"feed:{spec.label}", title=entry.title[:2_000], body=body, url=entry.url,
                symbols=self.symbols(f"{entry.title}\n{body}"), ts_event=entry.published_ns or now, ts_ingest=now,
            )
        except ValueError as exc:  # pydantic's ValidationError and ContractError are both ValueErrors
            raw = json.dumps({"feed": spec.url, "guid": entry.guid, "url": entry.url, "title": entry.title,
                              "body": body[:10_000]}).encode()
            await self._dead_letter(spec, raw, f"entry invalid: {exc}", "news.entry")
            return None

    async def _dead_letter(self, spec: FeedSpec, raw: bytes, reason: str, stage: str) -> None:
        if len(raw) > MAX_DEADLETTER_BYTES:
            log.error("news.deadletter_cut", feed=spec.label, bytes=len(raw), reason=reason)
            reason = f"{reason} (first {MAX_DEADLETTER_BYTES} bytes of {len(raw)})"
            raw = raw[:MAX_DEADLETTER_BYTES]
        await self.sink.dead_letter(DeadLetter(reason=reason, stage=stage, source_topic=spec.url), raw)
