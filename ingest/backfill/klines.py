"""Bybit klines over the window: closed candles only, stamped at their close, one part per chunk.

The window is cut, per (category, symbol, interval), into chunks of `kline_chunk` candles (<= 1000,
one REST page each), fetched through `ingest.bybit.rest.BybitRest` (its paging, exact decimals,
shared rate limiter, 403 / 429 / retCode 10006 pauses and retries). A candle belongs to the window
when it starts at or after `--from` and closes at or before `--to`; its `ts_event` is its close
(start + interval), the first moment its close price was known. A chunk whose every candle had
closed when it was fetched is complete and never fetched again; one that reaches past the present
is kept as `.partial` and fetched again by the next run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from ingest.backfill.store import Store, lines, read_sorted, write_atomic
from ingest.backfill.window import Window, iso
from ingest.bybit.parse import MS, next_start_ms
from ingest.bybit.rest import BackfillFailed, BybitRest
from ingest.bybit.settings import BybitSettings
from ingest.contracts import Kline
from ingest.limits import RateLimiter

log = structlog.get_logger(__name__)

_FIXED_MS = {"D": 86_400_000, "W": 7 * 86_400_000, **{m: int(m) * 60_000 for m in
                                                     ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720")}}
_WEEK_ORIGIN_MS = 4 * 86_400_000  # Bybit's weeks start on Monday 00:00 UTC; 1970-01-05 was a Monday


def first_start_ms(interval: str, at_ms: int) -> int:
    """Start of the first candle of `interval` that starts at or after `at_ms`."""
    if interval == "M":
        import datetime as dt

        day = dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.timezone.utc)
        start = int(dt.datetime(day.year, day.month, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
        return start if start >= at_ms else next_start_ms(start, "M")
    step = _FIXED_MS[interval]
    origin = _WEEK_ORIGIN_MS if interval == "W" else 0
    return origin + -(-(at_ms - origin) // step) * step


def start_of_close(interval: str, close_ms: int) -> int:
    """Start of the candle that closes at `close_ms`."""
    if interval in _FIXED_MS:
        return close_ms - _FIXED_MS[interval]
    import datetime as dt

    close = dt.datetime.fromtimestamp(close_ms / 1000, tz=dt.timezone.utc)
    year, month = (close.year - 1, 12) if close.month == 1 else (close.year, close.month - 1)
    return int(dt.datetime(year, month, 1, tzinfo=dt.timezone.utc).timestamp()) * 1000


def candle_starts(interval: str, start_ms: int, end_ms: int) -> list[int]:
    """Starts of every candle that opens at or after `start_ms` and closes at or before `end_ms`."""
    out = []
    at = first_start_ms(interval, start_ms)
    if interval in _FIXED_MS:
        step = _FIXED_MS[interval]
        last = end_ms - step
        return list(range(at, last + 1, step)) if last >= at else []
    while next_start_ms(at, interval) <= end_ms:
        out.append(at)
        at = next_start_ms(at, interval)
    return out


@dataclass(frozen=True, slots=True)
class Series:
    category: str
    symbol: str
    interval: str

    @property
    def label(self) -> str:
        return f"{self.category}/{self.symbol}/{self.interval}"


@dataclass(frozen=True, slots=True)
class Chunk:
    series: Series
    first_ms: int  # first candle start
    last_ms: int  # last candle start
    candles: int

    def path(self, store: Store, partial: bool = False) -> Path:
        s = self.series
        return store.path("bybit", s.category, s.symbol, s.interval,
                          f"{self.first_ms}{'.partial' if partial else ''}.jsonl")


def all_series(settings: BybitSettings) -> list[Series]:
    return [Series(c, s, i) for c in settings.categories() for s in settings.symbols(c)
            for i in settings.kline_intervals]


def chunks_of(series: Series, window: Window, size: int) -> list[Chunk]:
    starts = candle_starts(series.interval, window.start_ms, window.end_ms)
    return [Chunk(series, starts[i], starts[min(i + size, len(starts)) - 1], min(size, len(starts) - i))
            for i in range(0, len(starts), size)]


def closed_at(kline: Kline) -> Kline:
    """The candle stamped at its close (start + interval), when the market could first know it."""
    close = kline.end + 1
    return Kline.model_validate({**kline.model_dump(), "ts_event": close, "ts_ingest": close})


class KlineBackfill:
    """Fetches the chunks that have no complete part yet."""

    def __init__(self, settings: BybitSettings, store: Store, window: Window, chunk_size: int, concurrency: int,
                 clock_ns: Callable[[], int]) -> None:
        self.settings = settings
        self.store = store
        self.window = window
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.clock_ns = clock_ns
        self.failed: dict[Chunk, str] = {}
        self.invalid = 0

    def pending(self) -> list[Chunk]:
        chunks = [c for s in all_series(self.settings) for c in chunks_of(s, self.window, self.chunk_size)]
        return [c for c in chunks if not c.path(self.store).is_file()]

    async def run(self, session: aiohttp.ClientSession, bar: Any) -> None:
        limiter = RateLimiter(self.settings.rest_max_calls, self.settings.rest_period_s)
        rest = BybitRest(session, self.settings, limiter, self._invalid, clock=self.clock_ns)
        queue: asyncio.Queue[Chunk] = asyncio.Queue()
        for chunk in self.pending():
            queue.put_nowait(chunk)
        bar.reset(total=queue.qsize())

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                await self._fetch(rest, chunk)
                bar.update(1)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def _fetch(self, rest: BybitRest, chunk: Chunk) -> None:
        s = chunk.series
        end_ms = next_start_ms(chunk.last_ms, s.interval)
        try:
            klines = await rest.klines(s.category, s.symbol, s.interval, chunk.first_ms, chunk.last_ms)
        except BackfillFailed as exc:
            self.failed[chunk] = str(exc)
            log.error("backfill.klines_failed", series=s.label, first=iso(chunk.first_ms * MS), error=str(exc))
            return
        closed = [closed_at(k) for k in klines if k.closed and chunk.first_ms * MS <= k.start <= chunk.last_ms * MS]
        complete = end_ms * MS <= self.clock_ns() and len(closed) == len(klines)
        write_atomic(chunk.path(self.store, partial=not complete), lines((k.ts_event, k.key, k.to_bytes())
                                                                           for k in closed))
        if complete:
            chunk.path(self.store, partial=True).unlink(missing_ok=True)

    async def _invalid(self, raw: bytes, reason: str) -> None:
        self.invalid += 1
        path = self.store.path("bybit", "invalid.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:  # the record of what was refused; not a part
            fh.write(json.dumps({"reason": reason, "raw": raw.decode("utf-8", "replace")}) + "\n")

    # -- assembly ---------------------------------------------------------------------------------------------

    def collect(self, now_ns: int) -> tuple[list[Iterator[tuple[tuple[int, str], str]]], list[dict[str, Any]]]:
        """(one time-ordered stream of recording lines per series, manifest entry per series) from the parts.

        Streams read the parts as they are written out, one file at a time: a year of 1-minute candles
        is never held in memory, only the set of candle starts present (for the coverage report).
        """
        streams: list[Iterator[dict[str, Any]]] = []
        report: list[dict[str, Any]] = []
        for series in all_series(self.settings):
            chunks = chunks_of(series, self.window, self.chunk_size)
            paths = [p for p in (self._part_of(c) for c in chunks) if p is not None]
            fetched = {c.first_ms for c in chunks if self._part_of(c) is not None}
            got = {start_of_close(series.interval, key[0] // MS) for path in paths for key, _ in read_sorted(path)}
            streams.append(_concat(paths))
            report.append(self._coverage(series, chunks, got, fetched, now_ns))
        return streams, report

    def _part_of(self, chunk: Chunk) -> Path | None:
        """The complete part of a chunk, else its partial one, else None."""
        return next((p for p in (chunk.path(self.store), chunk.path(self.store, True)) if p.is_file()), None)

    def _coverage(self, series: Series, chunks: list[Chunk], got: set[int], fetched: set[int],
                  now_ns: int) -> dict[str, Any]:
        starts = candle_starts(series.interval, self.window.start_ms, self.window.end_ms)
        chunk_of = {}
        for chunk in chunks:
            chunk_of[chunk.first_ms] = chunk
        missing: list[dict[str, Any]] = []
        run: list[int] = []
        reason_of_run = ""
        current_chunk: Chunk | None = None

        def reason(start: int) -> str:
            if current_chunk is None or current_chunk.first_ms not in fetched:
                failed = self.failed.get(current_chunk) if current_chunk else None
                return f"not fetched: {failed}" if failed else "not fetched (interrupted)"
            if next_start_ms(start, series.interval) * MS > now_ns:
                return "not closed yet"
            return "none served (before listing, or a venue gap)"

        def close_run() -> None:
            if run:
                missing.append({"from": iso(run[0] * MS), "to": iso(next_start_ms(run[-1], series.interval) * MS),
                                "candles": len(run), "reason": reason_of_run})

        for start in starts:
            if start in chunk_of:
                current_chunk = chunk_of[start]
            if start in got:
                close_run()
                run = []
                continue
            why = reason(start)
            if run and why != reason_of_run:
                close_run()
                run = []
            reason_of_run = why
            run.append(start)
        close_run()
        have = sorted(got)
        return {
            "category": series.category, "symbol": series.symbol, "interval": series.interval,
            "expected": len(starts), "candles": len(have),
            "first_close": iso(next_start_ms(have[0], series.interval) * MS) if have else None,
            "last_close": iso(next_start_ms(have[-1], series.interval) * MS) if have else None,
            "missing": missing,
        }


def _concat(paths: list[Path]) -> Iterator[tuple[tuple[int, str], str]]:
    for path in paths:
        yield from read_sorted(path)
