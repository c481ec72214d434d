from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from tally_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_INGEST_", extra="ignore")

    port: int = 8101
    # OTLP/gRPC, served by the same process on the same host; 0 lets the system choose a free port (tests).
    grpc_port: int = 4317
    # Ingest consumes nothing; the field exists so every service has the same settings shape.
    group_id: str = "ingest"
    # Whole request body, on the wire and again after gunzip.
    max_body_bytes: int = 10 * 1024 * 1024
    # One event of a batch (a Langfuse event, a native event, one OTLP span), as JSON.
    max_item_bytes: int = 1024 * 1024
    # How long a request may wait for the broker's acknowledgement before it is answered 503.
    publish_timeout_seconds: float = 5.0
    retry_after_seconds: int = 5
    # aiokafka's linger, for records it batches itself; ingest's batches (tally_shared.producer) go out as soon as
    # the previous batch of their partition is acknowledged.
    linger_ms: int = 5
    # Per-partition batch: events of concurrent requests share one until it is full (then a next one opens).
    max_batch_bytes: int = 4 * 1024 * 1024
    # Kafka producers (connections), each owning a share of the partitions: aiokafka keeps one produce request in
    # flight per connection, so one producer leaves the broker idle while the event loop parses requests; each more
    # splits a request's events into more, smaller produce requests (a socket write each, and a request for the
    # broker): 6 cost ~6 µs more ingest CPU a span than 2 on bench/pipeline.py's requests, and more broker CPU.
    producers: int = 2
    max_message_bytes: int = 16 * 1024 * 1024
    # Scoring's base URL: scores are checked at intake against their config as scoring serves it (cached).
    scoring_url: str = Field(default="http://127.0.0.1:8103",
                             validation_alias=AliasChoices("TALLY_SCORING_URL", "TALLY_INGEST_SCORING_URL"))
    config_cache_seconds: float = 10.0
    config_lookup_timeout_seconds: float = 2.0
