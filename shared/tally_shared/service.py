"""The shape every service process shares: one FastAPI app on one port that also runs the service's FastStream
consumers, with ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``. A service builds a ``Runtime``,
registers its subscribers on ``runtime.broker``, then calls ``create_app``.

The HTTP port opens before the consumers have joined their groups: joining can take seconds (longer while the
group waits out a dead member's session), and a service's own HTTP API does not need its consumers. The broker and
subscribers start in a background task that retries until the broker answers; ``/readyz`` says when they have."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tally_shared import __version__
from tally_shared.db import make_engine, make_session_factory, ping
from tally_shared.http import install_error_handlers, install_ops_routes
from tally_shared.identity.store import IdentityStore
from tally_shared.messaging import lag_reporter, make_broker
from tally_shared.settings import ServiceSettings
from tally_shared.topics import Topic

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    name: str
    settings: ServiceSettings
    registry: CollectorRegistry
    broker: KafkaBroker
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    identity: IdentityStore
    # consumer group -> topics, for the lag gauge
    consumer_groups: dict[str, Sequence[Topic]] = field(default_factory=dict)
    # set once the broker is connected and every subscriber has started (readiness)
    consumers_started: asyncio.Event = field(default_factory=asyncio.Event)


BROKER_RETRY_FIRST_SECONDS = 0.5
BROKER_RETRY_MAX_SECONDS = 10.0


async def _start_concurrently(broker: KafkaBroker) -> None:
    """``KafkaBroker.start`` (connect, start each subscriber, then each publisher), but with the subscribers
    started together: aiokafka's start waits for the group assignment, and joins one after another would each pay
    the broker's join delay and unsettle the members already in the group."""
    await broker.connect()
    await asyncio.gather(*(sub.start() for sub in broker.subscribers))
    for pub in broker.publishers:
        await pub.start()
    broker.running = True


async def start_broker(runtime: Runtime) -> None:
    """Connect the broker and start every subscriber, retrying with backoff while the broker is unreachable.
    A half-started broker is stopped before the next attempt, so no subscriber runs twice."""
    delay = BROKER_RETRY_FIRST_SECONDS
    while True:
        try:
            await _start_concurrently(runtime.broker)
        except Exception as exc:
            log.warning("%s: broker not reachable yet (%s: %s); retrying in %.1fs",
                        runtime.name, type(exc).__name__, exc, delay)
            with contextlib.suppress(Exception):
                await runtime.broker.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BROKER_RETRY_MAX_SECONDS)
            continue
        runtime.consumers_started.set()
        log.info("%s: broker connected, consumers started", runtime.name)
        return


def build_runtime(name: str, settings: ServiceSettings) -> Runtime:
    registry = CollectorRegistry()
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size, application_name=f"tally-{name}")
    return Runtime(
        name=name,
        settings=settings,
        registry=registry,
        broker=make_broker(settings.kafka_bootstrap_servers, service=name, registry=registry),
        engine=engine,
        sessions=make_session_factory(engine),
        identity=IdentityStore(engine),
    )


def create_app(
    runtime: Runtime,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in on_startup:
            await hook()
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(start_broker(runtime))]
        tasks += [asyncio.create_task(job()) for job in background]
        if runtime.consumer_groups:
            tasks.append(asyncio.create_task(
                lag_reporter(runtime.settings.kafka_bootstrap_servers, runtime.consumer_groups)
            ))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await runtime.broker.stop()
            await runtime.engine.dispose()

    app = FastAPI(title=title, description=description, version=__version__, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.identity = runtime.identity
    app.state.secret_key = runtime.settings.secret_key
    install_error_handlers(app)

    async def broker_ok() -> None:
        if not runtime.broker.running or not await runtime.broker.ping(timeout=2):
            raise ConnectionError("broker did not answer")

    async def consumers_ok() -> None:
        if not runtime.consumers_started.is_set():
            raise ConnectionError("consumers not started yet")

    install_ops_routes(
        app, service=runtime.name,
        checks={"database": lambda: ping(runtime.engine), "broker": broker_ok, "consumers": consumers_ok},
        registry=runtime.registry,
    )
    for router in routers:
        app.include_router(router)
    return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=10)
