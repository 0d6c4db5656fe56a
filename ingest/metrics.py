"""Prometheus metrics of the ingestors, labelled by `source` (bybit, news, filings).

Messages per second is `rate(finsignal_ingest_messages_total[1m])`; the same counts
are logged every `stats_interval_s` as an `ingest.stats` event with the rate.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MESSAGES = Counter("finsignal_ingest_messages_total", "Messages handed to the Kafka producer", ["source", "kind"])
RECONNECTS = Counter("finsignal_ingest_reconnects_total", "Connections re-established after a loss", ["source"])
GAPS = Counter("finsignal_ingest_gaps_total", "Sequence gaps detected (order book, kline)", ["source", "kind"])
RESUBSCRIBES = Counter("finsignal_ingest_resubscribes_total", "Topics resubscribed for a fresh snapshot",
                       ["source"])
DEDUPES = Counter("finsignal_ingest_dedupes_total", "Duplicates dropped before publishing", ["source", "kind"])
DEAD_LETTERS = Counter("finsignal_ingest_dead_letters_total", "Payloads sent to the dead-letter topic",
                       ["source", "stage"])
HTTP_RESPONSES = Counter("finsignal_ingest_http_responses_total", "HTTP responses by status", ["source", "status"])
BACKOFFS = Counter("finsignal_ingest_backoffs_total", "Back-offs taken, by reason", ["source", "reason"])
ERRORS = Counter("finsignal_ingest_errors_total", "Failures that were logged and survived", ["source", "kind"])
QUEUE_DEPTH = Gauge("finsignal_ingest_queue_depth", "Records waiting for the Kafka producer thread", ["source"])
DELIVERY_FAILURES = Counter("finsignal_ingest_delivery_failures_total", "Records Kafka did not acknowledge",
                            ["source"])
