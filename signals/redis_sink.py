"""Publish signals to Redis: one stream per symbol, a pub/sub notice, and idempotence by signal id.

Key names are in `signals.keys`: every key one publish script touches carries the symbol's hash tag,
so the script runs in one slot of a Redis Cluster as on a single server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from ingest.redis_client import is_cluster
from signals.contracts import Signal
from signals.keys import KEYS, SignalKeys

# One call per signal that is atomic on the server: a signal id already published
# (a re-score after a crash) adds nothing, so readers never see a duplicate even though
# Kafka redelivers. The marker (KEYS[2]) lives in the stream's slot, so the check and the
# XADD are one atomic step on Cluster too. The latest-value key keeps the newest signal by
# ts_event (compared as digit strings: nanoseconds overflow Lua's doubles), so a late
# re-score of an old document does not replace a newer view.
_PUBLISH_LUA = """
local function not_newer(stored, ts)
  local cur = stored and string.match(stored, '"ts_event":(%d+)')
  if not cur then return true end
  if #cur ~= #ts then return #cur < #ts end
  return cur <= ts
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1], 'signal', ARGV[2])
  if not_newer(redis.call('GET', KEYS[3]), ARGV[6]) then
    redis.call('SET', KEYS[3], ARGV[2])
  end
  redis.call('PUBLISH', ARGV[5], ARGV[2])
  return entry
end
return false
"""


def stream_key(symbol: str, keys: SignalKeys = KEYS) -> str:
    """Redis stream holding a symbol's signals: `signals:{BTCUSDT}`."""
    return keys.stream(symbol)


def channel(symbol: str, keys: SignalKeys = KEYS) -> str:
    """Pub/sub channel notified of a symbol's new signals: `signals.BTCUSDT`."""
    return keys.channel(symbol)


class RedisSignalSink:
    """Writes signals so that a batch is either acknowledged by Redis or raises.

    `client` is a `redis.Redis` (one server or a Sentinel master) or a `redis.cluster.RedisCluster`.
    """

    def __init__(self, client: Any, *, maxlen: int, dedupe_ttl_s: int, keys: SignalKeys = KEYS) -> None:
        self._client = client
        self._maxlen = maxlen
        self._ttl = dedupe_ttl_s
        self.keys = keys
        self._script = client.register_script(_PUBLISH_LUA)
        self._cluster = is_cluster(client)
        if self._cluster:
            # redis-py's Cluster pipelines have no script support (they cannot load a script into a
            # node that lacks it), so the script is loaded into every primary here and called by
            # digest; a node that still lacks it (added, failed over, SCRIPT FLUSH) gets it below.
            client.script_load(_PUBLISH_LUA)

    def publish(self, signals: Sequence[Signal]) -> list[str | None]:
        """Publish in one pipeline; return each signal's stream entry id, or None if it was a duplicate."""
        if not signals:
            return []
        try:
            results = self._execute(signals)
        except NoScriptError:
            # Nothing of a failed call was applied and every call is idempotent: load, run again.
            self._client.script_load(_PUBLISH_LUA)
            results = self._execute(signals)
        return [r.decode() if isinstance(r, bytes) else r for r in results[1:]]

    def _execute(self, signals: Sequence[Signal]) -> list[Any]:
        keys = self.keys
        pipe = self._client.pipeline(transaction=False)
        # The registry spans symbols, so it is outside the script's slot. SADD is idempotent and
        # runs with every attempt, and offsets are committed only after the whole pipeline
        # succeeded: a symbol whose stream got an entry is in the registry before the
        # document's offset is committed, even across crashes and retries.
        pipe.sadd(keys.symbols, *sorted({sig.symbol for sig in signals}))
        for sig in signals:
            script_keys = [keys.stream(sig.symbol), keys.seen(sig.symbol, sig.id), keys.latest(sig.symbol)]
            args = [sig.id, sig.model_dump_json(), self._ttl, self._maxlen, keys.channel(sig.symbol),
                    str(sig.ts_event)]
            if self._cluster:
                pipe.execute_command("EVALSHA", self._script.sha, len(script_keys), *script_keys, *args)
            else:
                self._script(keys=script_keys, args=args, client=pipe)
        return pipe.execute(raise_on_error=True)
