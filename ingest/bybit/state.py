"""Per-instrument stream state: candle upserts, trade de-duplication and ticker merges."""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal

from ingest.bybit.parse import MS, next_start_ms
from ingest.contracts import Kline


class KlineState:
    """Which candles were published, per (symbol, interval), to upsert by start and never re-close one.

    A closed candle (`confirm: true`) is published once per start; an updating one only while
    its start is not closed and not older than the newest closed candle. `accept` also reports
    a gap: closed candles missing between the previous newest one and this one.
    """

    def __init__(self, remember: int = 5_000) -> None:
        self.remember = remember
        self._closed: dict[tuple[str, str], OrderedDict[int, None]] = {}
        self._newest: dict[tuple[str, str], int] = {}

    def newest_closed(self, symbol: str, interval: str) -> int | None:
        """Start (ns) of the newest closed candle published, if any."""
        return self._newest.get((symbol, interval))

    def accept(self, kline: Kline) -> tuple[bool, tuple[int, int] | None]:
        """(publish it?, missing (first_start_ns, last_start_ns) range or None)."""
        key = (kline.symbol, kline.interval)
        closed = self._closed.setdefault(key, OrderedDict())
        newest = self._newest.get(key)
        if kline.start in closed:
            return False, None  # already closed: a repeat, or an update that arrived late
        if not kline.closed:
            return (newest is None or kline.start > newest), None
        gap = None
        if newest is not None and kline.start > newest:
            expected = next_start_ms(newest // MS, kline.interval) * MS
            if kline.start > expected:
                gap = (expected, kline.start - 1)
        closed[kline.start] = None
        while len(closed) > self.remember:
            closed.popitem(last=False)
        if newest is None or kline.start > newest:
            self._newest[key] = kline.start
        return True, gap


class TradeDedupe:
    """The last `window` trade ids per symbol; a trade seen again is dropped."""

    def __init__(self, window: int = 20_000) -> None:
        self.window = window
        self._ids: dict[str, OrderedDict[str, None]] = {}

    def first_time(self, symbol: str, trade_id: str) -> bool:
        ids = self._ids.setdefault(symbol, OrderedDict())
        if trade_id in ids:
            return False
        ids[trade_id] = None
        if len(ids) > self.window:
            ids.popitem(last=False)
        return True


class TickerState:
    """Merged ticker fields per symbol: a snapshot replaces, a delta overlays the fields it carries.

    A field a snapshot does not carry is absent, whatever an earlier snapshot said; a delta's None
    clears a field (an emptied side of the book).
    """

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, Decimal | None]] = {}

    def apply(self, symbol: str, snapshot: bool, fields: dict[str, Decimal | None]
              ) -> dict[str, Decimal | None] | None:
        """The merged state, or None for a delta with no snapshot to merge into."""
        if snapshot:
            self._fields[symbol] = dict(fields)
        elif symbol in self._fields:
            self._fields[symbol].update(fields)
        else:
            return None
        return dict(self._fields[symbol])

    def drop(self, symbols: list[str] | None = None) -> None:
        """Forget state (after a reconnect), for some symbols or all."""
        if symbols is None:
            self._fields.clear()
        for symbol in symbols or ():
            self._fields.pop(symbol, None)
