"""Settings of the signal worker; `RedisSettings` (shared with the ingestors) lives in ingest.settings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from ingest.news.settings import DEFAULT_CASHTAGS, DEFAULT_NAMES
from ingest.settings import ComponentSettings, RedisSettings  # RedisSettings re-exported: ingest uses it too


class WorkerSettings(ComponentSettings):
    """The scoring worker (`FINSIGNAL_WORKER_*`)."""

    section: ClassVar[str] = "worker"

    model_dir: Path | None = Field(
        None, description="checkpoint directory (or a symlink to one), watched for new versions; unset: demo model"
    )
    model_poll_s: float = Field(10.0, ge=0, description="how often to look for a new model version; 0 = never")
    backend: Literal["transformers", "vllm"] = "transformers"
    device: str = Field("cpu", description="cpu, cuda or cuda:N (transformers backend)")
    dtype: Literal["float32", "bfloat16"] = "float32"
    mode: Literal["classifier", "prompt"] = Field(
        "classifier", description="a classification head, or label-word log-probabilities of a causal LM"
    )
    group_id: str = "finsignal-worker"
    token_budget: int = Field(8192, ge=1, description="padded tokens per forward pass at most")
    max_batch: int = Field(64, ge=1, description="sequences per forward pass at most")
    batch_overhead_tokens: int = Field(
        128, ge=0, description="fixed cost of a forward pass in token equivalents, traded against padding"
    )
    max_wait_ms: int = Field(20, ge=0, description="longest a document waits for its batch to fill")
    max_pending: int = Field(1024, ge=1, description="documents held for batching at most")
    max_length: int = Field(
        512, ge=32, description="tokens per forward pass at most (the model's context caps it); longer documents "
        "are scored as overlapping chunks. A pretrained base declares its whole context (8192, 128k): not a chunk size"
    )
    chunk_overlap: int = Field(32, ge=0, description="tokens shared by neighbouring chunks of a long document")
    prompt_chat_template: bool = Field(
        True, description="prompt mode: wrap the prompt in the tokenizer's chat template when it has one"
    )
    prompt_calibrate: bool = Field(
        True, description="prompt mode: divide out the label prior measured on content-free inputs at load"
    )
    poll_timeout_ms: int = Field(100, ge=0)
    no_symbol_policy: Literal["market", "skip"] = Field(
        "market", description="documents naming no symbol: a market-wide signal, or skip (counted and logged)"
    )
    market_symbol: str = "MARKET"
    link_symbols: bool = Field(True, description="add cashtags, names and filer CIKs found in the text")
    names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NAMES))
    cashtags: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CASHTAGS))
    cik_tickers: dict[str, str] = Field(default_factory=dict, description="SEC CIK -> ticker")
    max_symbols: int = Field(8, ge=1, description="signals one document may produce at most")
    market_context: bool = Field(True, description="attach last price and realized volatility from Bybit topics")
    vol_window_s: int = Field(1800, ge=60)
    market_lookback: int = Field(5000, ge=0, description="records per market partition read at start-up")
    stream_maxlen: int = Field(100_000, ge=1, description="approximate cap of each signals:{SYMBOL} stream")
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="how long a signal id is remembered as published")
    audit_topic: bool = Field(True, description="also publish each signal to the `signals` Kafka topic")
    metrics_port: int | None = Field(None, description="serve Prometheus metrics on this port")
    summary_interval_s: float = Field(
        60.0, ge=0, description="log a one-line summary (documents, signals, dead letters, lag, model) this often; "
        "0 = never"
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; unset means torch's default")
    # Shadow scoring: a second model on the same batches, published where no strategy reads by default.
    shadow_dir: Path | None = Field(
        None, description="checkpoint directory or symlink (e.g. <registry>/shadow) scored beside live; unset: off"
    )
    shadow_prefix: str = Field("shadow:", min_length=1, description="prefix of every Redis key shadow signals use")
    shadow_queue: int = Field(4, ge=1, description="live batches waiting for the shadow at most; more are dropped")
    shadow_agreement_window: int = Field(1000, ge=1, description="signals the agreement gauge averages over")
    # Drift of the live model's outputs (signals.drift).
    drift_reference: Literal["warmup", "promotion"] = Field(
        "warmup", description="reference: the first drift_warmup signals, or the promotion eval (reference.json "
        "beside the model; falls back to warm-up when absent)"
    )
    drift_warmup: int = Field(500, ge=1, description="signals in a warm-up reference")
    drift_window: int = Field(500, ge=1, description="most recent signals compared with the reference")
    drift_min_signals: int = Field(100, ge=1, description="fewest signals in reference and window to compare")
    drift_psi_alert: float = Field(0.25, gt=0, description="PSI above this is drift (the alert rule's threshold)")
    drift_ks_alpha: float = Field(0.01, gt=0, lt=1, description="KS p-value below this is drift")
    drift_publish_s: float = Field(5.0, ge=0, description="how often the drift snapshot is written to Redis")
