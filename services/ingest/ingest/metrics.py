"""Ingest's own metrics (process-wide registry, exported by ``/metrics`` next to the shared ones)."""

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "tally_ingest_events_total", "Items of ingest requests by endpoint, outcome (accepted/rejected) and reason",
    ["endpoint", "outcome", "reason"],
)
REQUEST_SECONDS = Histogram(
    "tally_ingest_request_seconds", "Ingest request latency, from the first byte read to the answer",
    ["endpoint", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BYTES_IN = Counter("tally_ingest_bytes_total", "Request body bytes received (as sent, before gunzip)", ["endpoint"])
REQUESTS_REJECTED = Counter(
    "tally_ingest_requests_rejected_total", "Whole requests refused, by endpoint and reason", ["endpoint", "reason"]
)
