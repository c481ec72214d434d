"""OpenTelemetry GenAI semantic conventions (``gen_ai.*``): the operation, models, ``gen_ai.request.*``
parameters, ``gen_ai.usage.*``, input/output messages (attributes, the older flattened ``gen_ai.prompt.N.*``/
``gen_ai.completion.N.*``, and the ``gen_ai.content.prompt``/``gen_ai.content.completion`` span events), tool
call arguments and results. (``gen_ai.conversation.id`` is ``shared``'s.)"""

from __future__ import annotations

from ingest.domain.conventions.draft import (
    MISSING,
    Draft,
    first,
    maybe_json,
    prefixed,
    token_counts,
    unflatten,
    with_prefix,
)

OPERATIONS = {
    "chat": "GENERATION", "text_completion": "GENERATION", "generate_content": "GENERATION",
    "completion": "GENERATION", "embeddings": "EMBEDDING", "execute_tool": "TOOL", "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}
_PARAMS = tuple((f"gen_ai.request.{p}", p) for p in (
    "temperature", "max_tokens", "top_p", "top_k", "frequency_penalty", "presence_penalty", "stop_sequences", "seed",
    "choice.count"))
_USAGE = {"gen_ai.usage.input_tokens": "input", "gen_ai.usage.prompt_tokens": "input",
          "gen_ai.usage.output_tokens": "output", "gen_ai.usage.completion_tokens": "output",
          "gen_ai.usage.total_tokens": "total"}
_INPUT = ("gen_ai.input.messages", "gen_ai.prompt", "gen_ai.tool.call.arguments")
_OUTPUT = ("gen_ai.output.messages", "gen_ai.completion", "gen_ai.tool.call.result")
_MODEL = ("gen_ai.response.model", "gen_ai.request.model")


def map_genai(d: Draft) -> None:
    a = d.attrs
    events = False
    for name, attrs in d.span.events:
        # The span-event forms: the same as the attributes, which win.
        if name == "gen_ai.content.prompt" and "gen_ai.prompt" in attrs:
            a.setdefault("gen_ai.prompt", attrs["gen_ai.prompt"])
            events = True
        elif name == "gen_ai.content.completion" and "gen_ai.completion" in attrs:
            a.setdefault("gen_ai.completion", attrs["gen_ai.completion"])
            events = True
    if not d.genai and not events:
        return
    has = d.prefixes
    op = a.pop("gen_ai.operation.name", None)
    if d.type is None and isinstance(op, str):
        d.type = OPERATIONS.get(op)
    if events or "gen_ai.input." in has or "gen_ai.prompt" in has or "gen_ai.tool.call." in has:
        found, value = first(a, _INPUT)
        if found:
            if d.input is MISSING:
                d.input = maybe_json(value)
        elif "gen_ai.prompt." in has and (msgs := prefixed(a, "gen_ai.prompt.")) and d.input is MISSING:
            d.input = unflatten(msgs)
    if events or "gen_ai.output." in has or "gen_ai.completion" in has or "gen_ai.tool.call." in has:
        found, value = first(a, _OUTPUT)
        if found:
            if d.output is MISSING:
                d.output = maybe_json(value)
        elif "gen_ai.completion." in has and (msgs := prefixed(a, "gen_ai.completion.")) \
                and d.output is MISSING:
            d.output = unflatten(msgs)
    if not d.genai:
        return
    found, value = first(a, _MODEL) if "gen_ai.re" in has else (False, None)
    if found:
        d.type_hint = "GENERATION"
        if d.model is None and isinstance(value, str):
            d.model = value
    if "gen_ai.request." in has:
        params = {}
        for key, name in _PARAMS:
            if key in a:
                params[name] = a.pop(key)
        if params:
            d.merge_params(params)
    if "gen_ai.usage." in has:
        token_counts(d, with_prefix(d, "gen_ai.usage."), _USAGE)
