"""An XML entity bomb (billion laughs) and an external-entity read in news feeds: refused unexpanded, dead-lettered."""

from __future__ import annotations

import asyncio
import resource

import pytest

from ingest.kafka import DEADLETTER_REASON, DEADLETTER_STAGE, ensure_topics
from ingest.news.feeds import FeedError, parse_feed
from tests.ingest.kafka_io import read_topic
from tests.ingest.servers import Page
from tests.ingest.test_news_integration import run_news


def billion_laughs(levels: int = 9) -> bytes:
    """10**levels copies of "lol" if expanded: 3 GB at 9 levels, from a 1 kB feed."""
    ents = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels + 1)]
    return ('<?xml version="1.0"?>\n<!DOCTYPE rss [' + "".join(ents) + ']>\n<rss version="2.0"><channel>'
            f'<title>bomb</title><item><title>&lol{levels};</title><link>https://bomb.example.com/a</link>'
            '<description>x</description></item></channel></rss>').encode()


EXTERNAL_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                   b'<rss version="2.0"><channel><title>t</title><item><title>&x;</title>'
                   b'<link>https://xxe.example.com/a</link></item></channel></rss>')


@pytest.mark.parametrize("body", [billion_laughs(), EXTERNAL_ENTITY], ids=["billion_laughs", "external_entity"])
def test_entity_declarations_are_refused_before_parsing(body):
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FeedError, match="declares XML entities"):
        parse_feed(body, "application/rss+xml")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb) < 50 * 1024  # kB: nothing expanded


@pytest.mark.integration
def test_news_ingestor_dead_letters_an_entity_bomb_and_keeps_serving_good_feeds(kafka_settings, topics,
                                                                                 redis_server, redis_client):
    from tests.ingest.servers import fixture

    ensure_topics(kafka_settings, topics.all())
    served = {
        "/bomb.rss": Page(billion_laughs(), "application/rss+xml"),
        "/press.atom": Page(fixture("news", "press.atom").read_bytes(), "application/atom+xml"),
    }
    asyncio.run(run_news(kafka_settings, topics, redis_server.url, served, until_published=2, until_letters=1))

    published = read_topic(kafka_settings, topics.news, 2)
    letters = read_topic(kafka_settings, topics.deadletter, 1)
    print(f"\nfeed bomb: feeds in=2 (1 bomb of {len(billion_laughs())} bytes); out: documents={len(published)}, "
          f"dead letters={len(letters)}")
    assert len(published) == 2  # the good feed's two entries
    assert [r.value for r in letters] == [billion_laughs()]  # the original bytes, unexpanded
    assert dict(letters[0].headers)[DEADLETTER_STAGE] == b"news.feed"
    assert b"declares XML entities" in dict(letters[0].headers)[DEADLETTER_REASON]
