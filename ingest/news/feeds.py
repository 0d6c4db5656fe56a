"""Feed documents to entries: RSS 2.0 and Atom through feedparser, JSON Feed 1.x through pydantic.

feedparser copes with what real feeds do wrong: a charset in the XML prolog that
disagrees with HTTP's (ISO-8859-1 feeds served as UTF-8 or the reverse), bytes that
are not valid in the declared encoding, unescaped ampersands. When the strict parser
fails it retries with a loose one and sets `bozo`; we keep whatever entries it
recovered and refuse the feed only when nothing usable came out.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ingest.text import html_to_text


_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_PROLOG_BYTES = 64 * 1024  # a DOCTYPE comes before the root element


class FeedError(ValueError):
    """A feed body from which no entry could be read."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One item of a feed, whatever the format."""

    guid: str | None
    url: str | None
    title: str
    body: str
    published_ns: int | None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    entries: list[FeedEntry]
    problem: str | None  # what the parser had to forgive, if anything


def parse_feed(body: bytes, content_type: str | None = None, url: str | None = None) -> ParsedFeed:
    """Entries of an RSS, Atom or JSON feed body; raise `FeedError` if none can be read."""
    if _looks_json(body, content_type):
        return ParsedFeed(parse_json_feed(body), None)
    return _parse_xml(body, content_type, url)


def _looks_json(body: bytes, content_type: str | None) -> bool:
    if content_type and "json" in content_type.lower():
        return True
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _parse_xml(body: bytes, content_type: str | None, url: str | None) -> ParsedFeed:
    import feedparser

    # Entity declarations are how XML bombs (billion laughs) and external-entity reads start; no real
    # feed needs one, and feedparser's loose fallback would keep the entry with the entity unexpanded.
    if _ENTITY_DECL.search(body[:_PROLOG_BYTES]):
        raise FeedError("feed declares XML entities (<!ENTITY ...>): refused, an entity-expansion attack")
    # No content-location: feedparser would resolve relative GUIDs against it, and a GUID must stay as sent.
    headers = {"content-type": content_type or "application/xml"}
    parsed = feedparser.parse(io.BytesIO(body), response_headers=headers, sanitize_html=True)
    problem = None
    if parsed.get("bozo"):
        problem = f"{type(parsed.get('bozo_exception')).__name__}: {parsed.get('bozo_exception')}"
    if not parsed.get("version") and not parsed.entries:
        raise FeedError(f"not an RSS or Atom feed ({problem or 'no feed element'})")
    entries = [e for e in (_xml_entry(item) for item in parsed.entries) if e is not None]
    if parsed.entries and not entries:
        raise FeedError(f"{len(parsed.entries)} entries, none with a title or text ({problem})")
    return ParsedFeed(entries, problem)


def _xml_entry(item: Any) -> FeedEntry | None:
    title = html_to_text(item.get("title", "") or "")
    html = ""
    if item.get("content"):
        html = item["content"][0].get("value", "")
    html = html or item.get("summary", "") or ""
    body = html_to_text(html)
    if not (title or body):
        return None
    when = item.get("published_parsed") or item.get("updated_parsed")
    return FeedEntry(
        guid=(item.get("id") or None), url=entry_url(item), title=title, body=body,
        published_ns=calendar.timegm(when) * 1_000_000_000 if when else None,
    )


def entry_url(item: Any) -> str | None:
    """The publisher's URL of an RSS/Atom entry: FeedBurner's `origLink` over its redirect `link`.

    A feed syndicated through FeedBurner rewrites `<link>` to a feedproxy redirect and keeps the
    article's own URL in `<feedburner:origLink>` (feedparser: `feedburner_origlink`); without it the
    same article reached through the publisher's feed and through FeedBurner would get two ids.
    """
    for key in ("feedburner_origlink", "link"):
        value = (item.get(key) or "").strip()
        if value:
            return value
    return None


class _JsonItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | int
    url: str | None = None
    external_url: str | None = None
    title: str | None = None
    content_text: str | None = None
    content_html: str | None = None
    summary: str | None = None
    date_published: dt.datetime | None = None
    date_modified: dt.datetime | None = None


class _JsonFeed(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    title: str | None = None
    items: list[_JsonItem]


def parse_json_feed(body: bytes) -> list[FeedEntry]:
    """Entries of a JSON Feed (https://jsonfeed.org/version/1.1)."""
    try:
        feed = _JsonFeed.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedError(f"malformed JSON feed: {exc}") from None
    except ValidationError as exc:
        raise FeedError(f"not a JSON Feed: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") from None
    if not feed.version.startswith("https://jsonfeed.org/version/"):
        raise FeedError(f"not a JSON Feed: version {feed.version!r}")
    out = []
    for item in feed.items:
        title = html_to_text(item.title or "")
        body = item.content_text or html_to_text(item.content_html or "") or item.summary or ""
        if not (title or body.strip()):
            continue
        when = item.date_published or item.date_modified
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        out.append(FeedEntry(guid=str(item.id), url=item.url or item.external_url, title=title, body=body.strip(),
                             published_ns=int(when.timestamp()) * 1_000_000_000 if when else None))
    return out
