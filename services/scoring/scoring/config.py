from pydantic_settings import SettingsConfigDict

from tally_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_SCORING_", extra="ignore")

    port: int = 8103
    group_id: str = "scoring"
    # Outbox rows older than this are assumed abandoned by their request (crash, broker outage) and re-published.
    outbox_relay_after_seconds: float = 5.0
    outbox_relay_interval_seconds: float = 1.0
    max_batch: int = 1000
    publish_timeout_seconds: float = 10.0
