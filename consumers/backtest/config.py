"""What a backtest replays and how it trades: frozen configs that reject unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from signals.settings import WorkerSettings


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplayConfig(_Config):
    """How recorded documents reach the scorer."""

    batch_window_ms: Annotated[int, Field(ge=0, description=(
        "documents arriving within this window of the first one are scored together, and the batch is "
        "scored, and its signals stamped, when the window closes; unset: the worker's max_wait_ms"))] | None = None
    max_batch_docs: Annotated[int, Field(ge=1, description=(
        "a batch is scored as soon as it holds this many; unset: the worker's max_pending"))] | None = None
    time_basis: Literal["event", "ingest"] = Field("event", description=(
        "order and stamp events by ts_event (when they happened), or by ts_ingest (when we saw them: stricter, "
        "a late-ingested filing only counts from when it arrived)"))
    document_topics: tuple[str, ...] = Field(("news", "filings"), description="recording topics holding documents")


    def resolved(self, worker: WorkerSettings) -> ReplayConfig:
        """Unset batching filled in from the worker's settings, as the worker would batch."""
        return self.model_copy(update={
            "batch_window_ms": self.batch_window_ms if self.batch_window_ms is not None else worker.max_wait_ms,
            "max_batch_docs": self.max_batch_docs if self.max_batch_docs is not None else worker.max_pending,
        })


class StrategyConfig(_Config):
    """A threshold strategy on the signals, executed on recorded prices; one position per symbol."""

    entry_threshold: Annotated[float, Field(ge=0, le=1, description="enter when |score| >= this")] = 0.3
    min_confidence: Annotated[float, Field(ge=0, le=1, description="and the top class probability >= this")] = 0.0
    horizon_s: Annotated[int, Field(gt=0, description="exit this long after entry")] = 1800
    move_threshold_bps: Annotated[float, Field(gt=0, description=(
        "signal quality: a move of at least this much in the predicted direction within the horizon is a "
        "true positive"))] = 50.0
    fee_bps: Annotated[float, Field(ge=0, description="fee per fill, on notional (Bybit linear taker: 5.5)")] = 5.5
    slippage_bps: Annotated[float, Field(ge=0, description="price concession per fill")] = 2.0
    position_size: Annotated[float, Field(gt=0, description="notional per trade, as a fraction of capital")] = 1.0
    latency_ms: Annotated[int, Field(ge=0, description="from a signal to its order")] = 0
    overlap: Literal["ignore", "reverse"] = Field("ignore", description=(
        "a signal for a symbol already held: ignore it, or (opposite direction only) close and reverse"))
    symbols: tuple[str, ...] | None = Field(None, description="trade only these symbols; default all priced")


class BacktestConfig(_Config):
    """Everything that decides a backtest's result, recorded in its report."""

    replay: ReplayConfig = ReplayConfig()
    strategy: StrategyConfig = StrategyConfig()
