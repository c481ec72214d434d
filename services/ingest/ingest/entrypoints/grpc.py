"""OTLP/gRPC: the TraceService ``Export`` call, served by the ingest process next to its HTTP endpoints.

Same authentication as HTTP (Basic key pair in the ``authorization`` metadata), same mapping as OTLP/HTTP
protobuf, same guarantees: OK only once the broker acknowledged every event, ``partial_success`` for refused spans,
UNAVAILABLE while the broker is away (OTLP exporters retry that code).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.domain import otel
from ingest.domain.batch import Batch
from ingest.domain.report import Report
from ingest.entrypoints.http import Deps, submit_otlp
from ingest.metrics import BYTES_IN, REQUEST_SECONDS, REQUESTS_REJECTED
from tally_shared.http import ApiError
from tally_shared.identity.store import IdentityStore

log = logging.getLogger("tally.ingest")

ENDPOINT = "otlp_grpc"


def basic_credentials(metadata: tuple[tuple[str, str | bytes], ...] | None) -> tuple[str, str] | None:
    """(public key, secret key) from ``authorization: Basic ...``, or None."""
    for key, value in metadata or ():
        if key.lower() != "authorization" or not isinstance(value, str):
            continue
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            public, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (public, secret) if public and secret else None
    return None


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, deps: Deps, identity: IdentityStore) -> None:
        self.deps = deps
        self.identity = identity

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        start = time.perf_counter()
        status = grpc.StatusCode.OK
        try:
            credentials = basic_credentials(context.invocation_metadata())
            project = await self.identity.verify_api_key(*credentials) if credentials else None
            if project is None:
                status = grpc.StatusCode.UNAUTHENTICATED
                REQUESTS_REJECTED.labels(ENDPOINT, "unauthorized").inc()
                await context.abort(status, "authorization metadata must be 'Basic base64(public key:secret key)' "
                                    "of a project's API key")
            assert project is not None
            size = request.ByteSize()
            BYTES_IN.labels(ENDPOINT).inc(size)
            settings = self.deps.settings
            batch = Batch("otel")
            report = Report()
            limit = settings.max_item_bytes if size > settings.max_item_bytes else None
            otel.add_spans(batch, report, otel.protobuf_spans(request, report, limit))
            try:
                rejected, message = await submit_otlp(self.deps, batch, report, project, ENDPOINT)
            except ApiError as exc:
                status = grpc.StatusCode.UNAVAILABLE
                REQUESTS_REJECTED.labels(ENDPOINT, exc.code).inc()
                await context.abort(status, exc.message)
            response = ExportTraceServiceResponse()
            if rejected:
                response.partial_success.rejected_spans = rejected
                response.partial_success.error_message = message
            return response
        finally:
            REQUEST_SECONDS.labels(ENDPOINT, status.name).observe(time.perf_counter() - start)


async def start_server(deps: Deps, identity: IdentityStore, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """The server, started on the running event loop, and the port it listens on."""
    limit = deps.settings.max_body_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", 1024 * 1024)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(deps, identity), server)
    bound = server.add_insecure_port(f"{_grpc_host(host)}:{port}")
    await server.start()
    log.info("OTLP/gRPC listening on %s:%d", host, bound)
    return server, bound


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
