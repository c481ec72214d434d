"""Health, and the lag and delay metrics: consumer lag per topic and partition for the service's group, and the
delay from event time to read model."""

from __future__ import annotations

from tally_shared.events import TraceData, TraceIngested
from tally_shared.testing.wait import eventually

from .conftest import Harness, at


async def test_health_and_lag_metrics(harness: Harness) -> None:
    h = harness
    assert (await h.http.get("/healthz")).status_code == 200

    async def ready() -> dict[str, str] | None:
        r = await h.http.get("/readyz")
        return r.json()["checks"] if r.status_code == 200 else None

    assert await eventually(ready, what="ready") == {"database": "ok", "broker": "ok", "consumers": "ok"}
    pid, auth = await h.project()
    await h.send(h.env(TraceIngested(trace_id="m1", trace=TraceData(id="m1", name="m")), pid, "m1", at(0)))

    async def applied() -> bool:
        return (await h.http.get("/api/public/traces/m1", headers=auth)).status_code == 200

    await eventually(applied, what="trace applied")

    async def metrics() -> str | None:
        text = (await h.http.get("/metrics")).text
        wanted = [f'tally_consumer_lag{{group="{h.group_id}",partition="0",topic="tally.traces"}}',
                  'tally_projections_read_model_delay_seconds_count{model="traces"}',
                  'tally_projections_events_applied_total{model="traces"}',
                  "tally_projections_batch_apply_seconds_count"]
        return text if all(w in text for w in wanted) else None

    text = await eventually(metrics, timeout=20, what="lag and delay metrics")
    for topic in ("tally.scores", "tally.score-configs", "tally.queues"):
        assert f'topic="{topic}"' in text
