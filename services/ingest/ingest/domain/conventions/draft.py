"""What the attribute conventions fill in for one span, and the helpers they share.

A mapper takes the attributes of its convention out of ``Draft.attrs`` (or ``Draft.langfuse``) and sets a field
only while it is unset (``MISSING``, or None for the plain fields): mappers run highest precedence first, so the
first one to set a field wins, and a later one's value for it is dropped with the attribute that carried it.
Dict-valued fields (model parameters, usage) are merged key by key the same way. What no mapper takes stays in the
observation's ``metadata.attributes``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Final, cast

import orjson

from ingest.domain import fields as f
from ingest.domain.fields import Invalid
from ingest.domain.otlp import SpanView

_INF = float("inf")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


# Input and output may be set to None (JSON null said by the client): unset is this, not None.
MISSING: Final = _Missing()


# The key prefixes mappers ask about.
PREFIXES = (
    "langfuse.", "langfuse.observation.metadata", "langfuse.trace.metadata", "langfuse.internal.", "langfuse.prompt.",
    "langfuse.observation.prompt.", "llm.", "llm.input_messages.", "llm.output_messages.", "llm.token_count.",
    "gen_ai.", "gen_ai.input.", "gen_ai.output.", "gen_ai.prompt", "gen_ai.prompt.", "gen_ai.completion",
    "gen_ai.completion.", "gen_ai.tool.call.", "gen_ai.re", "gen_ai.request.", "gen_ai.usage.", "traceloop.entity.",
    "mlflow.span",
)
# The exact keys ``conventions.shared`` reads (its prefixes are in ``PREFIXES``): a span with none of them and no
# key under those prefixes skips it (``SHARED`` in ``prefixes_of``'s answer says it has some).
SHARED_KEYS = frozenset(("input", "output", "model", "user.id", "enduser.id", "session.id", "gen_ai.conversation.id"))
SHARED = "=shared"
_SHARED_PREFIXES = ("traceloop.entity.", "mlflow.span")
_SHAPES: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {}
_EMPTY = cast(dict[str, Any], MappingProxyType({}))
_MAX_SHAPES = 1024


def prefixes_of(attrs: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Which of ``PREFIXES`` some key of ``attrs`` starts with, each with those keys (in the span's order), and
    ``SHARED`` if ``conventions.shared`` has something to read. The spans of one instrumentation share their keys,
    so the answer is kept per key set (a bounded number of them: keys are untrusted)."""
    shape = tuple(attrs)
    found = _SHAPES.get(shape)
    if found is None:
        found = {}
        for p in PREFIXES:
            keys = tuple(k for k in shape if k.startswith(p))
            if keys:
                found[p] = keys
        if any(k in SHARED_KEYS or k.startswith(_SHARED_PREFIXES) for k in shape):
            found[SHARED] = ()
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[shape] = found
    return found


class Draft:
    """One span being mapped. ``attrs``: its attributes (in the span's order; the span's own dict, consumed), from
    which each mapper takes those of its convention; ``prefixes``: which of ``PREFIXES`` some attribute key starts
    with (and those keys), so that a mapper skips forms the span does not use without looking at every key;
    ``lf``/``genai``/``llm``: whether any starts with ``langfuse.``/``gen_ai.``/``llm.``.

    The fields a span usually leaves unset are class-level defaults, so a draft costs a few assignments."""

    type: str | None = None
    # The type when no convention names one (a span with a model is a generation).
    type_hint: str | None = None
    input: Any = MISSING
    output: Any = MISSING
    model: str | None = None
    params: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    # The cost came with the token counts (``gen_ai.usage.cost``): written before them.
    cost_first: bool = False
    completion_start_time: str | None = None
    level: str | None = None
    status_message: str | None = None
    environment: str | None = None
    release: str | None = None
    version: str | None = None
    trace_name: str | None = None
    trace_input: Any = MISSING
    trace_output: Any = MISSING
    public: bool | None = None
    tags: Any = None
    # Only Langfuse's attributes fill these: read-only and empty until its mapper gives the draft its own.
    internal: dict[str, Any] = _EMPTY
    trace_metadata: dict[str, Any] = _EMPTY
    # prompt_name, prompt_version
    prompt: dict[str, Any] = _EMPTY
    # user_id/session_id as ``langfuse.user.id``/``langfuse.session.id`` say (before ``identity``)
    trace_identity: dict[str, str] = _EMPTY
    # dataset_run_name, dataset_item_id, dataset_id
    experiment: dict[str, str] = _EMPTY

    def __init__(self, span: SpanView, attrs: dict[str, Any], prefixes: dict[str, tuple[str, ...]]) -> None:
        self.span = span
        self.attrs = attrs
        self.prefixes = prefixes
        self.lf = "langfuse." in prefixes
        self.genai = "gen_ai." in prefixes
        self.llm = "llm." in prefixes
        # Attributes a mapper took but could not use (a value breaking the field's rule), kept as attributes.
        self.left: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        # user_id/session_id as the attributes conventions share say (``user.id``, ``session.id`` ...)
        self.identity: dict[str, str] = {}

    def conv(self, src: dict[str, Any], key: str, conv: f.Converter, decode: bool = False) -> Any:
        """Take ``key`` (the caller knows it is there) and convert it with a field rule; a value that breaks the
        rule is kept as an attribute instead of failing the span (telemetry from arbitrary instrumentations is
        noisy)."""
        raw = src.pop(key)
        try:
            return conv(key, json_or_str(raw) if decode else raw)
        except Invalid:
            self.left[key] = raw
            return None

    def merge_params(self, values: dict[str, Any]) -> None:
        if self.params is None:
            self.params = dict(values)
        else:
            for k, v in values.items():
                self.params.setdefault(k, v)


