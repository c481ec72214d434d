"""The lowest precedence: the trace identity attributes several conventions share (``user.id`` and ``session.id``:
Langfuse's and OpenInference's; OpenTelemetry's ``enduser.id``; GenAI's ``gen_ai.conversation.id``), and what
other instrumentations send (Traceloop/OpenLLMetry's entity input and output, MLflow's span inputs and outputs,
plain ``input``/``output``/``model``)."""

from __future__ import annotations

from ingest.domain import fields as f
from ingest.domain.conventions.draft import MISSING, SHARED, Draft, first, maybe_json

_INPUT = ("traceloop.entity.input", "mlflow.spanInputs", "input")
_OUTPUT = ("traceloop.entity.output", "mlflow.spanOutputs", "output")
# Highest precedence first for each field.
_IDENTITY = (("user.id", "user_id"), ("enduser.id", "user_id"), ("session.id", "session_id"),
             ("gen_ai.conversation.id", "session_id"))


def map_shared(d: Draft) -> None:
    has = d.prefixes
    if SHARED not in has:
        return
    a = d.attrs
    if "traceloop.entity." in has or "mlflow.span" in has or "input" in a or "output" in a:
        found, value = first(a, _INPUT)
        if found and d.input is MISSING:
            d.input = maybe_json(value)
        found, value = first(a, _OUTPUT)
        if found and d.output is MISSING:
            d.output = maybe_json(value)
    if "model" in a:
        model = a.pop("model")
        if d.model is None and isinstance(model, str):
            d.model = model
    for key, target in _IDENTITY:
        if key in a:
            v = d.conv(a, key, f.opt_str)
            if v is not None:
                d.identity.setdefault(target, v)
