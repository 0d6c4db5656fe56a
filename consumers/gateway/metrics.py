"""Prometheus metrics of the WebSocket gateway, served on its own port at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLIENTS = Gauge("finsignal_gateway_clients", "Connected, authenticated clients")
SUBSCRIPTIONS = Gauge("finsignal_gateway_subscriptions", "Client-symbol subscriptions")
HANDSHAKES = Counter("finsignal_gateway_handshakes_total", "Connection attempts by outcome", ["outcome"])
DISCONNECTS = Counter("finsignal_gateway_disconnects_total", "Closed client connections by reason", ["reason"])
MESSAGES = Counter("finsignal_gateway_messages_sent_total", "Messages written to clients by type", ["type"])
ENTRIES = Counter("finsignal_gateway_entries_read_total", "Signal stream entries read from Redis", ["outcome"])
REDIS_ERRORS = Counter("finsignal_gateway_redis_errors_total", "Failed Redis reads (retried)")
DELIVERY_SECONDS = Histogram(
    "finsignal_gateway_delivery_seconds",
    "From the signal's stream entry (Redis time) to its frame handed to the client's socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
