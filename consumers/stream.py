"""Strategy-side reading of signals from Redis streams, one consumer group per strategy.

    async for signal in SignalStream(client, strategy="momo", symbols=["BTCUSDT"]):
        handle(signal)          # acknowledged once the loop body returns

A signal is acknowledged (XACK) when the loop asks for the next one, so a strategy
that crashes mid-handler gets that signal again on restart: first its own pending
entries, then new ones. Duplicate signal ids (re-scored documents) are dropped.
"""

from __future__ import annotations

import asyncio
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from signals.contracts import ContractError, Signal, decode_signal
from signals.redis_sink import LATEST_KEY, STREAM_PREFIX, SYMBOLS_KEY, stream_key

log = structlog.get_logger(__name__)


class _RecentIds:
    """Bounded memory of signal ids already delivered."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def seen(self, signal_id: str) -> bool:
        """True if already seen; remembers it otherwise."""
        if signal_id in self._ids:
            self._ids.move_to_end(signal_id)
            return True
        self._ids[signal_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return False


async def known_symbols(client: Redis) -> list[str]:
    """Symbols that have a signal stream."""
    return sorted(s.decode() if isinstance(s, bytes) else s for s in await client.smembers(SYMBOLS_KEY))


async def latest(client: Redis, symbols: Iterable[str] | None = None) -> dict[str, Signal]:
    """The most recent signal per symbol (all symbols when none are named)."""
    raw = await client.hgetall(LATEST_KEY)
    wanted = set(symbols) if symbols else None
    out = {}
    for key, value in raw.items():
        sym = key.decode() if isinstance(key, bytes) else key
        if wanted is None or sym in wanted:
            out[sym] = decode_signal(value)
    return out


class SignalStream:
    """Async iterator of `Signal`s for one strategy; see the module docstring."""

    def __init__(
        self,
        client: Redis,
        strategy: str,
        symbols: Iterable[str] | None = None,
        *,
        consumer: str | None = None,
        start: Literal["earliest", "latest"] = "latest",
        block_ms: int = 1_000,
        count: int = 100,
        rediscover_s: float = 5.0,
    ) -> None:
        self.client = client
        self.group = strategy
        self.consumer = consumer or f"{strategy}@{socket.gethostname()}"
        self.symbols = list(symbols) if symbols else None
        self.start = start
        self.block_ms = block_ms
        self.count = count
        self.rediscover_s = rediscover_s
        self._streams: list[str] = []
        self._recent = _RecentIds()
        self._closed = False

    def close(self) -> None:
        """Stop after the current signal."""
        self._closed = True

    async def _discover(self) -> list[str]:
        symbols = self.symbols if self.symbols is not None else await known_symbols(self.client)
        streams = [stream_key(s) for s in symbols]
        for key in streams:
            if key in self._streams:
                continue
            try:
                # MKSTREAM: a strategy may subscribe before the first signal for its symbol exists.
                await self.client.xgroup_create(key, self.group, id="0" if self.start == "earliest" else "$",
                                                mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._streams.append(key)
        return self._streams

    async def __aiter__(self) -> AsyncIterator[Signal]:
        loop = asyncio.get_running_loop()
        streams = await self._discover()
        next_discovery = loop.time() + self.rediscover_s
        backlog = True  # first drain what this consumer left unacknowledged last time
        while not self._closed:
            if self.symbols is None and loop.time() >= next_discovery:
                streams = await self._discover()
                next_discovery = loop.time() + self.rediscover_s
            if not streams:
                await asyncio.sleep(min(self.block_ms / 1000, self.rediscover_s))
                continue
            ids = "0" if backlog else ">"
            reply = await self.client.xreadgroup(
                self.group, self.consumer, {s: ids for s in streams}, count=self.count,
                block=None if backlog else self.block_ms,
            )
            entries = [(s, e) for s, batch in (reply or []) for e in batch]
            if backlog and not entries:
                backlog = False
                continue
            for stream, (entry_id, fields) in entries:
                signal = self._parse(stream, entry_id, fields)
                if signal is not None and not self._recent.seen(signal.id):
                    yield signal
                await self.client.xack(stream, self.group, entry_id)
                if self._closed:
                    return

    def _parse(self, stream: bytes | str, entry_id: bytes, fields: dict | None) -> Signal | None:
        if not fields:  # trimmed by MAXLEN while pending: nothing left to deliver
            return None
        try:
            return decode_signal(fields.get(b"signal") or fields.get("signal") or b"")
        except ContractError as exc:
            log.error("stream.invalid_signal", stream=stream, entry=entry_id, error=str(exc))
            return None


def symbol_of(stream: bytes | str) -> str:
    """`signals:BTCUSDT` -> `BTCUSDT`."""
    name = stream.decode() if isinstance(stream, bytes) else stream
    return name.removeprefix(STREAM_PREFIX)
