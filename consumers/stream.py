"""Strategy-side reading of signals from Redis streams, one consumer group per strategy.

    async for signal in SignalStream(client, strategy="momo", symbols=["BTCUSDT"]):
        handle(signal)          # acknowledged once the loop body returns

    await SignalStream(client, "momo", patterns=["*USDT"]).run(handle)   # callback form, sync or async handler

Delivery is at least once, in stream order per symbol:

- a signal is acknowledged (XACK) only after its handler returns (for the iterator: when the loop asks
  for the next one), so a strategy that crashes mid-handler leaves it pending;
- on start a consumer first re-reads its own pending entries, then reads new ones: it resumes from the
  last entry it acknowledged;
- every `claim_interval_s` it takes over entries that another consumer of its group has held
  unacknowledged for `claim_min_idle_ms` (XAUTOCLAIM), as when that consumer was killed;
- duplicate signal ids (a document re-scored and published again) are acknowledged and dropped;
- with `max_deliveries`, a signal whose handler has failed that many times (a poison signal that
  crashes every attempt) is moved to the stream `finsignal:deadletter:{strategy}` and acknowledged,
  so the group can move on. Attempts are counted in a hash per stream,
  `finsignal:attempts:{SYMBOL}:{strategy}` (in the stream's Cluster slot, so the acknowledgement and
  the reset are one transaction), one more round trip per signal, because Redis' own delivery
  counter also counts entries that were read in a batch but never reached a handler.

`client` is a `redis.asyncio.Redis` or `redis.asyncio.cluster.RedisCluster`: build it with
`ingest.redis_client.async_client(RedisSettings())` to follow `FINSIGNAL_REDIS_*` (one server,
Sentinel or Cluster). Key names come from `signals.keys` (`keys=` selects another layout).
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import random
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers.stream_reads import StreamReads
from ingest.redis_client import async_client
from ingest.settings import RedisSettings
from signals.contracts import ContractError, Signal, decode_signal
from signals.keys import KEYS, SignalKeys

log = structlog.get_logger(__name__)

Handler = Callable[[Signal], Awaitable[object] | object]
# Quix-style error callback: return True to acknowledge the signal and go on, False to re-raise.
ErrorCallback = Callable[[Exception, Signal], bool]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _RecentIds:
    """Bounded memory of signal ids already handled."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, signal_id: str) -> bool:
        if signal_id in self._ids:
            self._ids.move_to_end(signal_id)
            return True
        return False

    def add(self, signal_id: str) -> None:
        self._ids[signal_id] = None
        self._ids.move_to_end(signal_id)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def seen(self, signal_id: str) -> bool:
        """True if already seen; remembers it otherwise."""
        if signal_id in self:
            return True
        self.add(signal_id)
        return False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stream entry handed to this consumer; `signal` is None when the entry is unreadable."""

    stream: str
    entry_id: str
    signal: Signal | None
    symbol: str


async def known_symbols(client: Redis, keys: SignalKeys = KEYS) -> list[str]:
    """Symbols that have a signal stream."""
    return sorted(_text(s) for s in await client.smembers(keys.symbols))


async def latest(client: Redis, symbols: Iterable[str] | None = None, keys: SignalKeys = KEYS) -> dict[str, Signal]:
    """The most recent signal per symbol, by `ts_event` (all symbols when none are named)."""
    wanted = sorted(set(symbols)) if symbols else await known_symbols(client, keys)
    if not wanted:
        return {}
    # One GET per symbol in a pipeline: on a Cluster each goes to its slot's node.
    pipe = client.pipeline(transaction=False)
    for sym in wanted:
        pipe.get(keys.latest(sym))
    values = await pipe.execute()
    return {sym: decode_signal(value) for sym, value in zip(wanted, values) if value is not None}


def _newer(candidate: Signal, current: Signal | None) -> bool:
    return current is None or candidate.ts_event >= current.ts_event


class SignalStream:
    """Signals for one strategy (a Redis consumer group); see the module docstring.

    `symbols` names streams exactly; `patterns` are shell-style globs (`*USDT`) matched against the
    symbols that exist, re-checked every `rediscover_s`. Neither means every symbol.
    """

    def __init__(
        self,
        client: Redis,
        strategy: str,
        symbols: Iterable[str] | None = None,
        *,
        patterns: Iterable[str] | None = None,
        consumer: str | None = None,
        start: Literal["earliest", "latest"] = "latest",
        block_ms: int = 1_000,
        count: int = 100,
        rediscover_s: float = 5.0,
        claim_min_idle_ms: int | None = 60_000,
        claim_interval_s: float = 5.0,
        max_deliveries: int | None = None,
        dedupe_capacity: int = 100_000,
        keys: SignalKeys = KEYS,
    ) -> None:
        if not strategy:
            raise ValueError("a strategy name is required: it names the consumer group")
        if max_deliveries is not None and max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.client = client
        self.group = strategy
        self.consumer = consumer or f"{strategy}@{socket.gethostname()}"
        self.symbols = list(symbols) if symbols else None
        self.patterns = list(patterns) if patterns else None
        self.start = start
        self.block_ms = block_ms
        self.count = count
        self.rediscover_s = rediscover_s
        self.claim_min_idle_ms = claim_min_idle_ms
        self.claim_interval_s = claim_interval_s
        self.max_deliveries = max_deliveries
        self.keys = keys
        self.snapshot: dict[str, Signal] = {}  # newest handled signal per symbol, by ts_event
        self._streams: list[str] = []
        self._recent = _RecentIds(dedupe_capacity)
        self._closed = False

    @property
    def deadletter_stream(self) -> str:
        return self.keys.deadletter(self.group)

    def _attempts_key(self, delivery: Delivery) -> str:
        return self.keys.attempts(self.group, delivery.symbol)

    def close(self) -> None:
        """Stop after the current signal (which is acknowledged first)."""
        self._closed = True

    async def latest(self) -> dict[str, Signal]:
        """The newest published signal of each subscribed symbol, from Redis."""
        streams = await self._wanted_streams()
        return await latest(self.client, [self.keys.symbol_of(s) for s in streams], self.keys)

    async def __aiter__(self) -> AsyncIterator[Signal]:
        async with aclosing(self._deliveries()) as deliveries:
            async for delivery in deliveries:
                if await self._skip(delivery) or await self._poisoned(delivery):
                    continue
                assert delivery.signal is not None
                yield delivery.signal
                await self._done(delivery)
                if self._closed:
                    return

    async def run(self, handler: Handler, *, on_error: ErrorCallback | None = None) -> int:
        """Call `handler` (sync or async) for each signal until `close()`; return how many were handled.

        The signal is acknowledged after the handler returns. If it raises, `on_error(exc, signal)`
        decides: True acknowledges it and goes on; False (or no callback) re-raises with the signal
        left pending, to be redelivered on restart or claimed by another consumer.
        """
        handled = 0
        async with aclosing(self._deliveries()) as deliveries:
            async for delivery in deliveries:
                if await self._skip(delivery) or await self._poisoned(delivery):
                    continue
                assert delivery.signal is not None
                try:
                    result = handler(delivery.signal)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    if on_error is None or not on_error(exc, delivery.signal):
                        raise
                    log.warning("stream.handler_error_suppressed", group=self.group, entry=delivery.entry_id,
                                signal_id=delivery.signal.id, error=repr(exc))
                await self._done(delivery)
                handled += 1
                if self._closed:
                    break
        return handled

    # -- delivery ------------------------------------------------------------------------------------

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        """Own backlog first, then claimed and new entries, forever (until `close()`)."""
        reads = StreamReads(self.client)
        try:
            async with aclosing(self._delivery_loop(reads)) as deliveries:
                async for delivery in deliveries:
                    yield delivery
        finally:
            reads.cancel()

    async def _delivery_loop(self, reads: StreamReads) -> AsyncIterator[Delivery]:
        loop = asyncio.get_running_loop()
        next_discovery = next_claim = 0.0
        backoff = 0.1
        while not self._closed:
            try:
                if loop.time() >= next_discovery:
                    added = await self._discover()
                    next_discovery = loop.time() + self.rediscover_s
                    for key in added:  # resume: what this consumer left unacknowledged last time
                        async for delivery in self._history(key):
                            yield delivery
                if self.claim_min_idle_ms is not None and loop.time() >= next_claim:
                    next_claim = loop.time() + self.claim_interval_s
                    for key in list(self._streams):
                        if await self._claim(key):
                            async for delivery in self._history(key):
                                yield delivery
                if not self._streams:
                    await asyncio.sleep(min(self.block_ms / 1000, self.rediscover_s))
                    continue
                reply = await reads.read({s: ">" for s in self._streams}, count=self.count, block_ms=self.block_ms,
                                         group=self.group, consumer=self.consumer)
                backoff = 0.1
                for stream, entries in reply or []:
                    for entry_id, fields in entries:
                        yield self._delivery(stream, entry_id, fields)
            except (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError) as exc:
                # Cluster failover and resharding answer CLUSTERDOWN / TRYAGAIN for a while: wait, as for an outage.
                log.warning("stream.redis_unavailable", group=self.group, error=repr(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 5.0)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream or group was deleted under us: create them again on the next pass.
                log.warning("stream.group_missing", group=self.group, error=str(exc))
                self._streams.clear()
                reads.cancel()
                next_discovery = 0.0

    async def _wanted_streams(self) -> list[str]:
        if self.symbols is not None and self.patterns is None:
            return [self.keys.stream(s) for s in self.symbols]
        existing = await known_symbols(self.client, self.keys)
        wanted = set(self.symbols or ())
        if self.patterns is None:
            wanted.update(existing)
        else:
            wanted.update(s for s in existing if any(fnmatch.fnmatchcase(s, p) for p in self.patterns))
        return [self.keys.stream(s) for s in sorted(wanted)]

    async def _discover(self) -> list[str]:
        """Join the group on streams not joined yet; return those."""
        added = []
        for key in await self._wanted_streams():
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
            added.append(key)
        return added

    async def _claim(self, key: str) -> int:
        """Take over entries idle in other consumers' pending lists; return how many."""
        claimed = 0
        cursor: bytes | str = "0-0"
        while True:
            # The claimed entries are then read back from our own pending list, which also lists
            # entries deleted from the stream: Redis 6.2 replies (nil, nil) for those, id lost.
            reply = await self.client.xautoclaim(key, self.group, self.consumer, self.claim_min_idle_ms,
                                                 start_id=cursor, count=self.count)
            cursor = reply[0]
            claimed += len(reply[1])
            if _text(cursor) == "0-0":
                break
        if claimed:
            log.info("stream.claimed", group=self.group, consumer=self.consumer, stream=key, entries=claimed)
        return claimed

    async def _history(self, key: str) -> AsyncIterator[Delivery]:
        """This consumer's pending entries on one stream, oldest first."""
        last = "0-0"
        while not self._closed:
            reply = await self.client.xreadgroup(self.group, self.consumer, {key: last}, count=self.count)
            entries = [e for _, batch in (reply or []) for e in batch]
            if not entries:
                return
            for entry_id, fields in entries:
                last = _text(entry_id)
                yield self._delivery(key, entry_id, fields)

    async def _poisoned(self, delivery: Delivery) -> bool:
        """Count a handler attempt; dead-letter the signal instead once `max_deliveries` attempts failed."""
        if self.max_deliveries is None:
            return False
        attempt = await self.client.hincrby(self._attempts_key(delivery), _attempt_field(delivery), 1)
        if attempt <= self.max_deliveries:
            return False
        assert delivery.signal is not None
        await self.client.xadd(self.deadletter_stream, {
            "stream": delivery.stream, "entry": delivery.entry_id, "signal": delivery.signal.model_dump_json(),
            "attempts": attempt - 1, "reason": f"handler failed {attempt - 1} times",
        })
        await self._ack(delivery)
        log.error("stream.dead_lettered", group=self.group, stream=delivery.stream, entry=delivery.entry_id,
                  signal_id=delivery.signal.id, attempts=attempt - 1)
        return True

    def _delivery(self, stream: bytes | str, entry_id: bytes | str, fields: dict | None) -> Delivery:
        stream, entry_id = _text(stream), _text(entry_id)
        return Delivery(stream, entry_id, self._parse(stream, entry_id, fields), self.keys.symbol_of(stream))

    def _parse(self, stream: str, entry_id: str, fields: dict | None) -> Signal | None:
        if not fields:  # deleted or trimmed by MAXLEN while pending: nothing left to deliver
            return None
        try:
            return decode_signal(fields.get(b"signal") or fields.get("signal") or b"")
        except ContractError as exc:
            log.error("stream.invalid_signal", stream=stream, entry=entry_id, error=str(exc))
            return None

    async def _skip(self, delivery: Delivery) -> bool:
        """Acknowledge and drop unreadable entries and duplicate signal ids."""
        if delivery.signal is not None and delivery.signal.id not in self._recent:
            return False
        if delivery.signal is not None:
            log.debug("stream.duplicate", group=self.group, signal_id=delivery.signal.id, entry=delivery.entry_id)
        await self._ack(delivery)
        return True

    async def _done(self, delivery: Delivery) -> None:
        """After the handler returned: acknowledge, remember the id, update the snapshot."""
        assert delivery.signal is not None
        await self._ack(delivery)
        self._recent.add(delivery.signal.id)
        sig = delivery.signal
        if _newer(sig, self.snapshot.get(sig.symbol)):
            self.snapshot[sig.symbol] = sig

    async def _ack(self, delivery: Delivery) -> None:
        if self.max_deliveries is None:
            await self.client.xack(delivery.stream, self.group, delivery.entry_id)
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(delivery.stream, self.group, delivery.entry_id)
        pipe.hdel(self._attempts_key(delivery), _attempt_field(delivery))
        await pipe.execute()


def _attempt_field(delivery: Delivery) -> str:
    return f"{delivery.stream}|{delivery.entry_id}"


def consume(
    redis: str | RedisSettings,
    strategy: str,
    handler: Handler,
    symbols: Iterable[str] | None = None,
    *,
    on_error: ErrorCallback | None = None,
    **options: Any,
) -> int:
    """Blocking callback form for code that is not async: run `handler` on each signal until interrupted.

    `redis` is a URL (credentials, TLS and `cluster` still come from `FINSIGNAL_REDIS_*`) or settings.
    """
    settings = redis if isinstance(redis, RedisSettings) else RedisSettings(url=redis)

    async def main() -> int:
        client = async_client(settings)
        try:
            return await SignalStream(client, strategy, symbols, **options).run(handler, on_error=on_error)
        finally:
            await client.aclose()

    return asyncio.run(main())


def symbol_of(stream: bytes | str) -> str:
    """`signals:{BTCUSDT}` -> `BTCUSDT` (the default layout)."""
    return KEYS.symbol_of(stream)
