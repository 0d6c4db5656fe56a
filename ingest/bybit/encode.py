"""Wire bytes of the two hot Bybit events, order-book tops and trades, without validating twice.

Each book update and trade was already checked by the parsers: prices and sizes are
finite `Decimal`s parsed from the venue's strings (`parse.dec`), sizes are >= 0 and book
prices > 0 (`parse._levels`), times and update ids are non-negative integers
(`parse.ms_int`), and `LocalBook` keeps each side sorted. Building the pydantic model on
top of that validated every one of those values again and cost most of the ingestor's
CPU (a 20-level book: ~40 Decimal validations, then ~40 Decimal serializations), on the
thread that also feeds the Kafka producer. These functions check what the parsers do not
(symbol pattern, trade id length, side, a crossed book) and write the exact bytes
`OrderBook(...).to_bytes()` and `Trade(...).to_bytes()` would; tests/ingest/test_bybit_encode.py
holds them to that, byte for byte, and decodes every output with the contract.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import lru_cache

from ingest.bybit.parse import MS, BookUpdate, BybitParseError
from ingest.contracts import MARKET_SCHEMA_VERSION, SYMBOL_PATTERN

_SYMBOL = re.compile(SYMBOL_PATTERN)
_SIDES = frozenset({"Buy", "Sell"})
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:/-]+\Z")
_CATEGORIES = frozenset({"spot", "linear", "inverse", "option"})


@lru_cache(maxsize=4096)
def _head(category: str, symbol: str) -> str:
    """The start of the JSON object up to the symbol, once category and symbol were checked."""
    if category not in _CATEGORIES:
        raise BybitParseError(f"category {category!r} is not one of {sorted(_CATEGORIES)}")
    if not (1 <= len(symbol) <= 32 and _SYMBOL.match(symbol)):
        raise BybitParseError(f"symbol {symbol!r} does not match {SYMBOL_PATTERN} (1-32 characters)")
    # The symbol pattern admits no character JSON would escape, so it is written as is.
    return f'{{"schema_version":{MARKET_SCHEMA_VERSION},"exchange":"bybit","category":"{category}","symbol":"{symbol}",'


_LEVEL_CACHE_MAX = 16_384
# (price, size) -> (price, size, JSON): a top-of-book event repeats all but one or two levels of the last
# one, the same Decimal objects held by the book. Equal Decimals can print differently ("1.0", "1.00"), so
# an entry is used only for the very objects it was made from.
_level_json: dict[tuple[Decimal, Decimal], tuple[Decimal, Decimal, str]] = {}


def _levels(levels: list[tuple[Decimal, Decimal]]) -> str:
    cache = _level_json
    out = []
    for level in levels:
        hit = cache.get(level)
        if hit is None or hit[0] is not level[0] or hit[1] is not level[1]:
            if len(cache) >= _LEVEL_CACHE_MAX:
                cache.clear()
            price, size = level
            hit = cache[level] = (price, size, '{"price":"' + str(price) + '","size":"' + str(size) + '"}')
        out.append(hit[2])
    return ",".join(out)


def book_bytes(update: BookUpdate, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]], *,
               category: str, depth: int, ts_ingest: int) -> bytes:
    """`OrderBook` bytes of the top of book after `update`; raise `BybitParseError` for a crossed book."""
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise BybitParseError(f"book {update.symbol} u={update.update_id}: crossed book: best bid >= best ask")
    if depth <= 0 or ts_ingest < 0:
        raise BybitParseError(f"book {update.symbol}: depth {depth} / ts_ingest {ts_ingest} out of range")
    seq = "null" if update.seq is None else str(update.seq)
    return (f'{_head(category, update.symbol)}"ts_event":{update.ts_ms * MS},"ts_ingest":{ts_ingest},'
            f'"type":"orderbook","depth":{depth},"update_id":{update.update_id},"seq":{seq},'
            f'"bids":[{_levels(bids)}],"asks":[{_levels(asks)}]}}').encode()


def trade_bytes(*, category: str, symbol: str, trade_id: str, price: Decimal, size: Decimal, side: object,
                ts_ms: int, ts_ingest: int) -> bytes:
    """`Trade` bytes of one parsed trade; raise `BybitParseError` for what the contract refuses."""
    if not 1 <= len(trade_id) <= 64:
        raise BybitParseError(f"trade {symbol}: trade id {trade_id[:80]!r} is not 1-64 characters")
    if not isinstance(side, str) or side not in _SIDES:
        raise BybitParseError(f"trade {symbol} {trade_id}: side {side!r} is not Buy or Sell")
    if size < 0 or ts_ms < 0 or ts_ingest < 0:
        raise BybitParseError(f"trade {symbol} {trade_id}: negative size or time")
    # Venue trade ids are digits or UUIDs: written as they are; anything JSON would escape goes through json.
    quoted = f'"{trade_id}"' if _PLAIN_ID.match(trade_id) else json.dumps(trade_id, ensure_ascii=False)
    try:
        return (f'{_head(category, symbol)}"ts_event":{ts_ms * MS},"ts_ingest":{ts_ingest},"type":"trade",'
                f'"trade_id":{quoted},"price":"{price!s}","size":"{size!s}",'
                f'"side":"{side}"}}').encode()
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: not text the contract can carry
        raise BybitParseError(f"trade {symbol}: trade id {trade_id!r} is not valid Unicode") from None
