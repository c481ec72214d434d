"""Metrics every service exports. They live in the process-wide default registry; FastStream's own consumer
metrics live in a per-app registry (see ``http.metrics_response``)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "tally_events_consumed_total", "Events handled by a consumer", ["consumer", "topic", "type", "outcome"]
)
DEAD_LETTERS = Counter(
    "tally_dead_letters_total", "Messages sent to the dead-letter topic, by reason code (see tally_shared.deadletters)",
    ["consumer", "topic", "reason"],
)
HANDLER_ERRORS = Counter(
    "tally_handler_errors_total", "Handler failures that were retried (message not acknowledged)",
    ["consumer", "topic"],
)
EVENTS_PUBLISHED = Counter("tally_events_published_total", "Events acknowledged by the broker", ["topic", "type"])
PUBLISH_SECONDS = Histogram(
    "tally_publish_seconds", "Time from publish call to broker acknowledgement", ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CONSUMER_LAG = Gauge(
    "tally_consumer_lag", "Messages on the topic the consumer group has not committed yet",
    ["group", "topic", "partition"],
)
EVENT_DELAY = Histogram(
    "tally_event_delay_seconds", "Delay from an event's occurred_at to its handling", ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
