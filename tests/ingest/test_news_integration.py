"""The news ingestor against a local feed host, onto the real broker, with dedupe state in the real Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from ingest.contracts import decode_document
from ingest.kafka import DEADLETTER_REASON, DEADLETTER_STAGE, ensure_topics
from ingest.news.service import NewsIngestor
from ingest.news.settings import FeedSpec, NewsSettings
from ingest.runner import make_sink
from ingest.seen import RedisSeen
from tests.ingest.kafka_io import read_topic
from tests.ingest.servers import Page, fixture, http_server, until

pytestmark = pytest.mark.integration


def pages() -> dict[str, Page]:
    f = lambda name: fixture("news", name).read_bytes()  # noqa: E731
    return {
        "/markets.rss": Page(f("markets.rss"), "application/rss+xml; charset=utf-8", etag='"mw-v1"'),
        "/press.atom": Page(f("press.atom"), "application/atom+xml",
                            last_modified="Wed, 29 May 2024 18:00:00 GMT"),
        "/crypto.json": Page(f("crypto.json"), "application/feed+json"),
        "/latin1.rss": Page(f("latin1.rss"), "text/xml; charset=ISO-8859-1"),
        "/mislabelled.rss": Page(f("mislabelled.rss"), "application/rss+xml; charset=utf-8"),
        "/broken.rss": Page(f("broken.rss"), "application/rss+xml"),
        "/gateway.rss": Page(f("not_a_feed.html"), "text/html"),
        "/flaky.rss": Page(f("wire.rss"), "application/rss+xml", failures=[503, 429]),
    }


async def run_news(kafka_settings, topics, redis_url: str, served: dict[str, Page], *, until_published: int,
                   until_letters: int = 0, seen_prefix: str = "finsignal:ingest:seen:news") -> None:
    async with http_server({p: page.handle for p, page in served.items()}) as base:
        feeds = [FeedSpec(url=f"{base}{p}", name=p.strip("/").split(".")[0]) for p in served]
        settings = NewsSettings(feeds=feeds, poll_interval_s=0.3, backoff_base_s=0.1, backoff_cap_s=0.3)
        sink = make_sink(kafka_settings, topics, "news", 100)
        await sink.start()
        from redis.asyncio import Redis

        seen = RedisSeen(Redis.from_url(redis_url), seen_prefix, 3600)
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            ingestor = NewsIngestor(settings, sink, topics, session, seen)
            task = asyncio.create_task(ingestor.run(stop))
            try:
                await until(lambda: sink.sent >= until_published + until_letters)
                # every feed polled at least twice: the second round must be all 304s and dedupes
                await until(lambda: all(len(p.hits) >= 2 for p in served.values()))
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
                await sink.close()
                await seen.close()


def test_feeds_are_published_once_with_symbols_and_bad_feeds_are_isolated(kafka_settings, topics, redis_server,
                                                                          redis_client):
    ensure_topics(kafka_settings, topics.all())
    served = pages()
    asyncio.run(run_news(kafka_settings, topics, redis_server.url, served, until_published=12, until_letters=1))

    records = read_topic(kafka_settings, topics.news, 12)
    docs = [decode_document(r.value) for r in records]
    assert all(r.key == d.id.encode() for r, d in zip(records, docs))
    by_title = {d.title: d for d in docs}
    # markets: 4 items, the 4th is the 1st again under another link (canonical URL) -> 3
    # press 2, crypto 2, latin1 1, mislabelled 1, broken 1 (what survived), flaky 2 (after its 503 and 429)
    assert len(docs) == 12 and len({d.id for d in docs}) == 12
    assert sum(d.url.startswith("https://markets.example.com") for d in docs) == 3
    assert by_title["$NVDA upgraded to buy at Jefferies; target raised to $1,350"].symbols == ("NVDA",)
    assert by_title["Bitcoin rallies as spot ETF inflows hit a record; Ethereum follows"].symbols == (
        "BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert by_title["Court ruling lifts $XRP; Ripple shares in secondary markets jump"].symbols == ("XRPUSDT",)
    assert "Nestlé erhöht Prognose; Pfund fällt auf 1,14 £" in by_title  # ISO-8859-1 decoded right
    assert "Café chain beats estimates – shares up" in by_title  # cp1252 bytes in a "UTF-8" feed
    assert by_title["Coinbase adds staking for Ether & Solana"].symbols == ("COIN", "ETHUSDT", "SOLUSDT")
    assert by_title["Microsoft signs cloud deal with $ORCL for AI capacity"].symbols == ("MSFT", "ORCL")
    assert all(d.kind == "news" and d.source.startswith("feed:") for d in docs)

    letters = read_topic(kafka_settings, topics.deadletter, 1)
    assert [r.value for r in letters] == [fixture("news", "not_a_feed.html").read_bytes()]
    assert dict(letters[0].headers)[DEADLETTER_STAGE] == b"news.feed"
    assert b"not an RSS or Atom feed" in dict(letters[0].headers)[DEADLETTER_REASON]

    # conditional GETs: the second poll carried the validators the first answer gave
    assert served["/markets.rss"].hits[1].get("If-None-Match") == '"mw-v1"'
    assert served["/press.atom"].hits[1].get("If-Modified-Since") == "Wed, 29 May 2024 18:00:00 GMT"
    assert "If-None-Match" not in served["/markets.rss"].hits[0]

    # A restart (fresh ingestor, no validators, full 200 answers) publishes nothing new: state is in Redis.
    again = pages()
    asyncio.run(run_news(kafka_settings, topics, redis_server.url, again, until_published=0, until_letters=1))
    assert len(read_topic(kafka_settings, topics.news, 12)) == 12
    assert redis_client.keys("finsignal:ingest:seen:news:*")


def test_a_feedburner_copy_of_a_feed_publishes_only_what_the_publishers_feed_did_not(kafka_settings, topics,
                                                                                    redis_server):
    ensure_topics(kafka_settings, topics.all())
    f = lambda name: fixture("news", name).read_bytes()  # noqa: E731
    served = {
        "/markets.rss": Page(f("markets.rss"), "application/rss+xml; charset=utf-8"),
        "/feeds/MarketsWire": Page(f("feedburner.rss"), "text/xml; charset=UTF-8"),
        "/press.atom": Page(f("press.atom"), "application/atom+xml"),
        "/feeds/CentralBankPress": Page(f("feedburner.atom"), "text/xml; charset=UTF-8"),
    }
    # markets 3 (its 4th item repeats the 1st), FeedBurner's copy only OPEC (NVDA, bitcoin already in), press 2,
    # FeedBurner's press copy nothing: 6, whichever feed is polled first.
    asyncio.run(run_news(kafka_settings, topics, redis_server.url, served, until_published=6,
                         seen_prefix=f"test:feedburner:{topics.news}"))

    docs = [decode_document(r.value) for r in read_topic(kafka_settings, topics.news, None, timeout_s=5, settle_s=1.0)]
    assert len(docs) == 6 and len({d.id for d in docs}) == 6
    assert not any("feedproxy.google.com" in (d.url or "") for d in docs)
    assert sorted(d.title for d in docs).count("Oil slips as OPEC+ weighs output extension") == 1
