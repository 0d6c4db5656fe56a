"""Symbols named in a text: cashtags ($AAPL, $BTC) and configured names (bitcoin -> BTCUSDT)."""

from __future__ import annotations

import re

_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)(?!\w|\.\w)")
_VALID = re.compile(r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")


class SymbolExtractor:
    """Finds symbols in order of first mention, each once."""

    def __init__(self, names: dict[str, str], cashtags: dict[str, str]) -> None:
        self.names = {k.lower(): v.upper() for k, v in names.items() if k.strip()}
        self.cashtags = {k.upper(): v.upper() for k, v in cashtags.items()}
        words = sorted(self.names, key=len, reverse=True)  # "meta platforms" before "meta"
        self._names = (re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
                       if words else None)

    def __call__(self, text: str) -> list[str]:
        found: list[tuple[int, str]] = []
        for m in _CASHTAG.finditer(text):
            tag = m.group(1).upper()
            found.append((m.start(), self.cashtags.get(tag, tag)))
        if self._names is not None:
            for m in self._names.finditer(text):
                found.append((m.start(), self.names[m.group(1).lower()]))
        found.sort()
        return list(dict.fromkeys(sym for _, sym in found if _VALID.match(sym)))
