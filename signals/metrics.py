"""Prometheus metrics of the signal worker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DOCUMENTS = Counter("finsignal_worker_documents_total", "Documents consumed", ["topic"])
SIGNALS = Counter("finsignal_worker_signals_total", "Signals published to Redis", ["outcome"])
DEADLETTERS = Counter("finsignal_worker_deadletters_total", "Records sent to the dead-letter topic", ["stage"])
SKIPPED = Counter("finsignal_worker_skipped_total", "Documents that produced no signal", ["reason"])
BATCH_SIZE = Histogram(
    "finsignal_worker_batch_documents", "Documents per scored batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
SCORE_SECONDS = Histogram("finsignal_worker_score_seconds", "Model time per batch")
END_TO_END_SECONDS = Histogram(
    "finsignal_worker_end_to_end_seconds",
    "Ingest to signal acknowledged by Redis",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PUBLISH_RETRIES = Counter("finsignal_worker_publish_retries_total", "Redis publish attempts that failed")
COMMITS = Counter("finsignal_worker_commits_total", "Offset commits", ["outcome"])
MODEL_INFO = Gauge("finsignal_worker_model_info", "Model being served", ["name", "version"])
