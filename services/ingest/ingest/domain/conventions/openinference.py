"""OpenInference (Arize Phoenix and its instrumentations): ``openinference.span.kind``, ``input.value``,
``output.value`` (or the flattened ``llm.input_messages.*``/``llm.output_messages.*``), ``llm.model_name``,
``llm.invocation_parameters``, ``llm.token_count.*``, ``metadata``, ``tag.tags``."""

from __future__ import annotations

from ingest.domain import fields as f
from ingest.domain.conventions.draft import (
    MISSING,
    Draft,
    json_or_str,
    maybe_json,
    prefixed,
    token_counts,
    unflatten,
    with_prefix,
)

KINDS = {
    "LLM": "GENERATION", "EMBEDDING": "EMBEDDING", "CHAIN": "CHAIN", "RETRIEVER": "RETRIEVER", "AGENT": "AGENT",
    "TOOL": "TOOL", "GUARDRAIL": "GUARDRAIL", "EVALUATOR": "EVALUATOR", "RERANKER": "RETRIEVER",
}
_USAGE = {"llm.token_count.prompt": "input", "llm.token_count.completion": "output", "llm.token_count.total": "total"}


def map_openinference(d: Draft) -> None:
    a = d.attrs
    if not a:
        return
    kind = a.pop("openinference.span.kind", None)
    if d.type is None and isinstance(kind, str):
        d.type = KINDS.get(kind.upper())
    a.pop("input.mime_type", None)
    a.pop("output.mime_type", None)
    # One lookup a key: taken with MISSING (never an attribute's value) as the default.
    value = a.pop("input.value", MISSING)
    if value is not MISSING:
        if d.input is MISSING:
            d.input = maybe_json(value)
    elif "llm.input_messages." in d.prefixes and (msgs := prefixed(a, "llm.input_messages.")) and d.input is MISSING:
        d.input = unflatten(msgs)
    value = a.pop("output.value", MISSING)
    if value is not MISSING:
        if d.output is MISSING:
            d.output = maybe_json(value)
    elif "llm.output_messages." in d.prefixes and (msgs := prefixed(a, "llm.output_messages.")) and d.output is MISSING:
        d.output = unflatten(msgs)
    if d.llm:
        model = a.pop("llm.model_name", MISSING)
        if model is not MISSING:
            d.type_hint = "GENERATION"
            if d.model is None and isinstance(model, str):
                d.model = model
        if "llm.invocation_parameters" in a:
            params = d.conv(a, "llm.invocation_parameters", f.opt_object, decode=True)
            if params:
                d.merge_params(params)
        if "llm.token_count." in d.prefixes:
            token_counts(d, with_prefix(d, "llm.token_count."), _USAGE)
    if isinstance(a.get("metadata"), str):
        decoded = json_or_str(a.pop("metadata"))
        if isinstance(decoded, dict):
            d.metadata.update(decoded)
        else:
            d.left["metadata"] = decoded
    tags = a.pop("tag.tags", MISSING)
    if tags is not MISSING and d.tags is None:
        d.tags = tags
