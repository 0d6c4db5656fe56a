"""What an ingestor has already published, so restarts and repeated feed entries publish nothing twice.

Keys are marked only after Kafka acknowledged the record: a crash in between
re-publishes the item on restart (at least once, with the same deterministic
document id downstream), never loses it. `RedisSeen` survives restarts;
`MemorySeen` is a bounded in-process set for running without Redis.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ingest.settings import RedisSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis


class SeenStore(Protocol):
    """A set of keys with an expiry."""

    async def seen(self, keys: Iterable[str]) -> set[str]:
        """The subset of `keys` already marked."""
        ...

    async def mark(self, keys: Iterable[str]) -> None:
        """Remember `keys`."""
        ...

    async def close(self) -> None:
        ...


class MemorySeen:
    """Bounded LRU set: the oldest keys are forgotten first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    async def seen(self, keys: Iterable[str]) -> set[str]:
        return {k for k in keys if k in self._keys}

    async def mark(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    async def close(self) -> None:
        return None


class RedisSeen:
    """Keys in Redis as `{prefix}:{sha1(key)}` with a TTL, so state survives restarts and is shared.

    Each key is its own Cluster slot (no hash tag), so lookups are a pipeline of GETs rather than one
    MGET, which a Cluster would refuse across slots; on one server it is the same single round trip.
    """

    def __init__(self, client: Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{hashlib.sha1(key.encode()).hexdigest()}"

    async def seen(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._key(key))
        flags = await pipe.execute()
        return {k for k, flag in zip(keys, flags) if flag is not None}

    async def mark(self, keys: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(self._key(key), b"1", ex=self.ttl_s)
        await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


def open_seen(redis: RedisSettings | None, prefix: str, ttl_s: int) -> SeenStore:
    """Redis-backed when settings with a URL are given (one server, Sentinel or Cluster), else in memory.

    The caller logs which.
    """
    if redis is None or not redis.url:
        return MemorySeen()
    from ingest.redis_client import async_client

    return RedisSeen(async_client(redis), prefix, ttl_s)
