"""Feed parsing and symbol extraction: unit and property tests."""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.contracts import Document
from ingest.news.feeds import FeedError, parse_feed, parse_json_feed
from ingest.news.service import dedupe_keys
from ingest.news.settings import DEFAULT_CASHTAGS, DEFAULT_NAMES, NewsSettings
from ingest.news.symbols import SymbolExtractor
from tests.ingest.servers import fixture

extract = SymbolExtractor(DEFAULT_NAMES, DEFAULT_CASHTAGS)


@pytest.mark.parametrize("text, symbols", [
    ("$AAPL and $msft rally", ["AAPL", "MSFT"]),
    ("Bitcoin tops $70,000; $BTC dominance rises", ["BTCUSDT"]),
    ("$BRK.B buys more $OXY.", ["BRK.B", "OXY"]),
    ("Ether and Solana slip while Meta Platforms gains", ["ETHUSDT", "SOLUSDT", "META"]),
    ("pineapple prices and metadata", []),  # names only as whole words
    ("costs $5 or US$20", []),
])
def test_symbols_from_cashtags_and_names(text, symbols):
    assert extract(text) == symbols


def test_symbol_map_is_configurable_from_the_environment(monkeypatch):
    monkeypatch.setenv("FINSIGNAL_NEWS_NAMES", json.dumps({"arbitrum": "ARBUSDT"}))
    monkeypatch.setenv("FINSIGNAL_NEWS_FEEDS", json.dumps(["https://a.example/rss", {"url": "https://b/x", "name": "b"}]))
    settings = NewsSettings()
    assert SymbolExtractor(settings.names, {})("Arbitrum upgrade ships") == ["ARBUSDT"]
    assert [f.label for f in settings.feeds] == ["a.example", "b"]


@given(st.text(max_size=300))
def test_extracted_symbols_are_always_valid_document_symbols(text):
    symbols = extract(text)
    Document.create(kind="news", source="t", title="x", symbols=symbols, ts_event=0, ts_ingest=0)
    assert len(symbols) == len(set(symbols))


def test_same_story_under_two_links_shares_a_dedupe_key():
    entries = parse_feed(fixture("news", "markets.rss").read_bytes(), "application/rss+xml").entries
    first, last = dedupe_keys(entries[0]), dedupe_keys(entries[-1])
    assert set(first) & set(last)  # canonical URL: tracking params and trailing slash dropped


def test_json_feed_requires_the_jsonfeed_version():
    with pytest.raises(FeedError, match="version"):
        parse_json_feed(b'{"version": "1", "items": []}')
    with pytest.raises(FeedError, match="malformed"):
        parse_json_feed(b'{"version": ')


def test_an_error_page_is_not_a_feed():
    with pytest.raises(FeedError):
        parse_feed(fixture("news", "not_a_feed.html").read_bytes(), "text/html")


titles = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80).filter(
    lambda t: t.strip())


def _looks_double_encoded(text: str) -> bool:
    """UTF-8 read as Latin-1 ('Â¡' for '¡'): feedparser repairs such text on purpose, so it cannot round-trip."""
    try:
        return text.encode("latin-1").decode("utf-8") != text
    except (UnicodeEncodeError, UnicodeDecodeError):
        return False


@settings(max_examples=60, deadline=None)
@given(st.lists(titles, min_size=1, max_size=5), st.sampled_from(["utf-8", "iso-8859-1", "windows-1252"]))
def test_rss_titles_survive_any_declared_encoding(items, encoding):
    items = [t for t in items if t.encode(encoding, errors="ignore").decode(encoding) == t and not _looks_double_encoded(t)]
    body = "".join(f"<item><title>{escape(t)}</title><link>https://e.x/{i}</link></item>" for i, t in enumerate(items))
    xml = (f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0"><channel><title>t</title>'
           f"<link>https://e.x/</link><description>d</description>{body}</channel></rss>")
    parsed = parse_feed(xml.encode(encoding), "application/rss+xml")
    assert [e.title for e in parsed.entries] == [" ".join(t.split()) for t in items]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_entries_or_a_feed_error(body):
    try:
        parsed = parse_feed(body, None)
    except FeedError:
        return
    assert all(e.title or e.body for e in parsed.entries)


@pytest.mark.parametrize("name, content_type", [("feedburner.rss", "text/xml; charset=UTF-8"),
                                                 ("feedburner.atom", "application/atom+xml")])
def test_feedburner_items_take_the_publishers_origlink_not_the_redirect(name, content_type):
    entries = parse_feed(fixture("news", name).read_bytes(), content_type).entries
    assert entries and all(not e.url.startswith("http://feedproxy.google.com/") for e in entries)
    assert entries[0].url.startswith(("https://markets.example.com/2024/05/29/nvda-upgrade?utm_source=feedburner",
                                      "https://press.example.org/releases/2024-05-29-rates"))


def test_a_story_reached_directly_and_through_feedburner_gets_one_id_and_shares_a_dedupe_key():
    pairs = [("markets.rss", "feedburner.rss", "application/rss+xml"),
             ("press.atom", "feedburner.atom", "application/atom+xml")]
    for direct_name, syndicated_name, content_type in pairs:
        direct = parse_feed(fixture("news", direct_name).read_bytes(), content_type).entries[0]
        syndicated = parse_feed(fixture("news", syndicated_name).read_bytes(), content_type).entries[0]
        assert direct.guid != syndicated.guid  # FeedBurner rewrote the GUID too: only the URL can match them
        assert set(dedupe_keys(direct)) & set(dedupe_keys(syndicated))
        ids = {Document.create(kind="news", source=f"feed:{n}", title=e.title, url=e.url, ts_event=0,
                               ts_ingest=0).id for n, e in (("a", direct), ("b", syndicated))}
        assert len(ids) == 1


def test_an_item_without_origlink_keeps_its_link():
    rss = (b'<rss version="2.0" xmlns:feedburner="http://rssnamespace.org/feedburner/ext/1.0"><channel><title>t'
           b'</title><item><title>A</title><link>https://a.example/x</link><feedburner:origLink> </feedburner:origLink>'
           b'</item></channel></rss>')
    assert parse_feed(rss, "application/rss+xml").entries[0].url == "https://a.example/x"
