"""`finsignal watch`: tail signals from Redis and print them, one line each."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

from redis.asyncio import Redis

from consumers.stream import known_symbols
from consumers.stream_reads import StreamReads
from signals.contracts import ContractError, Signal, decode_signal
from signals.keys import KEYS, SignalKeys


def format_signal(sig: Signal) -> str:
    """A terminal line: time, symbol, direction, score, confidence, model."""
    ts = datetime.fromtimestamp(sig.ts_event / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    arrow = {"long": "▲", "short": "▼", "flat": "·"}[sig.direction.value]
    return (f"{ts}  {sig.symbol:<10} {arrow} {sig.direction.value:<5} score={sig.score:+.3f} "
            f"conf={sig.confidence:.2f} model={sig.model.version} doc={sig.document_ids[0][:8]}")


async def tail(
    client: Redis,
    symbols: list[str] | None,
    on_signal: Callable[[Signal], None],
    *,
    from_start: bool = False,
    limit: int | None = None,
    idle_timeout_s: float | None = None,
    block_ms: int = 1_000,
    keys: SignalKeys = KEYS,
) -> int:
    """Call `on_signal` for each signal as it arrives; return how many were seen.

    Stops after `limit` signals or `idle_timeout_s` without one, if given. `client` may be a Cluster
    client: streams in different slots are read concurrently (`StreamReads`).
    """
    reads = StreamReads(client)
    try:
        return await _tail(client, reads, symbols, on_signal, from_start=from_start, limit=limit,
                           idle_timeout_s=idle_timeout_s, block_ms=block_ms, keys=keys)
    finally:
        reads.cancel()


async def _tail(client: Redis, reads: StreamReads, symbols: list[str] | None, on_signal: Callable[[Signal], None], *,
                from_start: bool, limit: int | None, idle_timeout_s: float | None, block_ms: int,
                keys: SignalKeys) -> int:
    cursors: dict[str, str] = {}
    seen = 0
    loop = asyncio.get_running_loop()
    last_signal = loop.time()
    while limit is None or seen < limit:
        for sym in symbols or await known_symbols(client, keys):
            key = keys.stream(sym)
            if key not in cursors:
                cursors[key] = "0-0" if from_start else await _last_id(client, key)
        if not cursors:
            await asyncio.sleep(block_ms / 1000)
        else:
            reply = await reads.read(cursors, block_ms=block_ms, count=100)
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    cursors[stream.decode() if isinstance(stream, bytes) else stream] = entry_id
                    try:
                        on_signal(decode_signal(fields[b"signal"]))
                    except (ContractError, KeyError) as exc:
                        print(f"invalid entry {entry_id!r} on {keys.symbol_of(stream)}: {exc}", file=sys.stderr)
                        continue
                    seen += 1
                    last_signal = loop.time()
                    if limit is not None and seen >= limit:
                        return seen
        if idle_timeout_s is not None and loop.time() - last_signal > idle_timeout_s:
            return seen
    return seen


async def _last_id(client: Redis, key: str) -> bytes | str:
    """The stream's newest entry id, so tailing starts after it ("$" would skip entries between reads)."""
    newest = await client.xrevrange(key, count=1)
    return newest[0][0] if newest else "0-0"


def print_signals(out: TextIO = sys.stdout) -> Callable[[Signal], None]:
    """A handler printing each signal on its own line."""
    def handler(sig: Signal) -> None:
        print(format_signal(sig), file=out, flush=True)
    return handler
