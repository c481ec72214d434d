"""Publishing with the broker's acknowledgement, item by item.

The Kafka side is the shared producer (``tally_shared.producer.Producer``: several connections, Kafka's default
partitioning, one lz4 batch per partition and call, a verdict per record); this adapter only says what each
verdict means for the client: 413 for an event larger than the broker accepts, 503 (retry) for anything the
broker did not acknowledge, never a success for an unacknowledged event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ingest.domain.batch import Outgoing
from tally_shared.producer import NotStarted, Producer


class PublishError(Exception):
    """The broker did not acknowledge a message. ``status`` is what to tell the client about its items."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class Publisher(Protocol):
    async def send_all(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        """Publish every message; for each, None once the broker acknowledged it, else the error."""
        ...


def _as_publish_error(exc: BaseException) -> PublishError:
    if isinstance(exc, MessageSizeTooLargeError):
        return PublishError(413, "message_too_large", "the event is larger than the broker accepts")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return PublishError(503, "broker_timeout", "the broker did not acknowledge in time; not stored, retry")
    if isinstance(exc, NotStarted) and isinstance(exc.__cause__, KafkaError):
        exc = exc.__cause__
    if isinstance(exc, KafkaError):
        return PublishError(503, "broker_unavailable", f"the broker refused or is unreachable ({type(exc).__name__});"
                            " not stored, retry")
    return PublishError(503, "broker_error", f"publish failed ({type(exc).__name__}); not stored, retry")


class KafkaPublisher:
    """``producer``: the service's shared producer, configured by ``ingest.bootstrap`` (connects on use)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def send_all(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        if not messages:
            return []
        valid = messages
        results: list[PublishError | None] = [None] * len(messages)
        if any(m.error is not None for m in messages):
            valid = []
            for i, m in enumerate(messages):
                if m.error is not None:
                    results[i] = PublishError(400, "invalid", m.error)
                else:
                    valid.append(m)
        verdicts = await self.producer.send_each(valid)
        if valid is messages:
            return [None if v is None else _as_publish_error(v) for v in verdicts]
        it = iter(verdicts)
        for i, m in enumerate(messages):
            if m.error is None:
                v = next(it)
                results[i] = None if v is None else _as_publish_error(v)
        return results
