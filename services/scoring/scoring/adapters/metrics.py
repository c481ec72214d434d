"""Scoring's own metrics (process-wide default registry, exported on /metrics with the shared ones; the outbox's
are ``tally_outbox_*`` from tally_shared.outbox)."""

from prometheus_client import Counter

SCORES = Counter("tally_scoring_scores_total", "Scores handled, by outcome and source", ["outcome", "source"])
REJECTIONS = Counter("tally_scoring_rejections_total", "Rejected scores, by the rule broken", ["rule"])
