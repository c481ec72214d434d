"""Done-when: the real langfuse SDK (5.x, OTLP) and the OpenTelemetry SDK's OTLP/HTTP exporter send traces through
the running ingest service, and they are on Kafka as TraceIngested events with the right fields."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tally_shared.events import ObservationData, TraceData, TraceIngested
from tally_shared.testing.plugin import basic_auth
from tally_shared.topics import TRACES

from .conftest import Server, read_events


def _merge(events: list[tuple[Any, Any]], trace_id: str) -> tuple[TraceData | None, dict[str, ObservationData]]:
    """Fold the trace's events the way a consumer would (later fields win)."""
    trace: dict[str, Any] = {}
    observations: dict[str, dict[str, Any]] = {}
    for env, payload in sorted(events, key=lambda e: e[0].occurred_at):
        assert isinstance(payload, TraceIngested) and env.key == trace_id == payload.trace_id
        if payload.trace is not None:
            trace.update(payload.trace.model_dump(exclude_unset=True))
        for o in payload.observations:
            observations.setdefault(o.id, {}).update(o.model_dump(exclude_unset=True))
    return (TraceData(**trace) if trace else None,
            {k: ObservationData(**v) for k, v in observations.items()})


def _send_with_langfuse(base_url: str, public_key: str, secret_key: str) -> str:
    from langfuse import Langfuse, propagate_attributes

    lf = Langfuse(public_key=public_key, secret_key=secret_key, base_url=base_url, tracer_provider=TracerProvider(),
                  environment="sdk-test", release="rel-1")
    with lf.start_as_current_observation(as_type="span", name="handle-request", input={"question": "hi"}) as root, \
            propagate_attributes(user_id="user-1", session_id="session-1", tags=["alpha", "beta"],
                                 trace_name="sdk-trace", metadata={"team": "core"}):
        with lf.start_as_current_observation(
            as_type="generation", name="llm-call", model="gpt-4o", input=[{"role": "user", "content": "hi"}],
            model_parameters={"temperature": 0.5},
        ) as gen:
            gen.update(output="hello!", usage_details={"input": 10, "output": 3}, cost_details={"total": 0.002})
        with lf.start_as_current_observation(as_type="tool", name="search", input="query") as tool:
            tool.update(output=["result"], metadata={"hits": 1})
        root.update(output={"answer": "hello!"}, level="WARNING", status_message="slow upstream")
        trace_id = root.trace_id
    lf.flush()
    lf.shutdown()
    return trace_id


async def test_langfuse_sdk(ingest_server: Server, api_key: tuple[str, str], project_id: str,
                            kafka_bootstrap: str) -> None:
    trace_id = await asyncio.to_thread(_send_with_langfuse, ingest_server.base_url, *api_key)
    events = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1, settle=1.0)
    trace, obs = _merge(events, trace_id)
    assert trace is not None
    assert trace.name == "sdk-trace" and trace.user_id == "user-1" and trace.session_id == "session-1"
    assert trace.tags == ["alpha", "beta"] and trace.metadata is not None and trace.metadata["team"] == "core"
    # As Langfuse keeps them: the OpenTelemetry resource of the SDK's tracer provider.
    assert trace.metadata["resourceAttributes"]["telemetry.sdk.language"] == "python"
    assert trace.input == {"question": "hi"} and trace.output == {"answer": "hello!"}
    assert trace.environment == "sdk-test" and trace.release == "rel-1"
    by_name = {o.name: o for o in obs.values()}
    assert set(by_name) == {"handle-request", "llm-call", "search"}
    root, gen, tool = by_name["handle-request"], by_name["llm-call"], by_name["search"]
    assert root.type == "SPAN" and root.parent_observation_id is None
    assert root.level == "WARNING" and root.status_message == "slow upstream"
    assert gen.type == "GENERATION" and gen.model == "gpt-4o" and gen.parent_observation_id == root.id
    assert gen.input == [{"role": "user", "content": "hi"}] and gen.output == "hello!"
    assert gen.model_parameters == {"temperature": 0.5}
    assert gen.usage_details == {"input": 10, "output": 3} and gen.cost_details == {"total": 0.002}
    assert gen.environment == "sdk-test" and gen.start_time is not None and gen.end_time is not None
    assert tool.type == "TOOL" and tool.input == "query" and tool.output == ["result"]
    assert tool.metadata is not None and tool.metadata["hits"] == 1


def _send_with_otel(base_url: str, public_key: str, secret_key: str) -> str:
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-test",
                                                        "deployment.environment.name": "otel-env"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=f"{base_url}/v1/traces", headers=basic_auth(public_key, secret_key))))
    tracer = provider.get_tracer("tally-test")
    with tracer.start_as_current_span("agent-run", attributes={
        "gen_ai.operation.name": "invoke_agent", "input.value": '{"task": "t"}', "session.id": "s-otel",
        "user.id": "u-otel",
    }) as root:
        with tracer.start_as_current_span("chat", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-x",
            "gen_ai.response.model": "claude-x-2025", "gen_ai.request.max_tokens": 100,
            "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 2,
            "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": "q"}]}])
            .decode(),
        }) as chat:
            chat.set_attribute("gen_ai.output.messages", '[{"role": "assistant"}]')
        with tracer.start_as_current_span("lookup", attributes={"openinference.span.kind": "RETRIEVER"}) as lookup:
            lookup.set_status(Status(StatusCode.ERROR, "index offline"))
        root.set_attribute("output.value", "done")
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.force_flush()
    provider.shutdown()
    return trace_id


