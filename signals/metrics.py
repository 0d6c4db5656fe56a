"""Prometheus metrics of the signal worker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_RATIO = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)

DOCUMENTS = Counter("finsignal_worker_documents_total", "Records consumed", ["topic"])
SCORED_DOCUMENTS = Counter("finsignal_worker_scored_documents_total", "Documents scored (rate = documents/s)")
TOKENS = Counter("finsignal_worker_tokens_total", "Tokens through the model (rate = tokens/s)", ["kind"])
SIGNALS = Counter("finsignal_worker_signals_total", "Signals published to Redis", ["outcome"])
DEADLETTERS = Counter("finsignal_worker_deadletters_total", "Records sent to the dead-letter topic", ["stage"])
SKIPPED = Counter("finsignal_worker_skipped_total", "Documents that produced no signal", ["reason"])
BATCH_SIZE = Histogram(
    "finsignal_worker_batch_sequences", "Sequences per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_FILL = Histogram("finsignal_worker_batch_fill_ratio", "Padded tokens of a pass / token budget", buckets=_RATIO)
PADDING_FRACTION = Histogram("finsignal_worker_padding_fraction", "Share of computed tokens that are padding",
                             buckets=_RATIO)
SCORE_SECONDS = Histogram("finsignal_worker_score_seconds", "Model time per flush")
QUEUE_WAIT_SECONDS = Histogram(
    "finsignal_worker_queue_wait_seconds", "Time a document waited for its batch",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
END_TO_END_SECONDS = Histogram(
    "finsignal_worker_end_to_end_seconds",
    "Ingest to signal acknowledged by Redis",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONSUMER_LAG = Gauge("finsignal_worker_consumer_lag", "High watermark minus position", ["topic", "partition"])
PUBLISH_RETRIES = Counter("finsignal_worker_publish_retries_total", "Redis publish attempts that failed")
COMMITS = Counter("finsignal_worker_commits_total", "Offset commits", ["outcome"])
MODEL_INFO = Gauge("finsignal_worker_model_info", "Model being served (1) and retired (0)", ["name", "version"])
MODEL_RELOADS = Counter("finsignal_worker_model_reloads_total", "Model versions picked up", ["outcome"])
MARKET_EVENTS = Counter("finsignal_worker_market_events_total", "Market events taken into the context", ["type"])

# Model lifecycle: the latency of each model, shadow scoring beside live, and drift of live outputs.
MODEL_SECONDS = Histogram("finsignal_worker_model_seconds", "Model time per flush, live and shadow", ["role"])
SHADOW_COMPARED = Counter("finsignal_worker_shadow_compared_total", "Signals scored by both live and shadow")
SHADOW_AGREED = Counter("finsignal_worker_shadow_agreed_total", "Of those, signals where both chose one direction")
SHADOW_AGREEMENT = Gauge("finsignal_worker_shadow_agreement_ratio",
                         "Live/shadow direction agreement over the last shadow_agreement_window signals")
SHADOW_FLIPS = Counter("finsignal_worker_shadow_flips_total", "Live/shadow direction disagreements",
                       ["symbol", "flip"])
SHADOW_SIGNALS = Counter("finsignal_worker_shadow_signals_total", "Shadow signals published", ["outcome"])
SHADOW_FAILURES = Counter("finsignal_worker_shadow_failures_total", "Shadow work that failed (live unaffected)",
                          ["stage"])
SHADOW_DROPPED = Counter("finsignal_worker_shadow_dropped_total",
                         "Live batches not shadowed because the shadow queue was full")
DRIFT_PSI = Gauge("finsignal_worker_drift_psi", "Population stability index of live outputs vs the reference",
                  ["feature", "source"])
DRIFT_KS_STATISTIC = Gauge("finsignal_worker_drift_ks_statistic", "KS statistic of live scores vs the reference")
DRIFT_KS_PVALUE = Gauge("finsignal_worker_drift_ks_pvalue", "KS p-value of live scores vs the reference")
DRIFT_WINDOW = Gauge("finsignal_worker_drift_window_signals", "Signals in the drift window")
DRIFT_REFERENCE = Gauge("finsignal_worker_drift_reference_signals", "Signals in the drift reference", ["origin"])
