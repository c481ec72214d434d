"""The gateway against real upstream servers: routing, streaming, headers, and no cookie kept between clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tally_cli.gateway import Gateway, create_gateway
from tally_cli.routes import SERVICES
from tally_shared.infra import free_port, wait_for_port

# Real servers on real ports (upstreams, the gateway, TCP servers that misbehave on purpose), waiting out timeouts.
pytestmark = pytest.mark.processes


def _upstream(name: str) -> Starlette:
    async def echo(request: Request) -> Response:
        if request.url.path in ("/healthz", "/readyz"):
            return JSONResponse({"ok": True})
        if request.url.path.endswith("/big"):
            return StreamingResponse(_big_body(), media_type="application/octet-stream")
        body = await request.body()
        resp = JSONResponse({"service": name, "path": request.url.path, "query": request.url.query,
                             "method": request.method, "body": body.decode(),
                             "cookie": request.headers.get("cookie"), "auth": request.headers.get("authorization")})
        if request.url.path.endswith("/login"):
            resp.set_cookie("session", f"secret-of-{request.query_params.get('user')}")
        return resp

    return Starlette(routes=[Route("/{p:path}", echo, methods=["GET", "POST", "PATCH", "DELETE"])])


BIG_CHUNKS = 80


async def _big_body() -> AsyncIterator[bytes]:
    for i in range(BIG_CHUNKS):
        yield bytes([i]) * 65536


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


@contextlib.contextmanager
def _serve_gateway(gateway: Gateway, port: int) -> Iterator[None]:
    """The gateway on its own event loop in a thread, as ``python -m tally_cli.gateway`` runs it in a process."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gateway.start("127.0.0.1", port), loop).result(10)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(grace=1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    ports = {svc: free_port() for svc in SERVICES}
    gw_port = free_port()
    with contextlib.ExitStack() as stack:
        for svc in SERVICES:
            stack.enter_context(_serve(_upstream(svc), ports[svc]))
        gw = create_gateway({svc: f"http://127.0.0.1:{p}" for svc, p in ports.items()})
        stack.enter_context(_serve_gateway(gw, gw_port))
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


async def test_each_response_has_one_date_and_one_server_header(gateway_url: str) -> None:
    # Both the upstream's server and the gateway's write date and server.
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        for r in (await c.get("/api/public/traces/t"), await c.get("/api/public/health")):
            assert len(r.headers.get_list("date")) == 1, r.headers
            assert len(r.headers.get_list("server")) == 1, r.headers


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


