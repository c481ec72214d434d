"""Langfuse users switch without changing code: ingestion, against the whole running stack through its base URL.

- OTLP over gRPC (the OpenTelemetry SDK's gRPC exporter, on ingest's own port) with resource attributes;
- the langfuse 5.x SDK (OTLP/HTTP) linking a generation to a prompt;
- the langfuse 2.x SDK (Langfuse's batch ingestion) in a venv of its own: trace, generation with a prompt, span,
  event and score;
- one ``date`` and one ``server`` header per response of the base URL.

Everything is read back through Tally's Langfuse-compatible read APIs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally_shared.testing.plugin import StackHandle, basic_auth
from tally_shared.testing.wait import eventually

# The 2.x SDK line the compatibility table names.
LANGFUSE_2 = "langfuse>=2.60,<3"


async def _trace(api: httpx.AsyncClient, trace_id: str, ready: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await api.get(f"/api/public/traces/{trace_id}")
        if r.status_code == 404:
            return None
        body: dict[str, Any] = r.raise_for_status().json()
        return body if ready(body) else None

    return await eventually(probe, timeout=60, interval=0.3, what=f"trace {trace_id}")


# ------------------------------------------------------------------------------------------------ OTLP over gRPC


def _export_over_grpc(target: str, auth: dict[str, str], run: str) -> str:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({
        "service.name": f"checkout-{run}", "service.version": "4.2.0", "deployment.environment.name": "staging",
        "k8s.pod.name": "pod-7"}))
    # As collectors and SDKs configure it: the key pair in the authorization header (gRPC metadata, lowercase).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=f"http://{target}", insecure=True, headers={k.lower(): v for k, v in auth.items()})))
    tracer = provider.get_tracer("compat")
    with tracer.start_as_current_span(f"order-{run}", attributes={"input.value": '{"order": 1}'}) as root:
        with tracer.start_as_current_span("llm", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 5,
            "gen_ai.usage.output_tokens": 2,
        }):
            pass
        trace_id = format(root.get_span_context().trace_id, "032x")
    assert provider.force_flush(30_000), "the gRPC exporter did not deliver"
    provider.shutdown()
    return trace_id


async def test_otlp_grpc_with_resource_attributes(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    target = f"127.0.0.1:{tally_stack.stack.config.ports['ingest-grpc']}"
    trace_id = await asyncio.to_thread(_export_over_grpc, target, basic_auth(*tally_stack.auth), run)
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        trace = await _trace(api, trace_id, lambda t: len(t["observations"]) == 2 and t["name"])
    assert trace["name"] == f"order-{run}" and trace["input"] == {"order": 1}
    assert trace["environment"] == "staging" and trace["version"] == "4.2.0"
    resource = trace["metadata"]["resourceAttributes"]
    assert resource["service.name"] == f"checkout-{run}" and resource["k8s.pod.name"] == "pod-7"
    llm = next(o for o in trace["observations"] if o["name"] == "llm")
    assert llm["type"] == "GENERATION" and llm["model"] == "gpt-4o-mini" and llm["environment"] == "staging"
    assert llm["usageDetails"] == {"input": 5, "output": 2}


# ---------------------------------------------------------------------------------- langfuse 5.x: prompt linking


def _send_with_prompt(base_url: str, public_key: str, secret_key: str, run: str) -> tuple[str, str]:
    from langfuse import Langfuse
    from langfuse.api.prompts.types.prompt import Prompt_Text
    from langfuse.model import TextPromptClient
    from opentelemetry.sdk.trace import TracerProvider

    prompt = TextPromptClient(Prompt_Text(name=f"qa-{run}", version=3, prompt="Answer {{q}}", config={},
                                          labels=["production"], tags=[]))
    lf = Langfuse(public_key=public_key, secret_key=secret_key, base_url=base_url, tracer_provider=TracerProvider())
    with lf.start_as_current_observation(as_type="span", name=f"ask-{run}") as root, \
            lf.start_as_current_observation(as_type="generation", name="answer", model="m", prompt=prompt,
                                            input=prompt.compile(q="2+2")) as gen:
        gen.update(output="4")
        ids = (root.trace_id, gen.id)
    lf.flush()
    lf.shutdown()
    return ids


async def test_langfuse_5_generation_keeps_its_prompt(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    trace_id, gen_id = await asyncio.to_thread(_send_with_prompt, tally_stack.base_url, *tally_stack.auth, run)
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        await _trace(api, trace_id, lambda t: len(t["observations"]) == 2)
        gen = (await api.get(f"/api/public/observations/{gen_id}")).raise_for_status().json()
        assert (gen["promptName"], gen["promptVersion"]) == (f"qa-{run}", 3)
        v2 = (await api.get("/api/public/v2/observations",
                            params={"traceId": trace_id, "type": "GENERATION", "fields": "core,prompt"})).json()
        assert [(o["id"], o["promptName"], o["promptVersion"]) for o in v2["data"]] == [(gen_id, f"qa-{run}", 3)]


# ------------------------------------------------------------------------- langfuse 2.x: Langfuse's batch ingestion

SCRIPT_2X = textwrap.dedent('''
    import json, sys
    from langfuse import Langfuse
    from langfuse.api.resources.prompts import Prompt_Text
    from langfuse.model import TextPromptClient

    base_url, public_key, secret_key, run = sys.argv[1:5]
    lf = Langfuse(public_key=public_key, secret_key=secret_key, host=base_url)
    prompt = TextPromptClient(Prompt_Text(name="qa-" + run, version=2, prompt="Answer {{q}}", config={},
                                          labels=[], tags=[]))
    trace = lf.trace(name="v2-" + run, user_id="user-" + run, session_id="session-" + run, tags=["v2"],
                     metadata={"sdk": "2.x"}, input={"q": "2+2"}, release="r-2", version="v-2")
    gen = trace.generation(name="answer", model="gpt-4o", prompt=prompt, input=[{"role": "user", "content": "2+2"}],
                           model_parameters={"max_tokens": 100})
    gen.end(output="4", usage={"input": 7, "output": 1})
    span = trace.span(name="retrieve", input={"k": 3})
    span.end(output=["doc"])
    event = trace.event(name="cache-hit", metadata={"key": "k1"})
    trace.update(output={"a": "4"})
    trace.score(name="correct-" + run, value=1, comment="checked")
    lf.flush()
    lf.shutdown()
    print(json.dumps({"trace": trace.id, "generation": gen.id, "span": span.id, "event": event.id}))
''')


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to make the 2.x SDK's venv (it is a dev dependency)")
    return uv


@pytest.fixture(scope="module")
def langfuse2_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv with the 2.x SDK: one venv cannot hold two langfuse versions."""
    venv = tmp_path_factory.mktemp("langfuse2") / "venv"
    uv = _uv()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "-q", "--python", python, LANGFUSE_2], check=True, env=env, timeout=600)
    return python


