"""The one base URL under ``tally up``: a small streaming reverse proxy that routes by path prefix
(``tally_cli.routes``) to the services, each its own process. docker-compose uses nginx with the same table.

A service that cannot be reached, or dies mid-request, is a gateway error the client can act on, never a 500:
502 (the upstream broke the exchange), 503 (not reachable, or no connection free), 504 (it did not answer in
time), each with ``Retry-After`` and a machine-readable body. OpenTelemetry exporters and Langfuse SDKs retry
exactly these. Once a response has started streaming its status is sent; a failure after that aborts the
connection, so the client sees a broken response rather than a complete-looking truncated one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tally_cli.routes import DEFAULT_PORTS, SERVICES, env_name, route
from tally_shared import __version__

# Hop-by-hop headers are per connection and must not be forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
# The gateway's own server writes these on every response; the upstream's copies would make each appear twice.
OWN_RESPONSE_HEADERS = {"date", "server"}


def upstreams_from_env() -> dict[str, str]:
    return {
        svc: os.environ.get(f"TALLY_{env_name(svc)}_URL", f"http://127.0.0.1:{DEFAULT_PORTS[svc]}")
        for svc in SERVICES
    }


class _NoCookies(CookieJar):
    """A proxy must never keep cookies: one client's session cookie would ride along on every other client's
    requests. Set-Cookie headers still pass through to the browser untouched."""

    def __init__(self) -> None:
        super().__init__(policy=DefaultCookiePolicy(allowed_domains=[]))


RETRY_AFTER_SECONDS = 1


def upstream_failure(service: str, exc: httpx.HTTPError) -> tuple[int, str, str]:
    """(status, code, message) for a transport failure talking to ``service``."""
    if isinstance(exc, httpx.PoolTimeout):
        return 503, "upstream_busy", f"no connection to {service} came free in time"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return 503, "upstream_unavailable", f"{service} is not reachable"
    if isinstance(exc, httpx.TimeoutException):
        return 504, "upstream_timeout", f"{service} did not answer in time"
    return 502, "upstream_failed", f"{service} broke off the exchange ({type(exc).__name__})"


def failure_response(service: str, exc: httpx.HTTPError) -> JSONResponse:
    status, code, message = upstream_failure(service, exc)
    return JSONResponse({"error": {"code": code, "message": message, "service": service}}, status_code=status,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def supervisor_states(path: Path | None) -> dict[str, dict[str, Any]]:
    """What the supervisor that started this gateway (``tally up``) last wrote about each service."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def create_gateway(upstreams: dict[str, str], *, timeout: float = 60.0,
                   supervisor_status: Path | None = None) -> Starlette:
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0),
                               limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
                               cookies=_NoCookies())

    async def health(_: Request) -> Response:
        # Langfuse answers {"status": "OK", "version": ...}; Tally's is OK only when every service is ready.
        # Otherwise "degraded", naming each service that is down (not reachable) or not ready (and why).
        async def check(svc: str) -> tuple[str, dict[str, object] | None]:
            try:
                r = await client.get(upstreams[svc] + "/readyz", timeout=3)
            except httpx.HTTPError as exc:
                return svc, {"state": "down", "reason": type(exc).__name__}
            if r.status_code == 200:
                return svc, None
            try:
                checks = r.json().get("checks", {})
            except ValueError:
                checks = {}
            return svc, {"state": "not_ready", "status": r.status_code,
                         "checks": {k: v for k, v in checks.items() if v != "ok"}}

        results = dict(await asyncio.gather(*(check(s) for s in SERVICES)))
        problems = {s: p for s, p in sorted(results.items()) if p is not None}
        supervised = supervisor_states(supervisor_status)
        for svc, problem in problems.items():
            known = supervised.get(svc, {})
            if known.get("state") == "restarting":
                problem["state"] = "restarting"
            if "restarts" in known:
                problem["restarts"] = known["restarts"]
        if problems:
            return JSONResponse({"status": "degraded", "version": __version__, "unavailable": sorted(problems),
                                 "services": problems},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return JSONResponse({"status": "OK", "version": __version__})

    async def proxy(request: Request) -> Response:
        service = route(request.url.path, request.method)
        target = upstreams[service]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        client_host = request.client.host if request.client else ""
        headers.append(("x-forwarded-for", client_host))
        headers.append(("x-forwarded-host", request.headers.get("host", "")))
        headers.append(("x-forwarded-proto", request.url.scheme))
        upstream_req = client.build_request(
            request.method, target + request.url.path, params=request.url.query.encode(), headers=headers,
            content=request.stream(),
        )
        try:
            upstream = await client.send(upstream_req, stream=True)
        except httpx.HTTPError as exc:
            return failure_response(service, exc)
        # Read the first chunk before answering: a service that dies right after its headers (the common case for
        # a crash mid-request) still gets a clean 502 instead of an aborted response.
        chunks = upstream.aiter_raw()
        try:
            first = await anext(chunks, b"")
        except httpx.HTTPError as exc:
            await upstream.aclose()
            return failure_response(service, exc)
        out_headers = [(k, v) for k, v in upstream.headers.multi_items()
                       if k.lower() not in HOP_BY_HOP and k.lower() not in OWN_RESPONSE_HEADERS]
        return _StreamingProxyResponse(upstream, first, chunks, out_headers)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    return Starlette(
        routes=[
            Route("/api/public/health", health, methods=["GET"]),
            Route("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )


class _StreamingProxyResponse(StreamingResponse):
    def __init__(self, upstream: httpx.Response, first: bytes, rest: AsyncIterator[bytes],
                 headers: list[tuple[str, str]]) -> None:
        async def body() -> AsyncIterator[bytes]:
            # An exception here (the upstream died mid-body) propagates to the server, which then closes the
            # connection without the final chunk: the client sees an incomplete response, never a short 200.
            if first:
                yield first
            async for chunk in rest:
                yield chunk

        super().__init__(body(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose))
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        # Starlette sets chunked framing itself when no length is known.


def main() -> None:
    host = os.environ.get("TALLY_GATEWAY_HOST", "127.0.0.1")
    port = int(os.environ.get("TALLY_GATEWAY_PORT", str(DEFAULT_PORTS["gateway"])))
    status = os.environ.get("TALLY_SUPERVISOR_STATUS_FILE")
    uvicorn.run(create_gateway(upstreams_from_env(), supervisor_status=Path(status) if status else None),
                host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
