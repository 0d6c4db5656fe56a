"""Model lifecycle: the promotion gate, rollback and the `finsignal model` commands. See README.md here.

The registry itself lives in `signals.registry` (the worker follows its pointers); the gate lives here
because it needs the backtest (`consumers.backtest`) as well as the worker's scorer.
"""

from consumers.lifecycle.gate import Decision, GateCheck, promote
from consumers.lifecycle.settings import GateSettings

__all__ = ["Decision", "GateCheck", "GateSettings", "promote"]