async def test_a_big_download_streams_through_intact(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c, c.stream("GET", "/api/v1/exports/big") as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        body = b"".join([chunk async for chunk in r.aiter_raw()])
    assert body == b"".join(bytes([i]) * 65536 for i in range(BIG_CHUNKS))


async def test_request_bodies_stream_through_with_a_length_or_chunked(gateway_url: str) -> None:
    big = b"x" * (3 * 1024 * 1024 + 7)

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        assert (await c.post("/api/public/ingestion", content=big)).json()["body"] == big.decode()
        r = await c.post("/api/public/ingestion", content=chunks())
        assert r.json()["body"] == "one,two,three"
        # The same keep-alive connection then serves a HEAD and a GET.
        head = await c.head("/api/public/traces/t")
        assert head.status_code == 200 and head.content == b""
        assert (await c.get("/api/public/traces/t")).json()["service"] == "projections"


def test_expect_100_continue_is_answered_by_the_gateway(gateway_url: str) -> None:
    host, port = gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /api/public/ingestion HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                  b"expect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        data = b""
        while not data.endswith(b"}"):
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK") and b'"body":"hello"' in data


# -- upstreams that fail: every transport failure is a 502/503/504 with Retry-After, never a 500 or a short 200 --

HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"


@contextlib.contextmanager
def _raw_upstream(behave: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server that reads the request head, then does whatever ``behave`` does with the connection."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn: socket.socket = self.request
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            behave(conn)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _close_at_once(conn: socket.socket) -> None:
    conn.close()


def _headers_then_close(conn: socket.socket) -> None:
    conn.sendall(HEAD_200)
    conn.close()


def _part_of_body_then_close(conn: socket.socket) -> None:
    conn.sendall(HEAD_200 + b'{"data": [' + b'"x",' * 20)
    time.sleep(0.3)
    conn.close()


def _never_answer(conn: socket.socket) -> None:
    time.sleep(3)
    conn.close()


@contextlib.contextmanager
def _gateway_to(ingest_url: str, timeout: float = 60.0, status: Path | None = None) -> Iterator[str]:
    upstreams = {svc: f"http://127.0.0.1:{free_port()}" for svc in SERVICES}  # nothing listens there
    upstreams["ingest"] = ingest_url
    port = free_port()
    with _serve_gateway(create_gateway(upstreams, timeout=timeout, supervisor_status=status), port):
        yield f"http://127.0.0.1:{port}"


def _assert_gateway_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == code and r.json()["error"]["service"] == "ingest"


@pytest.mark.parametrize(("behave", "status", "code"), [
    (_close_at_once, 502, "upstream_failed"),
    (_headers_then_close, 502, "upstream_failed"),
    (_never_answer, 504, "upstream_timeout"),
])
async def test_an_upstream_failing_mid_request_is_a_gateway_error(
    behave: Callable[[socket.socket], None], status: int, code: str
) -> None:
    with _raw_upstream(behave) as upstream, _gateway_to(upstream, timeout=1.0) as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            r = await c.post("/api/public/ingestion", json={"batch": []})
            _assert_gateway_error(r, status, code)


async def test_an_unreachable_upstream_is_503() -> None:
    with _gateway_to(f"http://127.0.0.1:{free_port()}") as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            _assert_gateway_error(await c.post("/api/public/ingestion", json={"batch": []}), 503,
                                  "upstream_unavailable")


async def test_a_failure_after_streaming_began_aborts_the_response() -> None:
    with _raw_upstream(_part_of_body_then_close) as upstream, _gateway_to(upstream) as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            with pytest.raises(httpx.HTTPError):
                r = await c.get("/api/public/ingestion")
                # Should the client get this far, the body must not pass for a complete one.
                r.json()


def test_health_is_degraded_naming_the_service_that_is_down() -> None:
    with _gateway_to(f"http://127.0.0.1:{free_port()}") as gw:
        r = httpx.get(gw + "/api/public/health", timeout=10)
        body = r.json()
        assert r.status_code == 503 and body["status"] == "degraded" and "version" in body
        assert "ingest" in body["unavailable"] and body["services"]["ingest"]["state"] == "down"


def test_health_says_which_service_the_supervisor_is_restarting(tmp_path: Path) -> None:
    status = tmp_path / "supervisor.json"
    status.write_text(json.dumps({"ingest": {"state": "restarting", "restarts": 2}}))
    with _gateway_to(f"http://127.0.0.1:{free_port()}", status=status) as gw:
        body = httpx.get(gw + "/api/public/health", timeout=10).json()
        assert body["status"] == "degraded"
        assert body["services"]["ingest"] == {"state": "restarting", "reason": "ConnectError", "restarts": 2}


def _answer_once_then_drop_the_next(conn: socket.socket) -> None:
    """Keep-alive as far as the headers say, but the next request on this connection finds it closed: what a
    service's keep-alive timeout does to a pooled connection."""
    body = b'{"ok": true}'
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                 % (len(body), body))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.close()


async def test_a_pooled_connection_the_service_closed_is_replaced() -> None:
    with _raw_upstream(_answer_once_then_drop_the_next) as upstream, _gateway_to(upstream) as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            for _ in range(3):
                r = await c.post("/api/public/ingestion", json={"batch": []})
                assert r.status_code == 200 and r.json() == {"ok": True}, r.text


async def test_an_unreachable_upstream_is_503_even_for_a_large_body() -> None:
    with _gateway_to(f"http://127.0.0.1:{free_port()}") as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            r = await c.post("/api/public/ingestion", content=b"x" * (4 * 1024 * 1024))
            _assert_gateway_error(r, 503, "upstream_unavailable")
            _assert_gateway_error(await c.post("/api/public/ingestion", json={}), 503, "upstream_unavailable")


def _body_until_close(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nhello, ")
    time.sleep(0.1)
    conn.sendall(b"world")
    conn.close()


def _no_content_then_drop_the_next(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.close()


async def test_a_body_delimited_by_the_end_of_the_connection_passes_whole() -> None:
    with _raw_upstream(_body_until_close) as upstream, _gateway_to(upstream) as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            for _ in range(2):
                r = await c.get("/api/public/ingestion")
                assert r.status_code == 200 and r.text == "hello, world"


async def test_a_pooled_connection_closed_after_a_204_is_replaced() -> None:
    with _raw_upstream(_no_content_then_drop_the_next) as upstream, _gateway_to(upstream) as gw:
        async with httpx.AsyncClient(base_url=gw, timeout=10) as c:
            for _ in range(3):
                r = await c.delete("/api/public/ingestion")
                assert r.status_code == 204 and r.content == b"", r.text
