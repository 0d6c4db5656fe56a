"""Which symbols a document speaks to: what the ingestor found, cashtags and names in the text, filer CIK."""

from __future__ import annotations

from collections.abc import Mapping

from ingest.contracts import Document
from ingest.news.symbols import SymbolExtractor


class SymbolLinker:
    """Links documents to symbols; the ingestor's own symbols come first, then the text, then the CIK."""

    def __init__(self, names: Mapping[str, str], cashtags: Mapping[str, str], cik_tickers: Mapping[str, str],
                 max_symbols: int = 8) -> None:
        self._extract = SymbolExtractor(dict(names), dict(cashtags))
        self._cik = {cik.lstrip("0"): ticker.upper() for cik, ticker in cik_tickers.items()}
        self.max_symbols = max_symbols

    def __call__(self, doc: Document) -> tuple[str, ...]:
        found = list(doc.symbols)
        if doc.cik and doc.cik.lstrip("0") in self._cik:
            found.append(self._cik[doc.cik.lstrip("0")])
        found += self._extract(doc.title)
        found += self._extract(doc.body[:20_000])  # mentions deep in a filing are rarely its subject
        return tuple(dict.fromkeys(found))[: self.max_symbols]
