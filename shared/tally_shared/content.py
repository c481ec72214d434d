"""User content as PostgreSQL and every reader can hold it: the one transformation applied at intake.

Valid JSON can say things PostgreSQL's ``text``/``jsonb`` and strict JSON encoders cannot store or write. Rather
than acknowledge such content and fail later in a consumer, every intake path (Langfuse ingestion, the native
batch, OTLP JSON and protobuf, scoring's HTTP API) applies these rules before anything is published:

- NUL (U+0000) in any string or object key becomes ``NUL_REPLACEMENT`` (U+2400 SYMBOL FOR NULL, "␀"): kept
  visible where it was, distinct from a replacement for broken text;
- a lone UTF-16 surrogate (an escaped ``"\\ud800"`` with no partner) becomes ``SURROGATE_REPLACEMENT``
  (U+FFFD); a valid escaped pair is one non-BMP character, as JSON says;
- numbers are IEEE-754 doubles, as in JavaScript and Langfuse: integers from -2**63 to 2**64-1 are kept exactly,
  larger ones become the nearest double (``2**70`` reads back as ``1.1805916207174113e+21``);
- a number no double holds (``1e400``, ``NaN``, ``Infinity``) is refused (``Unrepresentable``, naming where it is).

Two keys that differ only by a NUL and a "␀" become one key (the later wins).
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson

NUL_REPLACEMENT = "\u2400"
SURROGATE_REPLACEMENT = "\ufffd"
MIN_EXACT_INT = -(2**63)
MAX_EXACT_INT = 2**64 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")


# orjson (every service's encoder) writes at most this many nested arrays/objects.
ENCODER_DEPTH = 254
# Levels an event payload leaves free for readers' own wrapping (see ``dumps``).
READER_HEADROOM = 32
MAX_PAYLOAD_DEPTH = ENCODER_DEPTH - READER_HEADROOM


class TooDeep(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels (counted from the event payload)")
        self.limit = limit


class Unrepresentable(ValueError):
    """A value no double or PostgreSQL column can hold; ``path`` says where (``metadata.v``, ``[3]``)."""

    def __init__(self, path: str, rule: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.rule = rule
        self.message = message


def clean_text(s: str) -> str:
    if "\x00" in s:
        s = s.replace("\x00", NUL_REPLACEMENT)
    if _SURROGATE.search(s) is not None:
        s = _SURROGATE.sub(SURROGATE_REPLACEMENT, s)
    return s


def _number(v: int | float, path: str) -> int | float:
    if isinstance(v, int):
        if MIN_EXACT_INT <= v <= MAX_EXACT_INT:
            return v
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        v = f
    if not math.isfinite(v):
        raise Unrepresentable(path or "value", "finite_number",
                              "numbers must be finite and within ±1.7976931348623157e308 (no NaN or Infinity)")
    return v


def clean(value: Any, path: str = "") -> Any:
    """``value`` with the rules above applied (the same object when nothing changes). Raises ``Unrepresentable``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _number(value, path)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            ck = clean_text(k) if isinstance(k, str) else k
            cv = clean(v, f"{path}.{ck}" if path else str(ck))
            changed = changed or ck is not k or cv is not v
            out[ck] = cv
        return out if changed else value
    if isinstance(value, list | tuple):
        items = [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


_ESCAPES_SCANNED = 16


def needs_clean(encoded: bytes) -> bool:
    """Whether JSON holds a NUL (the escape ``\\u0000``, as orjson writes it). Each backslash is found by
    ``memchr`` and the text after it compared, which in a message with few escapes is far cheaper than a substring
    search of the whole (an 18 KB trace event: ~9 µs -> under 1); after ``_ESCAPES_SCANNED`` backslashes, one
    substring search of the rest."""
    find = encoded.find
    i = find(b"\\")
    n = 0
    while i >= 0:
        if encoded.startswith(b"u0000", i + 1):
            return True
        n += 1
        if n == _ESCAPES_SCANNED:
            return find(b"\\u0000", i + 1) >= 0
        i = find(b"\\", i + 1)
    return False


def dumps(value: Any, *, headroom: int = 0) -> bytes:
    """orjson's encoding of ``clean(value)``, paying for ``clean`` only when the content needs it.

    ``headroom``: levels of nesting left free for readers, who wrap stored values in structures of their own (a
    list response, its items, a trace's observations). orjson writes at most ``ENCODER_DEPTH`` levels, so a value
    nested deeper than ``ENCODER_DEPTH - headroom`` raises ``TooDeep``. Checked by encoding the value inside
    ``headroom`` lists and slicing them off: no second pass.
    """
    inner: list[Any] | None = None
    wrapped = value
    if headroom:
        wrapped, inner = _chain(headroom)
        inner[0] = value
    try:
        try:
            out = orjson.dumps(wrapped)
        except orjson.JSONEncodeError as exc:
            if "ecursion" in str(exc):
                raise
            # Lone surrogates or integers beyond 64 bits.
            out = orjson.dumps(clean(wrapped))
        else:
            if needs_clean(out):
                out = orjson.dumps(clean(wrapped))
    except orjson.JSONEncodeError as exc:
        if "ecursion" in str(exc):
            raise TooDeep(ENCODER_DEPTH - headroom) from None
        raise
    finally:
        if inner is not None:
            inner[0] = None
    return out[headroom:len(out) - headroom] if headroom else out


_chains = threading.local()


def _chain(levels: int) -> tuple[list[Any], list[Any]]:
    """``levels`` nested one-element lists, built once per thread: (outermost, innermost)."""
    cache: dict[int, tuple[list[Any], list[Any]]] | None = getattr(_chains, "cache", None)
    if cache is None:
        cache = _chains.cache = {}
    chain = cache.get(levels)
    if chain is None:
        inner: list[Any] = [None]
        outer = inner
        for _ in range(levels - 1):
            outer = [outer]
        chain = cache[levels] = (outer, inner)
    return chain


def _int(s: str) -> int | float:
    n = int(s)
    return n if MIN_EXACT_INT <= n <= MAX_EXACT_INT else float(s)


def loads(data: bytes | str) -> tuple[Any, bool]:
    """Parse an untrusted JSON body: ``(value, must_clean)``. ``must_clean`` says the value may hold what only
    ``clean`` makes storable or refuses (lone surrogates, numbers beyond a double), so the caller applies ``clean``
    (per item, to refuse only the items concerned). A NUL alone does not set it: ``dumps`` replaces NULs when it
    writes (scanning the body here would cost more than parsing it).

    orjson parses nearly every body; it refuses lone surrogates and numbers beyond a double, which the standard
    library then parses (into strings with surrogates and infinite floats, for ``clean``). Raises
    ``orjson.JSONDecodeError`` for what is not JSON at all.
    """
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(data, parse_int=_int), True
        except (ValueError, RecursionError):
            raise exc from None


def loads_stored(data: bytes | str) -> Any:
    """JSON read back from PostgreSQL (``jsonb`` prints 1e308 as 309 digits): numbers as doubles, never a Python
    integer too large for the response encoder."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data, parse_int=_int)


def dumps_read(value: Any, *, default: Callable[[Any], Any] | None = None, option: int = 0) -> bytes:
    """A read response: orjson's encoding, or, for what orjson cannot write (nesting deeper than it writes or
    integers beyond 64 bits, as data stored before intake bounded them may hold), the standard library's. A read
    never fails for one stored value. ``option``: orjson's; the fallback writes datetimes in UTC with ``Z``.
    """
    try:
        return orjson.dumps(value, default=default, option=option)
    except orjson.JSONEncodeError:
        pass

    def fallback(o: Any) -> Any:
        if isinstance(o, datetime):
            s = (o.astimezone(UTC) if o.tzinfo is not None else o).isoformat()
            return s.removesuffix("+00:00") + "Z" if o.tzinfo is not None else s
        if isinstance(o, date | uuid.UUID):
            return str(o)
        if default is not None:
            return default(o)
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return json.dumps(_finite_or_none(value), default=fallback, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


def _finite_or_none(value: Any) -> Any:
    """NaN and infinities as null, as orjson writes them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value
