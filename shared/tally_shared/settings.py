"""Settings every service shares. Each service subclasses ``ServiceSettings`` with its own ``env_prefix``."""

from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Shorter than this cannot be 256 random bits in any usual encoding (token_urlsafe(32) gives 43 characters).
MIN_SECRET_KEY_LENGTH = 32
# Built-in secrets of earlier versions: public, so a token signed with one proves nothing.
KNOWN_PUBLIC_SECRETS = frozenset({"tally-dev-secret-change-me"})
SECRET_KEY_HINT = "e.g. export TALLY_SECRET_KEY=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\""


class ServiceSettings(BaseSettings):
    # populate_by_name: Settings(secret_key=...) in code, as well as TALLY_SECRET_KEY in the environment.
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, validation_alias=AliasChoices("DATABASE_URL", "TALLY_DATABASE_URL")
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "TALLY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    # Signs the user tokens the console hands to the services on a signed-in person's behalf, and the console's
    # session cookie. No default: a secret written in the source is known to everyone (`tally up` generates one).
    secret_key: str = Field(
        default="", validation_alias=AliasChoices("TALLY_SECRET_KEY"), validate_default=True, repr=False
    )
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_size: int = 10
    log_level: str = "info"
    # JSON lines (service, logger, level, message, consumer group, event id, trace id) for log collectors; "text"
    # for a person at a terminal. One name for every service (not per service prefix).
    log_format: Literal["json", "text"] = Field(default="json", validation_alias=AliasChoices("TALLY_LOG_FORMAT"))

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: str) -> str:
        return check_secret_key(value)


def check_secret_key(value: str) -> str:
    if not value:
        raise ValueError(f"TALLY_SECRET_KEY is not set; every service needs the same long random secret"
                         f" ({SECRET_KEY_HINT})")
    if value in KNOWN_PUBLIC_SECRETS:
        raise ValueError(f"TALLY_SECRET_KEY is a published default; set a random one ({SECRET_KEY_HINT})")
    if len(value) < MIN_SECRET_KEY_LENGTH:
        raise ValueError(f"TALLY_SECRET_KEY is too short ({len(value)} characters, at least {MIN_SECRET_KEY_LENGTH});"
                         f" {SECRET_KEY_HINT}")
    return value


def settings_error(exc: ValidationError) -> str:
    """One line for a person starting a service: what is wrong in which setting, without pydantic's URLs."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(message if message.startswith("TALLY_") else f"{where}: {message}")
    return "; ".join(parts)
