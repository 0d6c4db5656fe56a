"""Names of the signal store's Redis keys, laid out so that each publish touches one cluster hash slot.

Every key of one symbol carries the hash tag `{SYMBOL}`, so Redis Cluster keeps them in one slot:

    signals:{BTCUSDT}                      stream of the symbol's signals (fields `id`, `signal`)
    finsignal:seen:{BTCUSDT}:<signal id>   marker of a published signal id (TTL), guards that stream
    finsignal:latest:{BTCUSDT}             the symbol's newest signal by `ts_event` (JSON string)

The publish script touches only these, so it runs atomically on one node: the marker that makes a
re-published signal a no-op lives beside the stream it guards. Signal ids already include the symbol,
so a marker per (symbol, id) is a marker per id. One key spans every symbol:

    finsignal:symbols                      set of symbols with a stream, written before the script

Readers list symbols from that registry and fetch each symbol's latest key. Pub/sub notices go to the
channel `signals.BTCUSDT` (channels are not keys; no slot). `prefix` puts a whole second layout beside
this one (e.g. shadow models' signals under `shadow:`), with the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignalKeys:
    """Key and channel names of one signal store; `prefix` is prepended to every name."""

    prefix: str = ""

    def stream(self, symbol: str) -> str:
        """The symbol's stream: `signals:{BTCUSDT}`."""
        return f"{self.prefix}signals:{{{symbol}}}"

    def seen(self, symbol: str, signal_id: str) -> str:
        """Marker of a published signal id, in its stream's slot."""
        return f"{self.prefix}finsignal:seen:{{{symbol}}}:{signal_id}"

    def latest(self, symbol: str) -> str:
        """The symbol's newest signal by `ts_event`."""
        return f"{self.prefix}finsignal:latest:{{{symbol}}}"

    @property
    def symbols(self) -> str:
        """The registry of symbols that have a stream."""
        return f"{self.prefix}finsignal:symbols"

    def channel(self, symbol: str) -> str:
        """Pub/sub channel notified of the symbol's new signals: `signals.BTCUSDT`."""
        return f"{self.prefix}signals.{symbol}"

    def attempts(self, strategy: str, symbol: str) -> str:
        """An SDK consumer group's handler attempts per entry of one stream (hash, in the stream's slot)."""
        return f"{self.prefix}finsignal:attempts:{{{symbol}}}:{strategy}"

    def deadletter(self, strategy: str) -> str:
        """Stream of the signals an SDK consumer group gave up on."""
        return f"{self.prefix}finsignal:deadletter:{strategy}"

    def symbol_of(self, stream: bytes | str) -> str:
        """`signals:{BTCUSDT}` -> `BTCUSDT`; raises ValueError for a name that is not one of our streams."""
        name = stream.decode() if isinstance(stream, bytes) else stream
        head = f"{self.prefix}signals:{{"
        if not (name.startswith(head) and name.endswith("}")):
            raise ValueError(f"{name!r} is not a signal stream of prefix {self.prefix!r}")
        return name[len(head):-1]


KEYS = SignalKeys()
"""The layout the worker publishes to and readers read, unless told otherwise."""
