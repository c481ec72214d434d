"""How many recent traces a routing rule would have matched: queue-router answers it (``POST
/api/v1/queues/{id}/rules/preview``) with the predicates its router runs, over the traces it saw in the last days,
sampling included (``tally_shared.contracts.queues.RulePreviewResult``)."""

from __future__ import annotations

from typing import Any

from console.adapters.port import TallyApi


async def preview(api: TallyApi, queue_id: str, rule: dict[str, Any]) -> dict[str, Any]:
    """``count``: items the rule would add after sampling; ``matched``: traces its filter matches; ``scanned``,
    ``days`` and ``truncated`` say over what."""
    return await api.preview_rule(queue_id, rule)
