"""The one envelope every event travels in, and the registry of payload types.

Wire format: UTF-8 JSON of the envelope. ``payload`` holds only the fields the producer set
(``exclude_unset``), so a partial update says exactly which fields it changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tally_shared import content


class Payload(BaseModel):
    """Base of every event payload. Subclasses set ``event_type`` and ``version``."""

    model_config = ConfigDict(extra="forbid")
    event_type: ClassVar[str]
    version: ClassVar[int] = 1


P = TypeVar("P", bound=Payload)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Project ids are identity's (64 characters at most); keys are ids (200 at most). Consumers size their key
    # columns by these bounds, so an event outside them is poison, not a batch that fails forever.
    project: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=200,
                     description="Partition key: the trace id for anything about a trace")
    payload: dict[str, Any]

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    def parse_payload(self) -> Payload:
        cls = registry.get(self.type, self.version)
        return cls.model_validate(self.payload)


class UnknownEventType(ValueError):
    pass


class PoisonMessage(Exception):
    """A message that can never be processed: it goes to the dead-letter topic with ``reason`` (for people) and
    ``code`` (a short, bounded token for metrics and filters; see ``tally_shared.deadletters``)."""

    def __init__(self, reason: str, code: str = "validation") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class _Registry:
    def __init__(self) -> None:
        self._types: dict[tuple[str, int], type[Payload]] = {}

    def register(self, cls: type[P]) -> type[P]:
        self._types[(cls.event_type, cls.version)] = cls
        return cls

    def get(self, event_type: str, version: int) -> type[Payload]:
        try:
            return self._types[(event_type, version)]
        except KeyError:
            raise UnknownEventType(f"unknown event type {event_type!r} version {version}") from None

    def known(self) -> list[tuple[str, int]]:
        return sorted(self._types)


registry = _Registry()
event: Callable[[type[P]], type[P]] = registry.register


def make_envelope(
    payload: Payload,
    *,
    project: str,
    key: str,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> Envelope:
    return Envelope(
        id=event_id or uuid.uuid4(),
        type=payload.event_type,
        version=payload.version,
        occurred_at=occurred_at or datetime.now(UTC),
        project=project,
        key=key,
        payload=payload.model_dump(mode="json", exclude_unset=True),
    )


def decode(raw: bytes) -> tuple[Envelope, Payload]:
    """Parse and validate one message; anything wrong raises PoisonMessage with a reason."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not JSON: {exc}", "decode") from exc
    if content.needs_clean(raw):
        # Written before intake replaced NULs (a dead letter replayed now, say): the same transformation, so no
        # consumer has to hold what PostgreSQL cannot.
        try:
            data = content.clean(data)
        except (ValueError, RecursionError) as exc:
            raise PoisonMessage(f"content cannot be stored: {exc}", "validation") from exc
    try:
        env = Envelope.model_validate(data)
    except ValidationError as exc:
        raise PoisonMessage(f"invalid envelope: {_short(exc)}", "envelope") from exc
    try:
        return env, env.parse_payload()
    except UnknownEventType as exc:
        raise PoisonMessage(str(exc), "unknown_type") from exc
    except ValidationError as exc:
        raise PoisonMessage(f"invalid {env.type} v{env.version} payload: {_short(exc)}") from exc


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
    )
