"""Settings every service shares. Each service subclasses ``ServiceSettings`` with its own ``env_prefix``."""

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, validation_alias=AliasChoices("DATABASE_URL", "TALLY_DATABASE_URL")
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "TALLY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    # Signs the user tokens the console hands to the services on a signed-in person's behalf.
    secret_key: str = Field(
        default="tally-dev-secret-change-me", validation_alias=AliasChoices("TALLY_SECRET_KEY")
    )
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_size: int = 10
    log_level: str = "info"
