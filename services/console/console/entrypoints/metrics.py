"""Request metrics for /metrics: count and latency per route template (never per raw path: ids would explode the
label set), and calls to the services' APIs by outcome."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram


def request_metrics(registry: CollectorRegistry) -> Callable[[Request, Callable[[Request], Awaitable[Response]]],
                                                             Awaitable[Response]]:
    requests = Counter("tally_console_requests_total", "Console HTTP requests", ["method", "route", "status"],
                       registry=registry)
    latency = Histogram("tally_console_request_seconds", "Console request latency (includes the service calls)",
                        ["method", "route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or ("/static" if request.url.path.startswith("/static/")
                                                    else "unmatched")
        requests.labels(request.method, template, str(response.status_code)).inc()
        latency.labels(request.method, template).observe(time.perf_counter() - start)
        return response

    return middleware
