"""The shape every service process shares: one FastAPI app on one port that also runs the service's FastStream
consumers, with ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics`` and request metrics.

A service's ``bootstrap.py`` builds its container (a dataclass extending ``Container``, or ``Runtime`` when the
service owns a database and a broker), registers its subscribers on ``container.broker``, then calls
``create_app`` with its routers and lifecycle hooks. Handlers get the container with
``Annotated[MyContainer, Depends(provide(MyContainer))]``, never by an ``app.state`` name.

Lifecycle, in order: ``on_startup`` hooks; the container's own background tasks (broker and producer started with
retries, the lag reporter) and the ``background`` tasks; serve; then the tasks are cancelled, ``on_shutdown``
hooks run (in reverse order), and the container closes what it owns (broker, producer, engine).

The HTTP port opens before the consumers have joined their groups: joining can take seconds (longer while the
group waits out a dead member's session), and a service's own HTTP API does not need its consumers. The broker and
subscribers start in a background task that retries until the broker answers; ``/readyz`` says when they have."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tally_shared import __version__, logs
from tally_shared.db import make_engine, make_session_factory, ping
from tally_shared.http import HealthCheck, RequestMetrics, install_error_handlers, install_ops_routes
from tally_shared.identity.store import IdentityStore
from tally_shared.lag import report_lag
from tally_shared.messaging import make_broker
from tally_shared.producer import Producer
from tally_shared.settings import ServiceSettings
from tally_shared.topics import Topic

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
Job = Callable[[], Coroutine[Any, Any, None]]

BROKER_RETRY_FIRST_SECONDS = 0.5
BROKER_RETRY_MAX_SECONDS = 10.0
# The producer's first connection is awaited this long at startup (so the first request finds it ready); after
# that it keeps trying in the background, as the broker does.
PRODUCER_START_SECONDS = 5.0


@dataclass(kw_only=True)
class Container:
    """What a service process holds for its whole life. Extend it with the service's dependencies as fields;
    override ``checks`` / ``background`` / ``close`` for resources the base does not know about."""

    name: str
    settings: ServiceSettings
    # Per-app metrics (FastStream's, request metrics); the process-wide ones live in prometheus' default registry.
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def checks(self) -> dict[str, HealthCheck]:
        """Readiness checks, by name (``/readyz``)."""
        return {}

    def background(self) -> list[Job]:
        """Tasks that run while the app serves (cancelled at shutdown)."""
        return []

    async def close(self) -> None:
        """Release what the container owns (after every task and shutdown hook)."""


@dataclass(kw_only=True)
class Runtime(Container):
    """A service with its own database schema and Kafka consumers/producers."""

    broker: KafkaBroker
    producer: Producer
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    identity: IdentityStore
    # consumer group -> topics, for the lag gauge
    consumer_groups: dict[str, Sequence[Topic]] = field(default_factory=dict)
    # set once the broker is connected and every subscriber has started (readiness)
    consumers_started: asyncio.Event = field(default_factory=asyncio.Event)

    def checks(self) -> dict[str, HealthCheck]:
        async def broker_ok() -> None:
            if not self.broker.running or not await self.broker.ping(timeout=2):
                raise ConnectionError("broker did not answer")
            if not self.producer.started:
                raise ConnectionError("event producer not connected yet")

        async def consumers_ok() -> None:
            if not self.consumers_started.is_set():
                raise ConnectionError("consumers not started yet")

        return {"database": lambda: ping(self.engine), "broker": broker_ok, "consumers": consumers_ok}

    def background(self) -> list[Job]:
        jobs: list[Job] = [lambda: start_broker(self), lambda: start_producer(self)]
        if self.consumer_groups:
            groups = self.consumer_groups
            jobs.append(lambda: report_lag(self.settings.kafka_bootstrap_servers, groups))
        return jobs

    async def close(self) -> None:
        await self.broker.stop()
        await self.producer.stop()
        await self.engine.dispose()


class RuntimeParts(TypedDict):
    name: str
    settings: ServiceSettings
    registry: CollectorRegistry
    broker: KafkaBroker
    producer: Producer
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    identity: IdentityStore


_gc_tuned = False


def tune_gc(thresholds: tuple[int, int, int] | None = None) -> None:
    """Move everything built at start-up (app, routes, models, compiled statements: it lives as long as the process)
    out of the cyclic collector's reach, and optionally collect less often. Consumers allocate tens of containers
    per event that die with their batch by reference counting and form no cycles; with the default thresholds they
    set off a collection every 700 allocations, and the full ones traverse every module and class loaded at
    start-up (projections: ~110 -> ~75 µs CPU per event; queue-router's summary merge: 36 -> 25 µs). Once per
    process: freezing again later would keep whatever garbage exists by then for ever."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    if thresholds is not None:
        gc.set_threshold(*thresholds)


def runtime_parts(name: str, settings: ServiceSettings, producer: Producer | None = None) -> RuntimeParts:
    """The fields ``Runtime`` needs, for a subclass: ``MyContainer(**runtime_parts(name, settings), extra=...)``.
    ``producer``: the service's own configuration of the shared producer (ingest's), in place of the default."""
    registry = CollectorRegistry()
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size, application_name=f"tally-{name}")
    return RuntimeParts(
        name=name,
        settings=settings,
        registry=registry,
        broker=make_broker(settings.kafka_bootstrap_servers, service=name, registry=registry),
        producer=producer or Producer(settings.kafka_bootstrap_servers, client_id=f"tally-{name}"),
        engine=engine,
        sessions=make_session_factory(engine),
        identity=IdentityStore(engine),
    )


