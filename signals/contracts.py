"""The trading-signal contract published to Redis and to the `signals` audit topic."""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal
from enum import Enum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ingest.contracts import ContractError, Nanos, Symbol, WireModel, decode

SIGNAL_SCHEMA_VERSION = 1
LABELS: tuple[str, str, str] = ("bearish", "neutral", "bullish")

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Direction(str, Enum):
    """What a strategy should lean towards."""

    LONG = "long"
    SHORT = "short"
    FLAT = "flat"

    @classmethod
    def from_label(cls, label: str) -> Direction:
        """bullish -> long, bearish -> short, neutral -> flat."""
        return {"bullish": cls.LONG, "bearish": cls.SHORT, "neutral": cls.FLAT}[label]


class ClassProbs(WireModel):
    """Softmax probabilities of the three sentiment classes; they sum to 1."""

    bearish: Probability
    neutral: Probability
    bullish: Probability

    @model_validator(mode="after")
    def _sums_to_one(self) -> ClassProbs:
        total = self.bearish + self.neutral + self.bullish
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ValueError(f"class probabilities sum to {total:.6f}, not 1")
        return self

    @property
    def label(self) -> str:
        """The most probable class (ties break towards neutral, then in label order)."""
        values = {"neutral": self.neutral, "bearish": self.bearish, "bullish": self.bullish}
        return max(values, key=values.__getitem__)


class ModelInfo(WireModel):
    """Which model made a signal: name, version and a hash of its weights."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    version: Annotated[str, Field(min_length=1, max_length=100)]
    content_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{16,64}$")]


class MarketContext(WireModel):
    """The symbol's market at the signal's `ts_event`, from Bybit data seen at or before that time."""

    venue_symbol: Symbol
    last_price: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    ts_price: Nanos
    realized_vol: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="standard deviation of 1-minute log returns over the window (not annualized)"
    )
    vol_window_s: Annotated[int, Field(gt=0)]
    vol_samples: Annotated[int, Field(ge=0)] = 0


def signal_id(document_id: str, symbol: str, model_version: str) -> str:
    """Deterministic: the same document scored for the same symbol by the same model is the same signal."""
    return hashlib.sha256(f"{document_id}|{symbol}|{model_version}".encode()).hexdigest()[:32]


class Signal(WireModel):
    """A scored view on one symbol, derived from one or more documents."""

    schema_version: Literal[1] = SIGNAL_SCHEMA_VERSION
    id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    symbol: Symbol
    direction: Direction
    score: Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False, description="P(bullish) - P(bearish)")]
    probs: ClassProbs
    confidence: Probability
    model: ModelInfo
    document_ids: Annotated[tuple[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")], ...], Field(min_length=1)]
    chunks: Annotated[int, Field(ge=1)] = 1
    market: MarketContext | None = None
    ts_event: Nanos
    ts_ingest: Nanos
    ts_scored: Nanos

    @model_validator(mode="after")
    def _consistent(self) -> Signal:
        expected = self.probs.bullish - self.probs.bearish
        if not math.isclose(self.score, expected, abs_tol=1e-6):
            raise ValueError(f"score {self.score} is not P(bullish) - P(bearish) = {expected}")
        if self.direction is not Direction.from_label(self.probs.label):
            raise ValueError(f"direction {self.direction.value} disagrees with the top class {self.probs.label}")
        return self

    @classmethod
    def from_probs(
        cls,
        *,
        document_ids: tuple[str, ...],
        symbol: str,
        probs: ClassProbs,
        model: ModelInfo,
        ts_event: int,
        ts_ingest: int,
        ts_scored: int,
        chunks: int = 1,
        market: MarketContext | None = None,
    ) -> Signal:
        """Derive direction, score and confidence from class probabilities."""
        return cls(
            id=signal_id(document_ids[0], symbol, model.version),
            symbol=symbol,
            direction=Direction.from_label(probs.label),
            score=round(probs.bullish - probs.bearish, 9),
            probs=probs,
            confidence=max(probs.bearish, probs.neutral, probs.bullish),
            model=model,
            document_ids=document_ids,
            chunks=chunks,
            market=market,
            ts_event=ts_event,
            ts_ingest=ts_ingest,
            ts_scored=ts_scored,
        )


def decode_signal(raw: bytes | str) -> Signal:
    """Validate a `Signal` from wire bytes."""
    return decode(Signal, raw)


__all__ = [
    "LABELS",
    "ClassProbs",
    "MarketContext",
    "ContractError",
    "Direction",
    "ModelInfo",
    "Signal",
    "decode_signal",
    "signal_id",
]
