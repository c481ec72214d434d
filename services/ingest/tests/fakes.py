"""Test doubles for ingest's ports."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.adapters.configs import ScoringUnavailable
from ingest.adapters.publisher import PublishError
from ingest.domain.batch import Outgoing
from tally_shared.events import ScoreConfigData


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


class FakeConfigs:
    """Score configs as scoring would serve them; ``down`` makes every lookup fail as an unreachable scoring."""

    def __init__(self) -> None:
        self.configs: dict[tuple[str, str], ScoreConfigData] = {}
        self.down = False
        self.lookups: list[tuple[str, str, dict[str, str]]] = []

    async def get(self, project_id: str, config_id: str, headers: dict[str, str]) -> ScoreConfigData | None:
        self.lookups.append((project_id, config_id, headers))
        if self.down:
            raise ScoringUnavailable("scoring unreachable (fake)")
        return self.configs.get((project_id, config_id))

    async def close(self) -> None:
        pass
