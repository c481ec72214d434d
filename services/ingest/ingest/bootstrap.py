"""Wiring, in one place: ingest's container (the shared runtime: identity store, broker, database, and the shared
producer configured for ingest's hot path; the publisher adapter over it and the score-config lookup) and the app
serving OTLP/HTTP, Langfuse's and the native batch, and OTLP/gRPC.

One lifespan (``tally_shared.service.create_app``). Ingest must come up, and answer 503 with Retry-After, while the
broker is away: its producer connects in the background and on use, and the runtime connects its broker in the
background (``/readyz`` fails until then). The OTLP/gRPC server runs on the same event loop as the HTTP app; at
shutdown it stops (finishing calls in flight), and the container then closes what it owns (producer included)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fastapi import FastAPI

from ingest.adapters.configs import ConfigLookup, HttpConfigLookup
from ingest.adapters.publisher import KafkaPublisher, Publisher
from ingest.config import Settings
from ingest.entrypoints.grpc import start_server
from ingest.entrypoints.http import Deps, install_otlp_fast_path, router
from ingest.entrypoints.openapi import install_schemas
from tally_shared import service
from tally_shared.producer import Producer
from tally_shared.service import Runtime, runtime_parts, tune_gc

DESCRIPTION = (
    "The front door for traces: OTLP/HTTP (`/v1/traces`, `/api/public/otel/v1/traces`; OTLP/gRPC on its own "
    "port, 4317 by default), Langfuse's batch "
    "ingestion (`/api/public/ingestion`) and Tally's native batch (`/api/v1/ingest`). Authenticate with a "
    "project's key pair (HTTP Basic: public key, secret key). A 2xx means the broker acknowledged every event "
    "reported as a success."
)


# Young-generation collections between 10,000 allocations instead of 700 (the older ones in proportion).
GC_THRESHOLDS = (10_000, 20, 20)


@dataclass(kw_only=True)
class IngestContainer(Runtime):
    settings: Settings
    deps: Deps
    # The OTLP/gRPC server while it runs, and its port (GRPC_PORT 0 picks a free one).
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int = 0

    async def close(self) -> None:
        await self.deps.configs.close()
        await super().close()


def make_producer(settings: Settings) -> Producer:
    """The runtime's shared producer, as ingest's hot path needs it: several connections, batches as large as a
    request's events for one partition, the publish timeout, and connecting on use (ingest serves 503s while the
    broker is away and takes events again as soon as it is back)."""
    return Producer(
        settings.kafka_bootstrap_servers,
        client_id="tally-ingest",
        timeout=settings.publish_timeout_seconds,
        linger_ms=settings.linger_ms,
        max_request_size=settings.max_message_bytes,
        max_batch_bytes=settings.max_batch_bytes,
        producers=settings.producers,
        connect_on_send=True,
    )


def bootstrap(settings: Settings, publisher: Publisher | None = None,
              configs: ConfigLookup | None = None) -> IngestContainer:
    """The container; ``publisher``/``configs``: test doubles in place of Kafka and scoring."""
    producer = make_producer(settings)
    publisher = publisher or KafkaPublisher(producer)
    configs = configs or HttpConfigLookup(settings.scoring_url, ttl_seconds=settings.config_cache_seconds,
                                          timeout_seconds=settings.config_lookup_timeout_seconds)
    deps = Deps(settings=settings, publisher=publisher, configs=configs)
    return IngestContainer(**{**runtime_parts("ingest", settings, producer), "settings": settings}, deps=deps)


def build_app(container: IngestContainer) -> FastAPI:
    deps = container.deps
    settings = container.settings

    async def freeze_startup_objects() -> None:
        # An OTLP request of 100 spans allocates a few thousand containers (attribute dicts, drafts, fields), all
        # freed by reference counting: young collections less often, and start-up objects out of the full ones.
        tune_gc(GC_THRESHOLDS)

    async def start_grpc() -> None:
        container.grpc_server, container.grpc_port = await start_server(deps, container.identity, settings.host,
                                                                        settings.grpc_port)
        app.state.grpc_port = container.grpc_port

    async def stop_grpc() -> None:
        if container.grpc_server is not None:
            await container.grpc_server.stop(settings.publish_timeout_seconds)
            container.grpc_server = None

    # The gRPC server stops (finishing calls in flight) in a shutdown hook, before the container closes the
    # producer.
    app = service.create_app(container, title="Tally ingest", description=DESCRIPTION, routers=[router],
                             on_startup=[start_grpc, freeze_startup_objects], on_shutdown=[stop_grpc])
    install_schemas(app)
    install_otlp_fast_path(app)
    return app


def create_app_for(settings: Settings, publisher: Publisher | None = None,
                   configs: ConfigLookup | None = None) -> FastAPI:
    return build_app(bootstrap(settings, publisher, configs))


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_app_for(settings or Settings())
