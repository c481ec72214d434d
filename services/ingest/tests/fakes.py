"""Test doubles for ingest's ports."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.adapters.publisher import PublishError
from ingest.domain.batch import Outgoing


class RecordingPublisher:
    """Acknowledges everything (or fails what ``fail`` says) and keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.fail: set[str] = set()  # keys to refuse
        self.down = False

    async def send_all(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        out: list[PublishError | None] = []
        for m in messages:
            if m.error is not None:
                out.append(PublishError(400, "invalid", m.error))
            elif self.down or m.key.decode() in self.fail:
                out.append(PublishError(503, "broker_unavailable", "broker down (fake)"))
            else:
                self.sent.append(m)
                out.append(None)
        return out
