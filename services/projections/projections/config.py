from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from tally_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_PROJECTIONS_", extra="ignore")

    port: int = 8104
    group_id: str = "projections"
    # The reader of tally.dead-letter has its own group; unset: "<group_id>-dead-letters".
    dead_letter_group_id: str | None = None
    # Replayed and discarded dead letters are forgotten after this many days; open ones are kept.
    dead_letter_retention_days: float = Field(default=30.0, gt=0)
    # One batch = one transaction; bigger batches amortise round trips, smaller ones cut end-to-end delay.
    batch_max_records: int = 5000
    rebuild_batch_size: int = 5000
    max_page_limit: int = 1000
    export_chunk: int = 500
    # Queue-router's API: asked, with a reviewer's own credentials, which traces they review blind right now.
    queue_router_url: str | None = Field(default=None, validation_alias=AliasChoices(
        "TALLY_PROJECTIONS_QUEUE_ROUTER_URL", "TALLY_QUEUE_ROUTER_URL"))
