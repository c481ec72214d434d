"""Scoring's own metrics (process-wide default registry, exported on /metrics with the shared ones)."""

from prometheus_client import Counter, Gauge

SCORES = Counter("tally_scoring_scores_total", "Scores handled, by outcome and source", ["outcome", "source"])
REJECTIONS = Counter("tally_scoring_rejections_total", "Rejected scores, by the rule broken", ["rule"])
OUTBOX_RELAYED = Counter("tally_scoring_outbox_relayed_total",
                         "Events published by the outbox relay (their request never saw the acknowledgement)")
OUTBOX_PENDING = Gauge("tally_scoring_outbox_acked_pending_delete", "Acknowledged outbox rows not yet deleted")
