"""Blocking reads (XREAD, XREADGROUP) over many Redis streams, on one server or across a Cluster's slots.

One server answers a single XREAD naming every stream. A Cluster refuses a command whose keys hash to
different slots (CROSSSLOT), and each symbol's stream has its own slot, so there `StreamReads` keeps one
blocking read in flight per slot and returns as soon as any of them answers; the others stay in flight
for the next call, so no entry waits for another slot's timeout and nothing is read twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ingest.redis_client import is_cluster, key_slot

Reply = list[tuple[Any, list[tuple[Any, Any]]]]  # [(stream, [(entry id, fields), ...]), ...]


class StreamReads:
    """Reads for one reader (a `watch`, a consumer group member, the gateway); not shared between them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._cluster = is_cluster(client)
        self._inflight: dict[int, asyncio.Future[Reply]] = {}
        self._ready: Reply = []  # read, not yet returned (another slot's read failed in the same call)

    async def read(self, cursors: Mapping[str, Any], *, count: int, block_ms: int, group: str | None = None,
                   consumer: str | None = None) -> Reply:
        """Entries after each stream's cursor (`>` for a group's new entries), waiting up to `block_ms`.

        A slot whose read is still in flight from an earlier call is not read again: its answer
        comes with a later call. The caller must not move a stream's cursor except by what this returns.
        """
        if self._ready:
            ready, self._ready = self._ready, []
            return ready
        for slot, streams in self._by_slot(cursors).items():
            if slot not in self._inflight:
                future = asyncio.ensure_future(self._command(streams, count, block_ms, group, consumer))
                self._inflight[slot] = future
        if not self._inflight:
            return []
        await asyncio.wait(self._inflight.values(), return_when=asyncio.FIRST_COMPLETED)
        out: Reply = []
        error: BaseException | None = None
        for slot, future in list(self._inflight.items()):
            if not future.done():
                continue
            del self._inflight[slot]
            if future.cancelled():
                continue
            if future.exception() is not None:
                error = error or future.exception()
            else:
                out.extend(future.result() or [])
        if error is not None:
            self._ready = out  # a group read's entries are pending for us already: hand them out next time
            raise error
        return out

    def cancel(self) -> None:
        """Abandon the reads in flight (the set of streams changed, or the reader stops).

        An XREAD cancelled loses nothing (cursors did not move); an XREADGROUP may leave entries
        pending for this consumer, which it re-reads from its pending list on restart.
        """
        for future in self._inflight.values():
            future.cancel()
            future.add_done_callback(_retrieve)
        self._inflight.clear()

    def _by_slot(self, cursors: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
        if not self._cluster:
            return {0: dict(cursors)} if cursors else {}
        groups: dict[int, dict[str, Any]] = {}
        for stream, cursor in cursors.items():
            groups.setdefault(key_slot(stream), {})[stream] = cursor
        return groups

    async def _command(self, streams: dict[str, Any], count: int, block_ms: int, group: str | None,
                       consumer: str | None) -> Reply:
        if group is None:
            reply = await self.client.xread(streams, count=count, block=block_ms)
        else:
            reply = await self.client.xreadgroup(group, consumer, streams, count=count, block=block_ms)
        return reply or []


def _retrieve(future: asyncio.Future) -> None:
    """Mark an abandoned read's failure as seen, so dropping it logs nothing."""
    if not future.cancelled():
        future.exception()