async def test_langfuse_2_sdk_ingestion(tally_stack: StackHandle, langfuse2_python: str) -> None:
    run = uuid.uuid4().hex[:8]
    done = await asyncio.to_thread(
        subprocess.run, [langfuse2_python, "-c", SCRIPT_2X, tally_stack.base_url, *tally_stack.auth, run],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout.strip().splitlines()[-1])
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        trace = await _trace(api, ids["trace"], lambda t: len(t["observations"]) == 3 and t["scores"]
                             and t["output"] is not None)
        assert trace["name"] == f"v2-{run}" and trace["userId"] == f"user-{run}"
        assert trace["sessionId"] == f"session-{run}" and trace["tags"] == ["v2"]
        assert trace["metadata"] == {"sdk": "2.x"} and trace["input"] == {"q": "2+2"} and trace["output"] == {"a": "4"}
        assert (trace["release"], trace["version"]) == ("r-2", "v-2")
        by_id = {o["id"]: o for o in trace["observations"]}
        gen, span, event = by_id[ids["generation"]], by_id[ids["span"]], by_id[ids["event"]]
        assert gen["type"] == "GENERATION" and gen["model"] == "gpt-4o" and gen["output"] == "4"
        assert gen["modelParameters"] == {"max_tokens": 100} and gen["usageDetails"] == {"input": 7, "output": 1}
        assert gen["endTime"] is not None
        assert span["type"] == "SPAN" and span["input"] == {"k": 3} and span["output"] == ["doc"]
        assert event["type"] == "EVENT" and event["metadata"] == {"key": "k1"}
        (score,) = trace["scores"]
        assert (score["name"], score["value"], score["comment"]) == (f"correct-{run}", 1, "checked")
        one = (await api.get(f"/api/public/observations/{ids['generation']}")).raise_for_status().json()
        assert (one["promptName"], one["promptVersion"]) == (f"qa-{run}", 2)


# --------------------------------------------------------------------------------------------- response headers


async def test_base_url_sends_one_date_and_one_server_header(tally_stack: StackHandle) -> None:
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        for path in ("/api/public/health", "/api/public/traces", "/api/public/score-configs"):
            r = await api.get(path)
            assert r.status_code == 200, (path, r.text)
            assert len(r.headers.get_list("date")) == 1 and len(r.headers.get_list("server")) == 1, (path, r.headers)
