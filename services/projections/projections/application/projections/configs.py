"""Score configs: the latest version wins (then the latest event)."""

from __future__ import annotations

from typing import Any

from projections.application.projections.base import Projection
from projections.application.unit_of_work import UnitOfWork
from projections.domain.merge import to_micros
from tally_shared.bulk import rows_param
from tally_shared.envelope import Payload
from tally_shared.events import ScoreConfigArchived, ScoreConfigCreated, ScoreConfigUpdated
from tally_shared.events.scores import ScoreConfigData
from tally_shared.records import Event

# an archiving event archives whatever its snapshot says
_ARCHIVES = {ScoreConfigCreated: False, ScoreConfigUpdated: False, ScoreConfigArchived: True}


async def apply(events: list[Event], uow: UnitOfWork) -> None:
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        # rare events: the model gives the stored snapshot its defaults and JSON form
        c = ScoreConfigData.model_validate(e.payload["config"])
        row = {"project_id": e.project, "id": c.id, "version": c.version, "name": c.name,
               "data_type": str(c.data_type), "data": c.model_dump(mode="json"),
               "is_archived": bool(c.is_archived or _ARCHIVES[e.cls]), "event_ts": to_micros(e.occurred_at)}
        cur = best.get((e.project, c.id))
        if cur is None or (row["version"], row["event_ts"]) >= (cur["version"], cur["event_ts"]):
            best[(e.project, c.id)] = row
    await uow.execute(uow.sql.sql_cfg_up, rows_param(list(best.values())))


HANDLES: tuple[type[Payload], ...] = tuple(_ARCHIVES)
PROJECTION = Projection("score_configs", HANDLES, apply)
