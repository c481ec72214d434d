"""Wiring: the shared runtime (identity, health, metrics) plus ingest's publisher and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ingest.adapters.configs import ConfigLookup, HttpConfigLookup
from ingest.adapters.publisher import KafkaPublisher, Publisher
from ingest.config import Settings
from ingest.entrypoints.grpc import start_server
from ingest.entrypoints.http import Deps, router
from ingest.entrypoints.openapi import install_schemas
from tally_shared.service import build_runtime
from tally_shared.service import create_app as create_service_app

log = logging.getLogger("tally.ingest")

DESCRIPTION = (
    "The front door for traces: OTLP/HTTP (`/v1/traces`, `/api/public/otel/v1/traces`; OTLP/gRPC on its own "
    "port, 4317 by default), Langfuse's batch "
    "ingestion (`/api/public/ingestion`) and Tally's native batch (`/api/v1/ingest`). Authenticate with a "
    "project's key pair (HTTP Basic: public key, secret key). A 2xx means the broker acknowledged every event "
    "reported as a success."
)


def create_app_for(settings: Settings, publisher: Publisher | None = None,
                   configs: ConfigLookup | None = None) -> FastAPI:
    runtime = build_runtime("ingest", settings)
    lookup = configs or HttpConfigLookup(settings.scoring_url, ttl_seconds=settings.config_cache_seconds,
                                         timeout_seconds=settings.config_lookup_timeout_seconds)
    kafka = publisher or KafkaPublisher(
        settings.kafka_bootstrap_servers,
        timeout=settings.publish_timeout_seconds,
        linger_ms=settings.linger_ms,
        max_message_bytes=settings.max_message_bytes,
        max_batch_bytes=settings.max_batch_bytes,
        producers=settings.producers,
    )

    async def start_publisher() -> None:
        if isinstance(kafka, KafkaPublisher):
            await kafka.start()

    # Ingest must come up (and answer 503 with Retry-After) while the broker is away: its own publisher starts
    # tolerantly, and the shared runtime connects its broker in the background (``/readyz`` fails until then).
    app = create_service_app(runtime, title="Tally ingest", description=DESCRIPTION, routers=[router],
                     on_startup=[start_publisher])
    deps = app.state.ingest = Deps(settings=settings, publisher=kafka, configs=lookup)
    install_schemas(app)

    # The shared lifespan stops the runtime; the publisher and the OTLP/gRPC server are ingest's own. The gRPC
    # server runs on this event loop, beside the HTTP app, and stops (finishing calls in flight) before the
    # publisher does.
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a):
            grpc_server = None
            try:
                grpc_server, a.state.grpc_port = await start_server(deps, runtime.identity, settings.host,
                                                                    settings.grpc_port)
                yield
            finally:
                if grpc_server is not None:
                    await grpc_server.stop(settings.publish_timeout_seconds)
                if isinstance(kafka, KafkaPublisher):
                    await kafka.stop()
                await lookup.close()

    app.router.lifespan_context = lifespan
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_app_for(settings or Settings())
