"""`--news FILE`: a user's archive as `news` documents, with the live ingestor's ids and dedupe rules.

A document's id is `Document.create`'s, as live (the canonical URL, else a hash of source and text),
and a row is a copy of an earlier one when they share the archive's id (a feed GUID), the canonical URL
or that content id, which is what the news ingestor checks before publishing. The earliest copy is
kept: the market knew the story from then. Duplicates are removed over the whole archive, then the window is
applied, so a story first published before the window does not enter it as new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ingest.backfill.archive import ArchiveOptions, ArchiveRow, read_archive
from ingest.backfill.store import Store, lines, write_atomic
from ingest.backfill.window import Window, iso
from ingest.contracts import Document, canonical_url
from ingest.news.settings import NewsSettings
from ingest.news.symbols import SymbolExtractor

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NewsImport:
    """An archive to import and how to read it; `source` is the documents' `source` (default `archive:<stem>`)."""

    path: Path
    options: ArchiveOptions = ArchiveOptions()
    source: str | None = None

    def label(self) -> str:
        return self.source or f"archive:{self.path.stem}"


def story_keys(row: ArchiveRow, doc: Document) -> list[str]:
    """The keys under which the live news ingestor would consider this story already published."""
    keys = [f"guid:{row.guid}"] if row.guid else []
    if row.url:
        keys.append(f"url:{canonical_url(row.url)}")
    return keys or [f"id:{doc.id}"]


def build_documents(rows: list[ArchiveRow], source: str, news: NewsSettings) -> tuple[list[Document], int, list]:
    """(documents, duplicates dropped, [(line, reason)] of rows the contract refused), earliest copy kept."""
    extract = SymbolExtractor(news.names, news.cashtags)
    seen: set[str] = set()
    docs: list[Document] = []
    duplicates = 0
    invalid: list[tuple[int, str]] = []
    for row in sorted(rows, key=lambda r: (r.ts, r.line)):
        body = row.body[: news.max_body_chars]
        try:
            doc = Document.create(kind="news", source=source, title=row.title[:2_000], body=body, url=row.url,
                                  symbols=[*row.symbols, *extract(f"{row.title}\n{body}")], ts_event=row.ts,
                                  ts_ingest=row.ts)
        except ValueError as exc:
            invalid.append((row.line, f"document invalid: {exc}"))
            continue
        keys = story_keys(row, doc) + [f"id:{doc.id}"]
        known = any(k in seen for k in keys)
        seen.update(keys)  # a copy's other keys name the same story too (a GUID seen with a new URL)
        if known:
            duplicates += 1
            continue
        docs.append(doc)
    return docs, duplicates, invalid


def import_archive(spec: NewsImport, window: Window, store: Store, news: NewsSettings) -> dict[str, Any]:
    """Import once per (file content, options, window); returns the archive's manifest entry."""
    data = spec.path.read_bytes()
    fingerprint = hashlib.sha256(data + json.dumps([spec.options.model_dump(), spec.label()]).encode()).hexdigest()
    meta_path = store.path("news", f"{fingerprint[:24]}.meta.json")
    if meta_path.is_file():
        log.info("backfill.news_already_imported", file=str(spec.path))
        return json.loads(meta_path.read_text())
    rows, rejected = read_archive(data, spec.path.name, spec.options)
    docs, duplicates, invalid = build_documents(rows, spec.label(), news)
    inside = [d for d in docs if d.ts_event in window]
    write_atomic(store.path("news", f"{fingerprint[:24]}.jsonl"),
                 lines((d.ts_event, d.key, d.to_bytes()) for d in inside))
    refused = [{"line": r.line, "reason": r.reason, "raw": r.raw} for r in rejected]
    refused += [{"line": line, "reason": reason} for line, reason in invalid]
    write_atomic(store.path("news", f"{fingerprint[:24]}.rejected.jsonl"),
                 "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sorted(refused, key=lambda r: r["line"]))
                 .encode())
    meta = {
        "file": str(spec.path), "sha256": hashlib.sha256(data).hexdigest(), "source": spec.label(),
        "part": f"{fingerprint[:24]}.jsonl", "rows": len(rows) + len(rejected), "imported": len(inside),
        "duplicates": duplicates, "outside_window": len(docs) - len(inside), "rejected": len(refused),
        "rejected_file": str(store.path("news", f"{fingerprint[:24]}.rejected.jsonl")),
        "first": iso(min(d.ts_event for d in inside)) if inside else None,
        "last": iso(max(d.ts_event for d in inside)) if inside else None,
    }
    if refused:
        log.warning("backfill.news_rows_rejected", file=str(spec.path), rejected=len(refused),
                    first=f"line {refused[0]['line']}: {refused[0]['reason']}")
    write_atomic(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    log.info("backfill.news_imported", **{k: v for k, v in meta.items() if k != "rejected_file"})
    return meta
