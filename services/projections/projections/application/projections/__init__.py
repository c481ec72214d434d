"""One projection per read model, in the order a batch applies them: traces before the scores that take their
dimensions, deletions last (they remove what the others wrote). A new read model is a module with a
``PROJECTION`` added here."""

from __future__ import annotations

from projections.application.projections import configs, datasets, deletions, queues, scores, traces
from projections.application.projections.base import Projection
from tally_shared.envelope import Payload

PROJECTIONS: tuple[Projection, ...] = (
    traces.PROJECTION, scores.PROJECTION, configs.PROJECTION, queues.PROJECTION, datasets.PROJECTION,
    deletions.PROJECTION,
)
DELETIONS = deletions.PROJECTION
PROJECTION_OF: dict[type[Payload], Projection] = {cls: p for p in PROJECTIONS for cls in p.handles}