def build_runtime(name: str, settings: ServiceSettings) -> Runtime:
    return Runtime(**runtime_parts(name, settings))


async def _start_concurrently(broker: KafkaBroker) -> None:
    """``KafkaBroker.start`` (connect, start each subscriber, then each publisher), but with the subscribers
    started together: aiokafka's start waits for the group assignment, and joins one after another would each pay
    the broker's join delay and unsettle the members already in the group."""
    await broker.connect()
    await asyncio.gather(*(sub.start() for sub in broker.subscribers))
    for pub in broker.publishers:
        await pub.start()
    broker.running = True


async def _with_retries(what: str, attempt: Callable[[], Awaitable[None]], undo: Hook) -> None:
    delay = BROKER_RETRY_FIRST_SECONDS
    while True:
        try:
            await attempt()
            return
        except Exception as exc:
            log.warning("%s not reachable yet (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            with contextlib.suppress(Exception):
                await undo()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BROKER_RETRY_MAX_SECONDS)


async def start_broker(runtime: Runtime) -> None:
    """Connect the broker and start every subscriber, retrying with backoff while the broker is unreachable.
    A half-started broker is stopped before the next attempt, so no subscriber runs twice."""
    await _with_retries("broker", lambda: _start_concurrently(runtime.broker), runtime.broker.stop)
    runtime.consumers_started.set()
    log.info("%s: broker connected, consumers started", runtime.name)


async def start_producer(runtime: Runtime) -> None:
    # A failed start closes what it opened; no undo, which could close a connection a sender just opened
    # (ingest's producer also connects on use).
    await _with_retries("event producer", runtime.producer.start, _nothing)


async def _nothing() -> None:
    return None


def provide(cls: type[C]) -> Callable[[Request], C]:
    """A FastAPI dependency returning the app's container as ``cls``:
    ``Deps = Annotated[ScoringContainer, Depends(provide(ScoringContainer))]``."""

    def dependency(request: Request) -> C:
        container = request.app.state.container
        if not isinstance(container, cls):
            raise TypeError(f"the app's container is a {type(container).__name__}, not a {cls.__name__}")
        return container

    dependency.__name__ = f"provide_{cls.__name__}"
    return dependency


C = TypeVar("C", bound=Container)


def create_app(
    container: Container,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    background: Sequence[Job] = (),
    checks: dict[str, HealthCheck] | None = None,
    error_handlers: bool = True,
    docs: bool = True,
    request_metrics_prefix: str = "tally_http",
) -> FastAPI:
    """The service's app. ``checks``: readiness checks in place of the container's; ``error_handlers``: the
    machine-readable JSON errors of ``tally_shared.http`` (a service rendering HTML pages installs its own);
    ``request_metrics_prefix``: metric names ``<prefix>_requests_total`` / ``<prefix>_request_seconds``."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in on_startup:
            await hook()
        if isinstance(container, Runtime):
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(PRODUCER_START_SECONDS):
                    await container.producer.start()
        tasks = [asyncio.create_task(job()) for job in (*container.background(), *background)]
        try:
            yield
        finally:
            for t in reversed(tasks):
                t.cancel()
            for t in reversed(tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for hook in reversed(on_shutdown):
                try:
                    await hook()
                except Exception:
                    log.exception("%s: shutdown hook failed", container.name)
            await container.close()

    kwargs: dict[str, Any] = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title=title, description=description, version=__version__, lifespan=lifespan, **kwargs)
    app.state.container = container
    app.state.settings = container.settings
    app.state.secret_key = container.settings.secret_key
    if isinstance(container, Runtime):
        # Read by tally_shared.identity.auth and by services not yet moved to ``provide``.
        app.state.runtime = container
        app.state.identity = container.identity
    if error_handlers:
        install_error_handlers(app)
    install_ops_routes(app, service=container.name, checks=container.checks() if checks is None else checks,
                       registry=container.registry)
    app.add_middleware(RequestMetrics, registry=container.registry, prefix=request_metrics_prefix)
    for router in routers:
        app.include_router(router)
    if docs:
        install_docs_behind_gateway(app, container.name)
    return app


def docs_path(service: str) -> str:
    """Where the base URL serves a service's OpenAPI page (``tally_cli.routes`` routes the prefix to it)."""
    return f"/api/docs/{service}"


def install_docs_behind_gateway(app: FastAPI, service: str) -> None:
    """The OpenAPI page and document again under ``/api/docs/<service>``: ``/docs`` is one path for every service,
    so behind the one base URL only a per-service prefix can reach each page. Its "try it out" calls then go to
    the base URL too, where every path of the document is routed to this service."""
    base = docs_path(service)

    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def openapi_page() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=f"{base}/openapi.json", title=f"{app.title} - API")

    app.add_api_route(f"{base}/openapi.json", openapi_document, methods=["GET"], include_in_schema=False)
    app.add_api_route(base, openapi_page, methods=["GET"], include_in_schema=False)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    container = getattr(app.state, "container", None)
    logs.configure(container.name if container is not None else app.title, level=settings.log_level,
                   fmt=settings.log_format)
    # log_config=None: uvicorn's loggers propagate to the root handler (one format for every line).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None,
                timeout_graceful_shutdown=10)