def maybe_json(v: Any) -> Any:
    """Input/output attributes: JSON text is decoded, any other string stays a string."""
    if isinstance(v, str) and v[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def json_or_str(v: Any) -> Any:
    """Metadata values: the 5.x SDK JSON-encodes every value (strings too); older ones sent strings as is."""
    if isinstance(v, str):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def first(a: dict[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    """Take every one of ``keys``: (whether any was there, the value of the first one that was)."""
    found, value = False, None
    for k in keys:
        if k in a:
            v = a.pop(k)
            if not found:
                found, value = True, v
    return found, value


def with_prefix(d: Draft, prefix: str) -> list[str]:
    """The keys under ``prefix`` (one of ``PREFIXES``) still in ``d.attrs``, in the span's order."""
    keys = d.prefixes.get(prefix)
    return list(filter(d.attrs.__contains__, keys)) if keys else []


def prefixed(a: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """Take every attribute under ``prefix``: (the rest of its key, its value), in the span's order."""
    keys = [k for k in a if k.startswith(prefix)]
    return [(k[len(prefix):], a.pop(k)) for k in keys]


def unflatten(items: list[tuple[str, Any]]) -> Any:
    """``[("0.role", "user"), ("0.content", "hi")]`` -> ``[{"role": "user", "content": "hi"}]``."""
    root: dict[str, Any] = {}
    for path, value in items:
        node = root
        # Bounded depth: attribute keys are untrusted and could nest thousands of levels.
        parts = path.split(".", 15)
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    conv = {k: _lists(v) for k, v in node.items()}
    if conv and all(k.isdigit() for k in conv):
        return [conv[k] for k in sorted(conv, key=int)]
    return conv


def token_counts(d: Draft, keys: list[str], names: dict[str, str]) -> None:
    """Token counts (and ``gen_ai.usage.cost``, the total cost) taken from ``keys``, in the span's order (a later
    key naming the same count wins within one convention): numbers and numeric text are kept, anything else
    stays an attribute. Merged into the usage an earlier convention set, key by key."""
    usage: dict[str, Any] = {}
    for key in keys:
        v = d.attrs.pop(key)
        # The usual case first: a whole number (never a bool: its type is bool) naming a count.
        if type(v) is int and key != "gen_ai.usage.cost":
            usage[names.get(key) or key.rsplit(".", 1)[-1]] = v
            continue
        if isinstance(v, str):
            try:
                v = float(v) if "." in v else int(v)
            except ValueError:
                d.left[key] = v
                continue
        # Finite numbers only (NaN fails both comparisons).
        if isinstance(v, (int, float)) and not isinstance(v, bool) and -_INF < v < _INF:
            if key == "gen_ai.usage.cost":
                d.cost_first = True
                if d.cost is None:
                    d.cost = {"total": v}
            else:
                usage[names.get(key) or key.rsplit(".", 1)[-1]] = v
        else:
            d.left[key] = v
    if not usage:
        return
    if d.usage is None:
        d.usage = usage
    else:
        for k, v in usage.items():
            d.usage.setdefault(k, v)
