from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from tally_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_QUEUE_ROUTER_", extra="ignore")

    port: int = 8102
    group_id: str = "queue-router"
    # Events handed to the router in one transaction (bulk reads and writes).
    batch_max_records: int = 500
    # The outbox relay polls this often when idle (it loops without sleeping while rows are waiting).
    outbox_poll_seconds: float = 0.1
    outbox_batch: int = 500
    # Sent outbox rows are kept this long (for inspection), then pruned.
    outbox_retention_hours: float = 24.0
    default_lease_seconds: int = 600
    max_bulk_items: int = 1000
    max_backfill_scan: int = 200_000
    run_consumers: bool = True
    run_outbox_relay: bool = True
    # Scoring's API: queue-router asks it, with the caller's credentials, whether score configs exist and whether
    # a reviewer scored the required ones before completing.
    scoring_url: str | None = Field(default=None, validation_alias=AliasChoices(
        "TALLY_QUEUE_ROUTER_SCORING_URL", "TALLY_SCORING_URL"))
    # Leases that ran out are returned to the pool (with a QueueItemLeaseExpired event) this often.
    lease_sweep_seconds: float = 5.0
