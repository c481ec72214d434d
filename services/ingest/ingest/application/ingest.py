"""Publish what a request said, and decide what to answer about each of its items."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ingest.adapters.configs import ConfigLookup, ScoringUnavailable
from ingest.adapters.publisher import Publisher, PublishError
from ingest.domain import scores
from ingest.domain.batch import Batch
from ingest.domain.report import Report
from ingest.metrics import EVENTS
from tally_shared import content
from tally_shared.events import ScoreConfigData


@dataclass
class Outcome:
    report: Report
    # item index -> why its event was not acknowledged
    failed: dict[int, PublishError] = field(default_factory=dict)
    messages: int = 0
    acknowledged: int = 0

    @property
    def broker_down(self) -> bool:
        """Nothing the request carried reached the broker, though something should have: answer 503."""
        return self.messages > 0 and self.acknowledged == 0 and any(
            e.status == 503 for e in self.failed.values()
        )

    def accepted(self, index: int) -> bool:
        return index not in self.report.errors and index not in self.failed


async def submit(batch: Batch, report: Report, *, project: str, publisher: Publisher, endpoint: str) -> Outcome:
    messages = batch.outgoing(project)
    results = await publisher.send_all(messages)
    outcome = Outcome(report, messages=len(messages))
    for m, err in zip(messages, results, strict=True):
        if err is None:
            outcome.acknowledged += 1
        else:
            for i in m.items:
                outcome.failed[i] = err
    _count(outcome, endpoint)
    return outcome


def _count(outcome: Outcome, endpoint: str) -> None:
    report = outcome.report
    for reason, n in report.reasons.items():
        EVENTS.labels(endpoint, "accepted" if reason == "sdk_log" else "rejected", reason).inc(n)
    failed_reasons: dict[str, int] = {}
    for err in outcome.failed.values():
        failed_reasons[err.reason] = failed_reasons.get(err.reason, 0) + 1
    for reason, n in failed_reasons.items():
        EVENTS.labels(endpoint, "rejected", reason).inc(n)
    accepted = len(report.ids) - report.rejected - len(outcome.failed) - len(report.unpublished)
    if accepted:
        EVENTS.labels(endpoint, "accepted", "published").inc(accepted)


async def check_scores(batch: Batch, report: Report, *, project: str, configs: ConfigLookup,
                       headers: dict[str, str]) -> None:
    """Refuse, per item, every score scoring would refuse (so none is acknowledged and then dead-lettered), and
    pin the config version each was validated against. Scoring unreachable: the item is answered 503 (retry)."""
    items = batch.scores()
    if not items:
        return
    for _, payload in items:
        # The rules see the score as it will be stored (a NUL in a comment is kept as U+2400, not refused).
        cleaned = content.clean(payload)
        if cleaned is not payload:
            payload.clear()
            payload.update(cleaned)
    wanted = sorted({cid for _, p in items if (cid := scores.config_to_look_up(p)) is not None})
    found: dict[str, ScoreConfigData | ScoringUnavailable | None] = {}
    if wanted:
        results = await asyncio.gather(*(configs.get(project, cid, headers) for cid in wanted),
                                       return_exceptions=True)
        for cid, res in zip(wanted, results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, ScoringUnavailable):
                raise res
            found[cid] = res
    dropped: set[int] = set()
    for item, payload in items:
        cid = payload.get("config_id")
        config = found.get(cid) if isinstance(cid, str) else None
        if isinstance(config, ScoringUnavailable):
            report.reject(item, 503, "scoring_unavailable", f"score not accepted, retry: {config}",
                          {"reason": "scoring_unavailable"})
            dropped.add(item)
            continue
        try:
            scores.check(payload, config, source=batch.source)
        except scores.Invalid as exc:
            first = exc.problems[0]
            report.reject(item, 400, "invalid", str(exc), first.as_dict() | {
                "problems": [p.as_dict() for p in exc.problems]})
            dropped.add(item)
            continue
        if config is not None:
            payload["config_version"] = config.version
    if dropped:
        batch.drop_scores(dropped)
