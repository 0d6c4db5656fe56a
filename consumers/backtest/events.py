"""A recording as one validated, time-ordered list of documents and market events.

Order is total and stable: (time, topic, line), where time is `ts_event` or `ts_ingest`
of the payload itself (see `ReplayConfig.time_basis`), topic is the recording file's
name and line its line number. The same recording therefore always replays the same way.
Records that fail their contract are kept aside with the reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from consumers.backtest.config import ReplayConfig
from ingest.contracts import ContractError, Document, Kline, OrderBook, Ticker, Trade, decode_document, decode_market_event
from ingest.recording import MANIFEST, read_recording

MarketPayload = Kline | Trade | OrderBook | Ticker


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One recorded message, validated."""

    ts: int
    topic: str
    line: int
    payload: Document | MarketPayload

    @property
    def order(self) -> tuple[int, str, int]:
        return (self.ts, self.topic, self.line)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A recorded message that does not satisfy its contract."""

    topic: str
    line: int
    reason: str


@dataclass(frozen=True)
class Recording:
    """A loaded recording: events in replay order, rejects, and a digest of its files."""

    path: Path
    events: list[ReplayEvent]
    rejected: list[Rejected]
    digest: str
    prices: PriceBook = field(repr=False)

    @property
    def documents(self) -> int:
        return sum(isinstance(e.payload, Document) for e in self.events)


def _digest(directory: Path) -> str:
    """sha256 over the recording's files, in name order: what was replayed, for the report."""
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.jsonl")) + [directory / MANIFEST]:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _time(payload: Document | MarketPayload, basis: str) -> int:
    return payload.ts_ingest if basis == "ingest" else payload.ts_event


def load_recording(directory: str | Path, config: ReplayConfig | None = None) -> Recording:
    """Read, validate and order every record of a recording directory."""
    config = config or ReplayConfig()
    directory = Path(directory)
    events: list[ReplayEvent] = []
    rejected: list[Rejected] = []
    for msg in read_recording(directory):
        try:
            payload = (decode_document(msg.value) if msg.topic in config.document_topics
                       else decode_market_event(msg.value))
        except ContractError as exc:
            rejected.append(Rejected(msg.topic, msg.line, str(exc)))
            continue
        events.append(ReplayEvent(_time(payload, config.time_basis), msg.topic, msg.line, payload))
    events.sort(key=lambda e: e.order)
    return Recording(directory, events, rejected, _digest(directory), PriceBook.from_events(events))


def price_of(payload: MarketPayload) -> float | None:
    """The traded price a market event shows: a closed kline's close, a trade, a ticker's last, a book's mid."""
    if isinstance(payload, Kline):
        return float(payload.close) if payload.closed else None
    if isinstance(payload, Trade):
        return float(payload.price)
    if isinstance(payload, Ticker):
        return float(payload.last_price) if payload.last_price is not None else None
    if payload.bids and payload.asks:
        return float(payload.bids[0].price + payload.asks[0].price) / 2
    return None


@dataclass(frozen=True)
class PriceSeries:
    """One symbol's observed prices, by time (equal times keep replay order)."""

    ts: np.ndarray  # int64 nanoseconds, non-decreasing
    price: np.ndarray  # float64

    def first_at_or_after(self, ts: int) -> int | None:
        """Index of the first observation at or after `ts`."""
        i = int(np.searchsorted(self.ts, ts, side="left"))
        return i if i < len(self.ts) else None

    def last_at_or_before(self, ts: int) -> int | None:
        """Index of the last observation at or before `ts`."""
        i = int(np.searchsorted(self.ts, ts, side="right")) - 1
        return i if i >= 0 else None


@dataclass(frozen=True)
class PriceBook:
    """Price series per symbol, from a recording's market events."""

    series: dict[str, PriceSeries]

    @classmethod
    def from_events(cls, events: list[ReplayEvent]) -> PriceBook:
        rows: dict[str, tuple[list[int], list[float]]] = {}
        for ev in events:
            if isinstance(ev.payload, Document):
                continue
            price = price_of(ev.payload)
            if price is None:
                continue
            ts, px = rows.setdefault(ev.payload.symbol, ([], []))
            ts.append(ev.ts)
            px.append(price)
        return cls({sym: PriceSeries(np.asarray(ts, dtype=np.int64), np.asarray(px, dtype=np.float64))
                    for sym, (ts, px) in sorted(rows.items())})

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.series

    def __getitem__(self, symbol: str) -> PriceSeries:
        return self.series[symbol]
