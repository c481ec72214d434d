"""The one base URL under ``tally up``: a small streaming HTTP/1.1 reverse proxy that routes by path prefix
(``tally_cli.routes``) to the services, each its own process. docker-compose uses nginx with the same table.

It moves bytes: request heads are parsed (httptools, the C parser uvicorn uses), hop-by-hop headers dropped, and
bodies passed through as they arrive over keep-alive connections pooled per service; only the hop-by-hop headers,
``Date`` and ``Server`` of a response are rewritten. No cookie is ever kept: the gateway has no state per client.

A service that cannot be reached, or dies mid-request, is a gateway error the client can act on, never a 500:
502 (the upstream broke the exchange), 503 (not reachable, or no connection free), 504 (it did not answer in
time), each with ``Retry-After`` and a machine-readable body. OpenTelemetry exporters and Langfuse SDKs retry
exactly these. Once a response has started streaming its status is sent; a failure after that aborts the
connection, so the client sees a broken response rather than a complete-looking truncated one."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

from tally_cli.routes import DEFAULT_PORTS, SERVICES, env_name, route
from tally_shared import __version__

log = logging.getLogger("tally.gateway")

# Hop-by-hop headers are per connection and must not be forwarded (RFC 9110 7.6.1); the framing headers
# (content-length, transfer-encoding) are written again for the next hop, host names the upstream, and
# "expect: 100-continue" is answered by the gateway itself.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length", b"expect",
                        b"proxy-connection"})
# The gateway writes these on every response; the upstream's copies would make each appear twice.
OWN_RESPONSE_HEADERS = frozenset({b"date", b"server"})
SERVER = b"tally-gateway"

RETRY_AFTER_SECONDS = 1
CONNECT_TIMEOUT = 5.0
MAX_CONNECTIONS = 500  # per service
READ_SIZE = 256 * 1024
MAX_HEAD = 64 * 1024
CLIENT_IDLE_TIMEOUT = 75.0  # a keep-alive client connection with no request for this long is closed
# A request body up to this size is kept until the response starts, so that a request sent on a pooled connection
# the service had just closed (its keep-alive timeout) can be sent again on a new one.
REPLAY_LIMIT = 1024 * 1024
NO_BODY_STATUS = frozenset({204, 304})


def upstreams_from_env() -> dict[str, str]:
    return {
        svc: os.environ.get(f"TALLY_{env_name(svc)}_URL", f"http://127.0.0.1:{DEFAULT_PORTS[svc]}")
        for svc in SERVICES
    }


# -- transport failures, named as httpx names them (health reports the name as the reason a service is down) --

class UpstreamError(Exception):
    pass


class ConnectError(UpstreamError):
    pass


class ConnectTimeout(UpstreamError):
    pass


class PoolTimeout(UpstreamError):
    pass


class ReadTimeout(UpstreamError):
    pass


class WriteTimeout(UpstreamError):
    pass


class RemoteProtocolError(UpstreamError):
    """The upstream closed the connection or sent something that is not HTTP/1.1."""


class WriteError(UpstreamError):
    pass


class ReadError(UpstreamError):
    pass


def upstream_failure(service: str, exc: UpstreamError) -> tuple[int, str, str]:
    """(status, code, message) for a transport failure talking to ``service``."""
    if isinstance(exc, PoolTimeout):
        return 503, "upstream_busy", f"no connection to {service} came free in time"
    if isinstance(exc, ConnectError | ConnectTimeout):
        return 503, "upstream_unavailable", f"{service} is not reachable"
    if isinstance(exc, ReadTimeout | WriteTimeout):
        return 504, "upstream_timeout", f"{service} did not answer in time"
    return 502, "upstream_failed", f"{service} broke off the exchange ({type(exc).__name__})"


class _ClientGone(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))


def _own_response(status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, close: bool) -> bytes:
    out = [_status_line(status), b"date: ", _date(), b"\r\nserver: ", SERVER, b"\r\n"]
    for name, value in headers:
        out += [name, b": ", value, b"\r\n"]
    out += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
    if close:
        out.append(b"connection: close\r\n")
    out += [b"\r\n", body]
    return b"".join(out)


def _json_response(status: int, payload: dict[str, Any], *, retry_after: bool, close: bool = False) -> bytes:
    headers = [(b"content-type", b"application/json")]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    return _own_response(status, json.dumps(payload, separators=(",", ":")).encode(), headers, close=close)


def failure_response(service: str, exc: UpstreamError, *, close: bool = False) -> bytes:
    status, code, message = upstream_failure(service, exc)
    return _json_response(status, {"error": {"code": code, "message": message, "service": service}},
                          retry_after=True, close=close)


# -- HTTP/1.1 message events, from httptools callbacks --

class _Head:
    __slots__ = ("body", "chunked", "expect_continue", "headers", "keep_alive", "length", "method", "status",
                 "target", "version")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.target = b""
        self.method = b""
        self.status = 0
        self.version = "1.1"
        self.keep_alive = True
        self.length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.body = False


_END = b""  # the event that ends a message's body (body chunks are never empty)


class _Events:
    """httptools callbacks -> a queue of events: a ``_Head``, then body chunks (bytes), then ``_END``."""

    def __init__(self) -> None:
        self.queue: collections.deque[_Head | bytes] = collections.deque()
        self.head = _Head()
        self.size = 0
        self.in_body = False  # between a message's head and its end
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        self.head = _Head()
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.head.target += url
        self.size += len(url)
        if self.size > MAX_HEAD:
            raise _BadRequest(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.size += len(name) + len(value)
        if self.size > MAX_HEAD:
            raise _BadRequest(431)
        head = self.head
        name = name.lower()
        if name == b"content-length":
            head.length = int(value)
        elif name == b"transfer-encoding":
            head.chunked = b"chunked" in value.lower()
        elif name == b"expect":
            head.expect_continue = value.lower() == b"100-continue"
        head.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head, parser = self.head, self.parser
        assert parser is not None
        head.version = parser.get_http_version()
        head.keep_alive = parser.should_keep_alive()
        if isinstance(parser, httptools.HttpRequestParser):
            head.method = parser.get_method()
        else:
            head.status = parser.get_status_code()
        head.body = head.chunked or bool(head.length)
        self.in_body = True
        self.queue.append(head)

    def on_body(self, body: bytes) -> None:
        if body:
            self.queue.append(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.queue.append(_END)


# -- the upstream side: one keep-alive pool per service --

class _Conn:
    __slots__ = ("events", "parser", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False
        self.events = _Events()
        self.parser = httptools.HttpResponseParser(self.events)
        self.events.parser = self.parser

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.reader.exception() is not None or self.writer.is_closing())

    def close(self) -> None:
        self.writer.transport.abort()


class _Pool:
    def __init__(self, service: str, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.service = service
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = (parts.netloc or self.host).encode()
        self.timeout = timeout
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def acquire(self, *, fresh: bool = False) -> _Conn:
        if self.slots.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await self.slots.acquire()
            except TimeoutError:
                raise PoolTimeout() from None
        else:
            await self.slots.acquire()
        while self.idle and not fresh:
            conn = self.idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ_SIZE)
        except TimeoutError:
            self.slots.release()
            raise ConnectTimeout() from None
        except OSError as exc:
            self.slots.release()
            raise ConnectError(str(exc)) from None
        except BaseException:
            self.slots.release()
            raise
        return _Conn(reader, writer)

    def release(self, conn: _Conn, *, reusable: bool) -> None:
        if reusable and conn.usable():
            self.idle.append(conn)
        else:
            conn.close()
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    async def next_event(self, conn: _Conn) -> _Head | bytes:
        """The next event of the upstream's response; a read blocks at most ``timeout``."""
        queue = conn.events.queue
        while not queue:
            try:
                async with asyncio.timeout(self.timeout):
                    data = await conn.reader.read(READ_SIZE)
            except TimeoutError:
                raise ReadTimeout() from None
            except OSError as exc:
                raise ReadError(str(exc)) from None
            if not data:
                head = conn.events.head
                if conn.events.in_body and not head.chunked and head.length is None:
                    # A body delimited by the end of the connection (no length, not chunked): this is its end.
                    conn.events.in_body = False
                    return _END
                raise RemoteProtocolError("the upstream closed the connection")
            try:
                conn.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise RemoteProtocolError(str(exc)) from None
        return queue.popleft()

    async def write(self, conn: _Conn, data: bytes) -> None:
        writer = conn.writer
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size() > READ_SIZE:
                async with asyncio.timeout(self.timeout):
                    await writer.drain()
        except TimeoutError:
            raise WriteTimeout() from None
        except OSError as exc:
            raise WriteError(str(exc)) from None


