"""The console's own cost per page: server-side rendering (templates, SVG charts, sanitising) with the services'
APIs replaced by in-memory fakes, so the figures are the console alone, not the services behind it.

    .venv/bin/python bench/console_pages.py [--seconds 10]

Prints p50/p99 latency and pages/s for the review screen (a trace with 40 observations and 20 KB of content;
"cold markdown" empties the markdown cache before each request, as for a trace never shown before),
the traces table (50 rows), a dashboard with 4 charts, and the sign-in page; plus peak RSS."""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Any

from console.testing.pages import make_env, sign_in


def _world(env: Any) -> dict[str, str]:
    w = env.world
    cfg = w.add_config("correctness", "CATEGORICAL", categories=[{"label": "wrong", "value": 0},
                                                                {"label": "right", "value": 1}])
    num = w.add_config("helpfulness", "NUMERIC", min_value=1, max_value=5)
    q = w.add_queue("Bench", [cfg, num], description="instructions " * 40)
    body = ("Some **markdown** answer with a [link](https://example.com) and <b>html</b>.\n" * 250)
    obs = [{"id": f"o{i}", "parent_observation_id": f"o{i // 3}" if i else None, "type": "SPAN", "name": f"step {i}",
            "start_time": f"2026-01-01T00:00:{i:02d}Z", "end_time": f"2026-01-01T00:00:{i + 1:02d}Z",
            "input": {"x": i}, "output": body[:400], "usage_details": {"input": 10, "output": 5}}
           for i in range(40)]
    for i in range(60):
        w.add_trace(f"t{i}", name="chat", input=body, output=body, observations=obs, tags=["a", "b"])
    for i in range(200):
        w.add_item(q["id"], f"t{i % 60}")
    w.analytics = {"series": [
        {"name": f"score-{k}", "source": "ANNOTATION", "count": 100, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6,
         "buckets": [{"bucket": f"2026-01-{d:02d}", "mean": 0.5} for d in range(1, 29)],
         "distribution": {"type": "histogram", "bins": [{"lower": b / 10, "upper": (b + 1) / 10, "count": b}
                                                        for b in range(10)]}} for k in range(4)]}
    return {"queue": q["id"]}


def measure(client: Any, path: str, seconds: float, before: Any = None) -> tuple[float, float, float]:
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if before is not None:
            before()
        t0 = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code in (200, 303), (path, r.status_code)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000, len(times) / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    env = make_env()
    ids = _world(env)
    client = env.client()
    sign_in(client, "rev@t.test")
    item_url = client.get(f"/queues/{ids['queue']}/review").headers["location"]
    pages = {"review screen": item_url, "traces table": "/traces", "dashboard (4 cards)": "/dashboards",
             "queue list": "/queues"}
    print(f"{'page':<22}{'p50 ms':>9}{'p99 ms':>9}{'pages/s':>10}")
    for name, path in pages.items():
        p50, p99, rate = measure(client, path, args.seconds)
        print(f"{name:<22}{p50:>9.2f}{p99:>9.2f}{rate:>10.0f}")
    from console.domain.render import _markdown

    p50, p99, rate = measure(client, item_url, args.seconds, before=_markdown.cache_clear)
    print(f"{'review, cold markdown':<22}{p50:>9.2f}{p99:>9.2f}{rate:>10.0f}")
    anon = env.client()
    p50, p99, rate = measure(anon, "/login", args.seconds)
    print(f"{'sign-in page':<22}{p50:>9.2f}{p99:>9.2f}{rate:>10.0f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          "(one process, TestClient in-process, 1 client)")


if __name__ == "__main__":
    main()
