"""Dataset id -> name, so that experiment runs linked by dataset id show their dataset's name."""

from __future__ import annotations

from projections.application.projections.base import Projection
from projections.application.unit_of_work import UnitOfWork
from tally_shared.bulk import rows_param
from tally_shared.envelope import Payload
from tally_shared.events import DatasetCreated
from tally_shared.records import Event


async def apply(events: list[Event], uow: UnitOfWork) -> None:
    named = {(e.project, e.payload["dataset"]["id"]): e.payload["dataset"]["name"] for e in events}
    await uow.execute(uow.sql.sql_datasets_up, rows_param(
        [{"project_id": k[0], "id": k[1], "name": n} for k, n in named.items()]))


HANDLES: tuple[type[Payload], ...] = (DatasetCreated,)
PROJECTION = Projection("datasets", HANDLES, apply)
