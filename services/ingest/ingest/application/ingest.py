"""Publish what a request said, and decide what to answer about each of its items."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.adapters.publisher import Publisher, PublishError
from ingest.domain.batch import Batch
from ingest.domain.report import Report
from ingest.metrics import EVENTS


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
