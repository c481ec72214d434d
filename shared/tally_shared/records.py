"""Lean decoding of envelopes: raw bytes straight to plain dicts, validated as strictly as the pydantic models.

``envelope.decode`` builds an ``Envelope`` and a ``Payload`` model per event; a consumer that turns them into rows
then pays again for ``model_dump``. Here each payload class is mirrored once by a ``TypedDict`` with the same
fields, bounds and ``extra="forbid"`` (derived from the model, so the two cannot drift), and pydantic validates the
whole envelope against it in one call: the result is the dict itself. A payload holds only the fields its producer
set (what ``model_dump(exclude_unset=True)`` gave); ``defaults`` fills the rest for readers that want them.

The poison guarantees are ``decode``'s: not JSON, a bad envelope, an unknown type or an invalid payload raise
``PoisonMessage`` with the same codes, and NUL/surrogate content is cleaned by ``tally_shared.content`` first.
"""

from __future__ import annotations

import types
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, NotRequired, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from tally_shared import content
from tally_shared import events as _events  # noqa: F401  (registers every payload type)
from tally_shared.envelope import Payload, PoisonMessage, UnknownEventType, registry

_FORBID = ConfigDict(extra="forbid")


@dataclass(slots=True)
class Event:
    """One decoded event: the envelope's fields, the payload class (its type), the payload as a dict of the
    fields its producer set, and the partition it was read from."""

    id: uuid.UUID
    cls: type[Payload]
    project: str
    key: str
    occurred_at: datetime
    payload: dict[str, Any]
    partition: int = 0

    @property
    def type(self) -> str:
        return self.cls.event_type


def _typed_dict_of(name: str, fields: dict[str, Any]) -> Any:
    make: Any = TypedDict  # built at run time: the fields are the model's
    td = make(name, fields)
    td.__pydantic_config__ = _FORBID
    return td


def _mirror(tp: Any) -> Any:
    """``tp`` with every pydantic model in it replaced by its ``TypedDict`` mirror."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return typed_dict(tp)
    origin = get_origin(tp)
    if origin is None:
        return tp
    args = get_args(tp)
    if origin is Annotated:
        return Annotated[(_mirror(args[0]), *args[1:])]
    if origin in (Union, types.UnionType):
        return Union[tuple(_mirror(a) for a in args)]  # noqa: UP007
    if origin is Literal:
        return tp
    return origin[tuple(_mirror(a) for a in args)]


@cache
def typed_dict(model: type[BaseModel]) -> Any:
    """A ``TypedDict`` with ``model``'s fields: required ones required, the others ``NotRequired`` (absent when
    not sent), each with the model field's constraints."""
    fields: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        tp = _mirror(f.annotation)
        if f.metadata:
            tp = Annotated[(tp, *f.metadata)]
        fields[name] = tp if f.is_required() else NotRequired[tp]
    return _typed_dict_of(f"{model.__name__}Dict", fields)


@cache
def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The value of every optional field of ``model`` when it is not sent (shallow: nested models keep theirs)."""
    return {name: f.get_default(call_default_factory=True) for name, f in model.model_fields.items()
            if not f.is_required()}


def _envelope_adapter(payload: Any) -> TypeAdapter[Any]:
    from tally_shared.envelope import Envelope

    fields: dict[str, Any] = {}
    for name, f in Envelope.model_fields.items():
        tp = payload if name == "payload" else f.annotation
        if f.metadata:
            tp = Annotated[(tp, *f.metadata)]
        fields[name] = NotRequired[tp] if not f.is_required() else tp
    return TypeAdapter(_typed_dict_of("EnvelopeDict", fields))


_GENERIC = _envelope_adapter(dict[str, Any])


@cache
def _adapter(event_type: str, version: int) -> tuple[type[Payload], TypeAdapter[Any]]:
    cls = registry.get(event_type, version)
    return cls, _envelope_adapter(typed_dict(cls))


def _short(errors: list[Any], drop: int = 0) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'][drop:]) or '<root>'}: {e['msg']}" for e in errors[:5])


def decode_event(raw: bytes, partition: int = 0) -> Event:
    """Parse and validate one message to an ``Event``; anything wrong raises PoisonMessage with a reason."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not JSON: {exc}", "decode") from exc
    if content.needs_clean(raw):
        try:
            data = content.clean(data)
        except (ValueError, RecursionError) as exc:
            raise PoisonMessage(f"content cannot be stored: {exc}", "validation") from exc
    etype = data.get("type") if isinstance(data, dict) else None
    version = data.get("version", 1) if isinstance(data, dict) else None
    adapter: TypeAdapter[Any] = _GENERIC
    cls: type[Payload] | None = None
    if isinstance(etype, str) and type(version) is int:
        try:
            cls, adapter = _adapter(etype, version)
        except UnknownEventType:
            pass
    try:
        env = adapter.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors()
        # a payload that is not an object at all is the envelope's fault, as with the model
        outer = [e for e in errors if e["loc"][:1] != ("payload",) or len(e["loc"]) == 1]
        if outer:
            raise PoisonMessage(f"invalid envelope: {_short(outer)}", "envelope") from exc
        raise PoisonMessage(f"invalid {etype} v{version} payload: {_short(errors, 1)}") from exc
    if cls is None:
        raise PoisonMessage(f"unknown event type {etype!r} version {version}", "unknown_type")
    eid = env.get("id")
    when = env.get("occurred_at")
    if eid is None or when is None:
        # the model's defaults; producers always send both
        from tally_shared.envelope import Envelope

        filled = Envelope.model_validate(data)
        eid, when = filled.id, filled.occurred_at
    return Event(eid, cls, env["project"], env["key"], when, env["payload"], partition)


def to_event(env: Any, payload: Payload, partition: int = 0) -> Event:
    """An ``Event`` from decoded models (tests and tools that hold an ``Envelope``)."""
    return Event(env.id, type(payload), env.project, env.key, env.occurred_at,
                 payload.model_dump(exclude_unset=True), partition)
