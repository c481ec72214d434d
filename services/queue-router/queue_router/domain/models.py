"""Commands of queues, rules and items: the request bodies of the HTTP contract (``tally_shared.contracts.queues``),
validated at the edge and handed to the application layer."""

from tally_shared.contracts.queues import (
    MAX_BULK_ITEMS,
    Backfill,
    ItemsAdd,
    ItemSpec,
    NextRequest,
    ObjectTypeName,
    QueueCreate,
    QueueUpdate,
    ReviewAction,
    RuleCreate,
    RulePreview,
    RuleUpdate,
    ScoreConfigRef,
    Target,
)

__all__ = ["MAX_BULK_ITEMS", "Backfill", "ItemSpec", "ItemsAdd", "NextRequest", "ObjectTypeName", "QueueCreate",
           "QueueUpdate", "ReviewAction", "RuleCreate", "RulePreview", "RuleUpdate", "ScoreConfigRef", "Target"]