async def test_opentelemetry_sdk(ingest_server: Server, api_key: tuple[str, str], project_id: str,
                                 kafka_bootstrap: str) -> None:
    trace_id = await asyncio.to_thread(_send_with_otel, ingest_server.base_url, *api_key)
    events = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1, settle=1.0)
    trace, obs = _merge(events, trace_id)
    assert trace is not None and trace.name == "agent-run" and trace.input == {"task": "t"}
    assert trace.output == "done" and trace.session_id == "s-otel" and trace.user_id == "u-otel"
    by_name = {o.name: o for o in obs.values()}
    root, chat, lookup = by_name["agent-run"], by_name["chat"], by_name["lookup"]
    assert root.type == "AGENT" and chat.type == "GENERATION" and lookup.type == "RETRIEVER"
    assert chat.model == "claude-x-2025" and chat.model_parameters == {"max_tokens": 100}
    assert chat.usage_details == {"input": 7, "output": 2}
    assert chat.input == [{"role": "user", "parts": [{"type": "text", "content": "q"}]}]
    assert chat.output == [{"role": "assistant"}] and chat.parent_observation_id == root.id
    assert lookup.level == "ERROR" and lookup.status_message == "index offline"
    assert chat.environment == "otel-env"


def _send_with_otel_grpc(target: str, public_key: str, secret_key: str) -> tuple[str, bool]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    provider = TracerProvider(resource=Resource.create({
        "service.name": "grpc-service", "service.version": "2.1.0", "deployment.environment": "grpc-env",
        "host.name": "box-1"}))
    # gRPC metadata keys are lowercase.
    auth = {k.lower(): v for k, v in basic_auth(public_key, secret_key).items()}
    provider.add_span_processor(BatchSpanProcessor(GrpcSpanExporter(
        endpoint=f"http://{target}", insecure=True, headers=auth)))
    tracer = provider.get_tracer("tally-test")
    with tracer.start_as_current_span("grpc-root", attributes={"input.value": "in", "user.id": "u-grpc"}) as root:
        with tracer.start_as_current_span("grpc-chat", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "m-1", "gen_ai.usage.input_tokens": 3,
        }):
            pass
        trace_id = format(root.get_span_context().trace_id, "032x")
    flushed = provider.force_flush()
    provider.shutdown()
    return trace_id, flushed


async def test_opentelemetry_sdk_over_grpc(ingest_server: Server, api_key: tuple[str, str], project_id: str,
                                           kafka_bootstrap: str) -> None:
    trace_id, flushed = await asyncio.to_thread(_send_with_otel_grpc, ingest_server.grpc_target, *api_key)
    assert flushed
    events = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1, settle=1.0)
    trace, obs = _merge(events, trace_id)
    assert trace is not None and trace.name == "grpc-root" and trace.input == "in" and trace.user_id == "u-grpc"
    assert trace.environment == "grpc-env" and trace.version == "2.1.0" and trace.metadata is not None
    resource = trace.metadata["resourceAttributes"]
    assert resource["service.name"] == "grpc-service" and resource["host.name"] == "box-1"
    by_name = {o.name: o for o in obs.values()}
    chat = by_name["grpc-chat"]
    assert chat.type == "GENERATION" and chat.model == "m-1" and chat.usage_details == {"input": 3}
    assert chat.parent_observation_id == by_name["grpc-root"].id and chat.environment == "grpc-env"


def _one_span_request(span_id: bytes = b"\x01" * 8) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x02" * 16, span_id, "raw"
    span.start_time_unix_nano = 1_700_000_000 * 10**9
    return req


async def export_raw(target: str, metadata: tuple[tuple[str, str], ...], req: Any) -> Any:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        return await trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, metadata=metadata, timeout=30)


async def test_grpc_refuses_a_wrong_key_and_reports_refused_spans(ingest_server: Server,
                                                                  api_key: tuple[str, str]) -> None:
    import grpc

    target = ingest_server.grpc_target
    for metadata in ((), (("authorization", "Basic " + "bm9wZTpub3Bl"),), (("authorization", "Bearer x"),)):
        try:
            await export_raw(target, metadata, _one_span_request())
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError(f"accepted without a valid key: {metadata}")
    auth = tuple((k.lower(), v) for k, v in basic_auth(*api_key).items())
    req = _one_span_request()
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(req.resource_spans[0].scope_spans[0].spans[0])
    bad.span_id = b"\x00" * 8
    resp = await export_raw(target, auth, req)
    assert resp.partial_success.rejected_spans == 1 and "spanId" in resp.partial_success.error_message


async def test_grpc_refuses_a_request_over_the_body_limit(ingest_server: Server, api_key: tuple[str, str]) -> None:
    import grpc

    req = _one_span_request()
    attr = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    attr.key, attr.value.string_value = "big", "x" * (ingest_server.settings.max_body_bytes + 1)
    auth = tuple((k.lower(), v) for k, v in basic_auth(*api_key).items())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await export_raw(ingest_server.grpc_target, auth, req)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
