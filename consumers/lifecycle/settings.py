"""The promotion gates, as settings (`FINSIGNAL_GATE_*`, or `[gate]` in the TOML file)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from ingest.settings import ComponentSettings


class GateSettings(ComponentSettings):
    """What a candidate must show against the live model to be promoted; defaults a quant desk accepts."""

    section: ClassVar[str] = "gate"

    eval_path: Path | None = Field(None, description="labeled JSONL used when `promote` gets no --eval")
    max_accuracy_drop: float = Field(0.01, ge=0, description="accuracy at most this much lower (0.01 = 1 point)")
    max_macro_f1_drop: float = Field(0.02, ge=0, description="macro-F1 at most this much lower")
    min_agreement: float = Field(0.90, ge=0, le=1, description="direction agreement with live, eval set and backtest")
    max_flip_rate: float = Field(0.02, ge=0, le=1, description="share of documents flipping long <-> short at most")
    max_calibration_increase: float = Field(0.03, ge=0, description="expected calibration error at most this higher")
    p99_budget_ms: float = Field(250.0, gt=0, description="single-document p99 scoring latency, on this machine")
    max_p99_ratio: float | None = Field(None, gt=0, description="candidate p99 / live p99 at most this; unset: off")
    latency_docs: int = Field(200, ge=10, description="documents timed one at a time, per model")
    confidence: float = Field(0.95, gt=0, lt=1, description="bootstrap interval of the Sharpe difference")
    bootstrap_samples: int = Field(1000, ge=100)
    bootstrap_block: int = Field(60, ge=1, description="block length (equity periods) of the moving-block bootstrap")
    bootstrap_seed: int = 0
    max_drawdown_increase: float = Field(0.05, ge=0, description="backtest max drawdown at most this higher (fraction)")
    max_turnover_ratio: float = Field(2.0, gt=0, description="backtest turnover at most this multiple of live's")
