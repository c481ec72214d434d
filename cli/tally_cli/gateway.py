"""The one base URL under ``tally up``: a small streaming reverse proxy that routes by path prefix
(``tally_cli.routes``) to the services, each its own process. docker-compose uses nginx with the same table."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

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


def create_gateway(upstreams: dict[str, str]) -> Starlette:
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0),
                               limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
                               cookies=_NoCookies())

    async def health(_: Request) -> Response:
        # Langfuse answers {"status": "OK", "version": ...}; Tally's is OK only when every service is healthy.
        async def check(svc: str) -> tuple[str, bool]:
            try:
                r = await client.get(upstreams[svc] + "/healthz", timeout=3)
                return svc, r.status_code == 200
            except httpx.HTTPError:
                return svc, False

        results = dict(await asyncio.gather(*(check(s) for s in SERVICES)))
        down = sorted(s for s, ok in results.items() if not ok)
        if down:
            return JSONResponse({"status": "Unavailable", "version": __version__, "unavailable": down},
                                status_code=503)
        return JSONResponse({"status": "OK", "version": __version__})

    async def proxy(request: Request) -> Response:
        target = upstreams[route(request.url.path)]
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
        except httpx.ConnectError:
            return JSONResponse({"error": {"code": "upstream_unavailable",
                                           "message": f"{route(request.url.path)} is not reachable"}},
                                status_code=503, headers={"Retry-After": "1"})
        out_headers = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        return _StreamingProxyResponse(upstream, out_headers)

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
    def __init__(self, upstream: httpx.Response, headers: list[tuple[str, str]]) -> None:
        async def body() -> AsyncIterator[bytes]:
            async for chunk in upstream.aiter_raw():
                yield chunk

        super().__init__(body(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose))
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        # Starlette sets chunked framing itself when no length is known.


def main() -> None:
    host = os.environ.get("TALLY_GATEWAY_HOST", "127.0.0.1")
    port = int(os.environ.get("TALLY_GATEWAY_PORT", str(DEFAULT_PORTS["gateway"])))
    uvicorn.run(create_gateway(upstreams_from_env()), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