def _request_head(method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]],
                  forwarded: list[tuple[bytes, bytes]], framing: bytes) -> bytes:
    out = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            out += [name, b": ", value, b"\r\n"]
    for name, value in forwarded:
        out += [name, b": ", value, b"\r\n"]
    out += [framing, b"\r\n"]
    return b"".join(out)


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop too."""
    tokens = [t.strip().lower() for name, value in headers if name == b"connection" for t in value.split(b",")]
    return frozenset(tokens)


def supervisor_states(path: Path | None) -> dict[str, dict[str, Any]]:
    """What the supervisor that started this gateway (``tally up``) last wrote about each service."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Gateway:
    """The proxy: ``await start(host, port)``, then ``await stop()``; or ``serve`` until SIGTERM."""

    def __init__(self, upstreams: dict[str, str], *, timeout: float = 60.0,
                 supervisor_status: Path | None = None) -> None:
        self.upstreams = upstreams
        self.timeout = timeout
        self.supervisor_status = supervisor_status
        self.pools: dict[str, _Pool] = {}
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.StreamWriter] = set()
        self.busy: set[asyncio.StreamWriter] = set()
        self.quiet = asyncio.Event()  # set when the last request in flight is done

    def pool(self, service: str) -> _Pool:
        pool = self.pools.get(service)
        if pool is None:
            pool = self.pools[service] = _Pool(service, self.upstreams[service], self.timeout)
        return pool

    async def start(self, host: str, port: int) -> asyncio.Server:
        self.server = await asyncio.start_server(self._client, host, port, limit=READ_SIZE, backlog=1024)
        return self.server

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let the requests in flight finish (up to ``grace`` seconds), close everything."""
        if self.server is not None:
            self.server.close()
        for writer in list(self.clients - self.busy):
            writer.transport.abort()
        if self.busy:
            self.quiet.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.quiet.wait()
        for writer in list(self.clients):
            writer.transport.abort()
        for pool in self.pools.values():
            pool.close()

    # -- the client side --

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        events = _Events()
        parser = httptools.HttpRequestParser(events)
        events.parser = parser
        queue = events.queue
        peer = writer.get_extra_info("peername")
        client_host = (peer[0] if isinstance(peer, tuple) else "").encode()

        async def next_event(idle: bool = False) -> _Head | bytes:
            while not queue:
                try:
                    async with asyncio.timeout(CLIENT_IDLE_TIMEOUT if idle else self.timeout):
                        data = await reader.read(READ_SIZE)
                except (TimeoutError, OSError):
                    raise _ClientGone() from None
                if not data:
                    raise _ClientGone()
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    raise _BadRequest(501) from None
                except httptools.HttpParserError as exc:
                    raise (exc.__context__ if isinstance(exc.__context__, _BadRequest) else _BadRequest(400)) \
                        from None
            return queue.popleft()

        try:
            while True:
                event = await next_event(idle=True)
                assert isinstance(event, _Head)
                self.busy.add(writer)
                try:
                    keep = await self._request(event, next_event, writer, client_host)
                finally:
                    self.busy.discard(writer)
                    if not self.busy:
                        self.quiet.set()
                if not keep or (self.server is not None and not self.server.is_serving()):
                    break
        except _ClientGone:
            pass
        except _BadRequest as exc:
            with contextlib.suppress(OSError):
                writer.write(_json_response(exc.status, {"error": {"code": "bad_request",
                                                                   "message": HTTPStatus(exc.status).phrase}},
                                            retry_after=False, close=True))
        except Exception:
            log.exception("gateway error")
        finally:
            self.clients.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        if writer.transport.get_write_buffer_size() > READ_SIZE:
            try:
                async with asyncio.timeout(self.timeout):
                    await writer.drain()
            except (TimeoutError, OSError):
                raise _ClientGone() from None
        elif writer.transport.is_closing():
            raise _ClientGone()

    async def _drain_request(self, head: _Head, next_event: Callable[[], Awaitable[_Head | bytes]]) -> None:
        """Read the rest of a request body nobody will forward (so the connection can serve the next request)."""
        while await next_event() != _END:
            pass

    async def _request(self, head: _Head, next_event: Callable[..., Awaitable[_Head | bytes]],
                       writer: asyncio.StreamWriter, client_host: bytes) -> bool:
        """Serve one request; whether the client connection may serve another."""
        url = httptools.parse_url(head.target)
        path = unquote(url.path.decode("latin-1"))
        method = head.method.decode("latin-1")
        if head.expect_continue and head.body:
            await self._send(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        if path == "/api/public/health" and method in ("GET", "HEAD"):
            await self._drain_request(head, next_event)
            status, payload = await self.health()
            await self._send(writer, _json_response(status, payload, retry_after=status != 200,
                                                    close=not head.keep_alive))
            return head.keep_alive
        service = route(path, method)
        target = head.target
        if not target.startswith(b"/"):  # absolute form (a client that takes the gateway for a forward proxy)
            target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
        return await self._proxy(service, head, target, next_event, writer, client_host)

    async def _proxy(self, service: str, head: _Head, target: bytes,
                     next_event: Callable[..., Awaitable[_Head | bytes]], writer: asyncio.StreamWriter,
                     client_host: bytes) -> bool:
        pool = self.pool(service)
        extra = _connection_tokens(head.headers)
        headers = [(n, v) for n, v in head.headers if n not in extra] if extra else head.headers
        forwarded = [(b"x-forwarded-for", client_host),
                     (b"x-forwarded-host", next((v for n, v in head.headers if n == b"host"), b"")),
                     (b"x-forwarded-proto", b"http")]
        if head.chunked:
            framing = b"transfer-encoding: chunked\r\n"
        elif head.length is not None:
            framing = b"content-length: %d\r\n" % head.length
        else:
            framing = b""
        request_head = _request_head(head.method, target, pool.host_header, headers, forwarded, framing)
        request_done = False
        if not head.body:
            await next_event()  # the end of the message, parsed with its head
            request_done = True
        sent: list[bytes] | None = [request_head]  # kept for a resend while small
        sent_size = len(request_head)
        attempts = 0
        conn: _Conn | None = None
        try:
            while True:
                attempts += 1
                try:
                    conn = await pool.acquire(fresh=attempts > 1)
                except UpstreamError as exc:
                    return await self._fail_before_response(service, exc, head, request_done, next_event, writer)
                try:
                    if attempts == 1:
                        await pool.write(conn, request_head)
                    else:
                        assert sent is not None
                        await pool.write(conn, b"".join(sent))
                    while not request_done:
                        event = await next_event()
                        if event == _END:
                            request_done = True
                            if head.chunked:
                                await pool.write(conn, b"0\r\n\r\n")
                                chunk = b"0\r\n\r\n"
                            else:
                                break
                        else:
                            assert isinstance(event, bytes)
                            chunk = b"%x\r\n%s\r\n" % (len(event), event) if head.chunked else event
                            await pool.write(conn, chunk)
                        if sent is not None:
                            sent_size += len(chunk)
                            if sent_size <= REPLAY_LIMIT:
                                sent.append(chunk)
                            else:
                                sent = None
                    response = await pool.next_event(conn)
                    break
                except UpstreamError as exc:
                    reused = conn.reused
                    pool.release(conn, reusable=False)
                    conn = None
                    # A pooled connection the service closed just before it was used (its idle timeout): send the
                    # request again on a new connection, if it is still all here and no answer was read.
                    if reused and sent is not None and attempts == 1 and not isinstance(exc, ReadTimeout):
                        continue
                    return await self._fail_before_response(service, exc, head, request_done, next_event, writer)
            sent = None
            assert isinstance(response, _Head)
            owned, conn = conn, None  # _respond releases it
            assert owned is not None
            return await self._respond(service, pool, owned, head, response, writer)
        finally:
            if conn is not None:
                pool.release(conn, reusable=False)

    async def _fail_before_response(self, service: str, exc: UpstreamError, head: _Head, request_done: bool,
                                    next_event: Callable[..., Awaitable[_Head | bytes]],
                                    writer: asyncio.StreamWriter) -> bool:
        # The rest of the request body is read and dropped first: a client still sending would otherwise see the
        # connection reset instead of the answer. One that takes too long gets the answer and a closed connection.
        if not request_done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_AFTER_SECONDS * 5):
                    await self._drain_request(head, next_event)
                    request_done = True
        keep = request_done and head.keep_alive
        await self._send(writer, failure_response(service, exc, close=not keep))
        return keep

    async def _respond(self, service: str, pool: _Pool, conn: _Conn, request: _Head, response: _Head,
                       writer: asyncio.StreamWriter) -> bool:
        """Stream the upstream's response to the client; whether both connections may serve another request."""
        no_body = request.method == b"HEAD" or response.status in NO_BODY_STATUS or response.status < 200
        reusable = False  # the upstream connection goes back to the pool only after a complete response
        try:
            first: bytes = _END
            if not no_body:
                # Read the first chunk before answering: a service that dies right after its headers (the common
                # case for a crash mid-request) still gets a clean 502 instead of an aborted response.
                try:
                    first = await pool.next_event(conn)  # type: ignore[assignment]
                except UpstreamError as exc:
                    keep = request.keep_alive
                    await self._send(writer, failure_response(service, exc, close=not keep))
                    return keep
            conn_tokens = _connection_tokens(response.headers)
            out = [_status_line(response.status), b"date: ", _date(), b"\r\nserver: ", SERVER, b"\r\n"]
            for name, value in response.headers:
                if name not in HOP_BY_HOP and name not in OWN_RESPONSE_HEADERS and name not in conn_tokens:
                    out += [name, b": ", value, b"\r\n"]
            keep = request.keep_alive
            chunked = False
            if response.length is not None:
                out.append(b"content-length: %d\r\n" % response.length)
            elif no_body:
                pass
            elif request.version == "1.1":
                out.append(b"transfer-encoding: chunked\r\n")
                chunked = True
            else:
                keep = False  # an HTTP/1.0 client and no length: the end of the connection ends the body
            if not keep:
                out.append(b"connection: close\r\n")
            out.append(b"\r\n")
            if no_body:
                await self._send(writer, b"".join(out))
                # A 204 or 304 ends with its head; httptools waits for a HEAD response's announced body, so that
                # connection's parser is not reused.
                queue = conn.events.queue
                complete = request.method != b"HEAD" and bool(queue) and queue[0] == _END
                if complete:
                    queue.popleft()
                reusable = response.keep_alive and complete and not queue
                return keep
            chunk = first
            if chunk == _END:
                await self._send(writer, b"".join(out) + (b"0\r\n\r\n" if chunked else b""))
            else:
                out.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self._send(writer, b"".join(out))
                while True:
                    try:
                        chunk = await pool.next_event(conn)  # type: ignore[assignment]
                    except UpstreamError:
                        # Mid-body: the status is out. Abort, so the client cannot take the body for complete.
                        writer.transport.abort()
                        raise _ClientGone() from None
                    if chunk == _END:
                        if chunked:
                            await self._send(writer, b"0\r\n\r\n")
                        break
                    await self._send(writer, b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            reusable = response.keep_alive
            return keep
        except _ClientGone:
            writer.transport.abort()
            raise
        finally:
            pool.release(conn, reusable=reusable)

    # -- health --

    async def fetch(self, service: str, path: str, timeout: float) -> tuple[int, bytes]:
        """GET ``path`` of ``service``: (status, body)."""
        pool = self.pool(service)
        conn: _Conn | None = None
        ok = False
        try:
            async with asyncio.timeout(timeout):
                conn = await pool.acquire()
                await pool.write(conn, _request_head(b"GET", path.encode(), pool.host_header, [], [], b""))
                head = await pool.next_event(conn)
                assert isinstance(head, _Head)
                body = bytearray()
                while (chunk := await pool.next_event(conn)) != _END:
                    assert isinstance(chunk, bytes)
                    body += chunk
            ok = head.keep_alive
            return head.status, bytes(body)
        except TimeoutError:
            raise (ConnectTimeout() if conn is None else ReadTimeout()) from None
        finally:
            if conn is not None:
                pool.release(conn, reusable=ok)

    async def health(self) -> tuple[int, dict[str, Any]]:
        # Langfuse answers {"status": "OK", "version": ...}; Tally's is OK only when every service is ready.
        # Otherwise "degraded", naming each service that is down (not reachable) or not ready (and why).
        async def check(svc: str) -> tuple[str, dict[str, object] | None]:
            try:
                status, body = await self.fetch(svc, "/readyz", timeout=3)
            except UpstreamError as exc:
                return svc, {"state": "down", "reason": type(exc).__name__}
            if status == 200:
                return svc, None
            try:
                checks = json.loads(body).get("checks", {})
            except (ValueError, AttributeError):
                checks = {}
            return svc, {"state": "not_ready", "status": status,
                         "checks": {k: v for k, v in checks.items() if v != "ok"}}

        results = dict(await asyncio.gather(*(check(s) for s in SERVICES)))
        problems = {s: p for s, p in sorted(results.items()) if p is not None}
        supervised = supervisor_states(self.supervisor_status)
        for svc, problem in problems.items():
            known = supervised.get(svc, {})
            if known.get("state") == "restarting":
                problem["state"] = "restarting"
            if "restarts" in known:
                problem["restarts"] = known["restarts"]
        if problems:
            return 503, {"status": "degraded", "version": __version__, "unavailable": sorted(problems),
                         "services": problems}
        return 200, {"status": "OK", "version": __version__}

    async def serve(self, host: str, port: int) -> None:
        """Serve until SIGTERM or SIGINT, then finish the requests in flight."""
        await self.start(host, port)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        await self.stop()


def create_gateway(upstreams: dict[str, str], *, timeout: float = 60.0,
                   supervisor_status: Path | None = None) -> Gateway:
    return Gateway(upstreams, timeout=timeout, supervisor_status=supervisor_status)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host = os.environ.get("TALLY_GATEWAY_HOST", "127.0.0.1")
    port = int(os.environ.get("TALLY_GATEWAY_PORT", str(DEFAULT_PORTS["gateway"])))
    status = os.environ.get("TALLY_SUPERVISOR_STATUS_FILE")
    gateway = create_gateway(upstreams_from_env(), supervisor_status=Path(status) if status else None)
    try:
        import uvloop
    except ImportError:
        asyncio.run(gateway.serve(host, port))
    else:
        uvloop.run(gateway.serve(host, port))


if __name__ == "__main__":
    main()
