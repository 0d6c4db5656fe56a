"""Publish signals to Redis: one stream per symbol, a pub/sub notice, and idempotence by signal id."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from signals.contracts import Signal

STREAM_PREFIX = "signals:"
CHANNEL_PREFIX = "signals."
# Bookkeeping lives outside the `signals:` namespace so `signals:*` names only symbol streams.
SEEN_PREFIX = "finsignal:seen:"
LATEST_KEY = "finsignal:latest"
SYMBOLS_KEY = "finsignal:symbols"

# One round trip per signal that is atomic on the server: a signal id already
# published (a re-score after a crash) adds nothing, so readers never see a
# duplicate even though Kafka redelivers. The latest-value hash keeps the newest
# signal by ts_event (compared as digit strings: nanoseconds overflow Lua's doubles),
# so a late re-score of an old document does not replace a newer view.
_PUBLISH_LUA = """
local function not_newer(stored, ts)
  local cur = stored and string.match(stored, '"ts_event":(%d+)')
  if not cur then return true end
  if #cur ~= #ts then return #cur < #ts end
  return cur <= ts
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1], 'signal', ARGV[2])
  if not_newer(redis.call('HGET', KEYS[3], ARGV[5]), ARGV[7]) then
    redis.call('HSET', KEYS[3], ARGV[5], ARGV[2])
  end
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('PUBLISH', ARGV[6], ARGV[2])
  return entry
end
return false
"""


def stream_key(symbol: str) -> str:
    """Redis stream holding a symbol's signals: `signals:{SYMBOL}`."""
    return f"{STREAM_PREFIX}{symbol}"


def channel(symbol: str) -> str:
    """Pub/sub channel notified of a symbol's new signals: `signals.{SYMBOL}`."""
    return f"{CHANNEL_PREFIX}{symbol}"


class RedisSignalSink:
    """Writes signals so that a batch is either acknowledged by Redis or raises."""

    def __init__(self, client: redis.Redis, *, maxlen: int, dedupe_ttl_s: int, prefix: str = "") -> None:
        self._client = client
        self._prefix = prefix  # prepended to every key and channel: shadow signals live apart from live ones
        self._maxlen = maxlen
        self._ttl = dedupe_ttl_s
        self._script = client.register_script(_PUBLISH_LUA)

    def publish(self, signals: Sequence[Signal]) -> list[str | None]:
        """Publish in one pipeline; return each signal's stream entry id, or None if it was a duplicate."""
        if not signals:
            return []
        pipe = self._client.pipeline(transaction=False)
        p = self._prefix
        for sig in signals:
            self._script(
                keys=[p + stream_key(sig.symbol), f"{p}{SEEN_PREFIX}{sig.id}", p + LATEST_KEY, p + SYMBOLS_KEY],
                args=[sig.id, sig.model_dump_json(), self._ttl, self._maxlen, sig.symbol, p + channel(sig.symbol),
                      str(sig.ts_event)],
                client=pipe,
            )
        results = pipe.execute(raise_on_error=True)
        return [r.decode() if isinstance(r, bytes) else r for r in results]
