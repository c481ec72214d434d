"""The gateway against real upstream servers: routing, streaming, headers, and no cookie kept between clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tally_cli.gateway import create_gateway
from tally_cli.routes import SERVICES
from tally_shared.infra import free_port, wait_for_port


def _upstream(name: str) -> Starlette:
    async def echo(request: Request) -> Response:
        if request.url.path == "/healthz":
            return JSONResponse({"ok": True})
        body = await request.body()
        resp = JSONResponse({"service": name, "path": request.url.path, "query": request.url.query,
                             "method": request.method, "body": body.decode(),
                             "cookie": request.headers.get("cookie"), "auth": request.headers.get("authorization")})
        if request.url.path.endswith("/login"):
            resp.set_cookie("session", f"secret-of-{request.query_params.get('user')}")
        return resp

    return Starlette(routes=[Route("/{p:path}", echo, methods=["GET", "POST", "PATCH", "DELETE"])])


@contextlib.contextmanager
def _serve(app: Starlette, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    ports = {svc: free_port() for svc in SERVICES}
    gw_port = free_port()
    with contextlib.ExitStack() as stack:
        for svc in SERVICES:
            stack.enter_context(_serve(_upstream(svc), ports[svc]))
        gw = create_gateway({svc: f"http://127.0.0.1:{p}" for svc, p in ports.items()})
        stack.enter_context(_serve(gw, gw_port))
        yield f"http://127.0.0.1:{gw_port}"


async def test_routes_by_prefix_and_forwards_everything(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        r = await c.post("/api/public/ingestion?x=1", content=b'{"batch": []}', auth=("pk", "sk"))
        body = r.json()
        assert body["service"] == "ingest" and body["query"] == "x=1" and body["body"] == '{"batch": []}'
        assert body["auth"].startswith("Basic ")
        assert (await c.patch("/api/v1/queues/q1")).json()["service"] == "queue-router"
        assert (await c.get("/api/public/traces/t")).json()["service"] == "projections"
        assert (await c.delete("/api/public/scores/s")).json()["service"] == "scoring"
        assert (await c.get("/queues")).json()["service"] == "console"


async def test_health_is_langfuse_shaped(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        r = await c.get("/api/public/health")
        assert r.status_code == 200 and r.json()["status"] == "OK" and "version" in r.json()


async def test_cookies_of_one_client_never_reach_another(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as alice, httpx.AsyncClient(base_url=gateway_url) as bob:
        login = await alice.get("/login", params={"user": "alice"})
        assert "secret-of-alice" in login.headers["set-cookie"]
        assert (await alice.get("/me")).json()["cookie"] == "session=secret-of-alice"
        # Bob never signed in: the gateway must not replay Alice's cookie for him.
        assert (await bob.get("/me")).json()["cookie"] is None
        await asyncio.sleep(0)
