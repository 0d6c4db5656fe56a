"""Signal consumers: the strategy SDK, `finsignal watch`, the WebSocket gateway and backtests (see README.md)."""

from consumers.stream import Delivery, SignalStream, consume, known_symbols, latest
from signals.contracts import Direction, Signal

__all__ = ["Delivery", "Direction", "Signal", "SignalStream", "consume", "known_symbols", "latest"]
