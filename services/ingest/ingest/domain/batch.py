"""One request's worth of accepted items, grouped into the events ingest publishes.

Everything one request says about one trace becomes ONE ``TraceIngested`` event keyed by the trace id (the trace's
fields merged, each observation's creates and updates merged in request order). Each score becomes one
``RecordScore`` command. Each outgoing message remembers which request items it carries, so the response can say
item by item whether the broker acknowledged it.

Event ids are derived from the content (project, key, event time and payload): a client that retries a request
after a 503 or a timeout produces the same ids, so consumers (which record applied ids) apply it once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from tally_shared import content
from tally_shared.envelope import Payload
from tally_shared.events import RecordScore, TraceIngested
from tally_shared.topics import SCORE_COMMANDS, TRACES, Topic


@dataclass(slots=True)
class Outgoing:
    """One Kafka message and the request items it carries."""

    topic: str
    key: bytes
    value: bytes
    event_type: str
    items: list[int]
    # Why this message could not be built (its items are rejected instead of published).
    error: str | None = None
    # Ingest's events travel without Kafka headers (consumers read the envelope).
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class _Group:
    trace_id: str
    trace: dict[str, Any] | None = None
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: list[int] = field(default_factory=list)
    latest: datetime | None = None
    # The OTLP path's event time, in Unix nanoseconds (0: none): one datetime per event instead of one per span.
    latest_ns: int = 0


@dataclass(slots=True)
class _Score:
    key: str
    payload: dict[str, Any]
    item: int
    at: datetime | None


class Batch:
    """Accepted items of one request, by trace."""

    __slots__ = ("_groups", "_scores", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._groups: dict[str, _Group] = {}
        self._scores: list[_Score] = []

    def _group(self, trace_id: str, item: int) -> _Group:
        """The trace's group, with ``item`` among its items."""
        g = self._groups.get(trace_id)
        if g is None:
            g = self._groups[trace_id] = _Group(trace_id)
        items = g.items
        if not items or items[-1] != item:
            items.append(item)
        return g

    @staticmethod
    def _seen_at(g: _Group, at: datetime | None) -> None:
        # The group's event time is the latest of its items'.
        if at is not None and (g.latest is None or at > g.latest):
            g.latest = at

    @staticmethod
    def _merge_trace(g: _Group, fields: dict[str, Any]) -> None:
        if g.trace is None:
            g.trace = fields
        else:
            g.trace.update(fields)

    @staticmethod
    def _merge_observation(g: _Group, fields: dict[str, Any]) -> None:
        existing = g.observations.get(fields["id"])
        if existing is None:
            g.observations[fields["id"]] = fields
        else:
            existing.update(fields)

    def add_trace(self, item: int, fields: dict[str, Any], at: datetime | None = None) -> None:
        """``fields`` includes ``id``; later items' fields override earlier ones."""
        g = self._group(fields["id"], item)
        self._seen_at(g, at)
        self._merge_trace(g, fields)

    def add_observation(self, item: int, fields: dict[str, Any], at: datetime | None = None) -> None:
        """``fields`` includes ``id`` and ``trace_id``."""
        g = self._group(fields["trace_id"], item)
        self._seen_at(g, at)
        self._merge_observation(g, fields)

    def add_span(self, item: int, trace_id: str, obs: dict[str, Any], trace: dict[str, Any] | None, ns: int) -> None:
        """One OTLP span: its observation (``id``, ``trace_id``), its trace's fields or None (``id`` ==
        ``trace_id``), and its time in Unix nanoseconds (0: none); ``add_trace`` and ``add_observation`` in one."""
        g = self._group(trace_id, item)
        if ns > g.latest_ns:
            g.latest_ns = ns
        if trace is not None:
            self._merge_trace(g, trace)
        self._merge_observation(g, obs)

    def add_score(self, item: int, payload: dict[str, Any], key: str, at: datetime | None = None) -> None:
        self._scores.append(_Score(key, payload, item, at))

    def scores(self) -> list[tuple[int, dict[str, Any]]]:
        """(item, RecordScore payload) of every score, payloads mutable until ``outgoing``."""
        return [(s.item, s.payload) for s in self._scores]

    def drop_scores(self, items: set[int]) -> None:
        self._scores = [s for s in self._scores if s.item not in items]

    @property
    def empty(self) -> bool:
        return not self._groups and not self._scores

    def __len__(self) -> int:
        return len(self._groups) + len(self._scores)

    def outgoing(self, project: str, now: datetime | None = None) -> list[Outgoing]:
        now = now or datetime.now(UTC)
        out: list[Outgoing] = []
        for g in self._groups.values():
            payload: dict[str, Any] = {"trace_id": g.trace_id, "source": self.source}
            if g.trace is not None:
                payload["trace"] = g.trace
            payload["observations"] = list(g.observations.values())
            at = g.latest
            if g.latest_ns:
                # The datetime of the latest span (the conversion is monotonic: the latest of the spans' datetimes).
                from_ns = datetime.fromtimestamp(g.latest_ns / 1e9, UTC)
                if at is None or from_ns > at:
                    at = from_ns
            out.append(_message(TraceIngested, project, g.trace_id, at or now, payload, g.items))
        for s in self._scores:
            out.append(_message(RecordScore, project, s.key, s.at or now, s.payload, [s.item]))
        return out


# Where each kind of message ingest writes goes; the envelope's type and version are the payload class's.
TOPICS: dict[type[Payload], Topic] = {TraceIngested: TRACES, RecordScore: SCORE_COMMANDS}
_ENVELOPE_HEAD = b'{"id":"'
_VARIANT = {c: "89ab"[int(c, 16) % 4] for c in "0123456789abcdef"}


def _message(event: type[Payload], project: str, key: str, at: datetime, payload: dict[str, Any],
             items: list[int]) -> Outgoing:
    topic = TOPICS[event].name
    event_type = event.event_type
    # Content PostgreSQL cannot hold (NUL, lone surrogates: OTLP protobuf strings and anything not cleaned at
    # parse time) gets the documented transformation here, the one place every format's events pass through.
    key = content.clean_text(key)
    try:
        # Deep JSON is kept only as deep as every reader can write it back inside its own responses.
        body = content.dumps(payload, headroom=content.READER_HEADROOM)
    except (orjson.JSONEncodeError, ValueError) as exc:
        return Outgoing(topic, key.encode(), b"", event_type, items, error=f"cannot be stored: {exc}")
    occurred = at.isoformat().encode()
    p = orjson.dumps(project)
    k = orjson.dumps(key)
    type_bytes = event_type.encode()
    # The id hashes "type\0project\0key\0occurred\0payload"; the (large) payload is fed without a copy. SHA-256
    # (truncated to the UUID's 122 bits): OpenSSL's, with the CPU's SHA extensions, hashes the ~18 KB of a trace
    # event in half the time of blake2b (~4.5 -> ~2.3 µs a span on bench/pipeline.py's requests).
    digest = hashlib.sha256(b"\0".join((type_bytes, p, k, occurred, b"")))
    digest.update(body)
    h = digest.hexdigest()
    # A version-4-shaped UUID from the digest (formatted by hand: uuid.UUID costs more than the hash).
    event_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}".encode()
    # The envelope of tally_shared.envelope.Envelope, assembled around the already-serialised payload so the
    # (large) payload is encoded once.
    value = b"".join((
        _ENVELOPE_HEAD, event_id, b'","type":"', type_bytes, b'","version":', str(event.version).encode(),
        b',"occurred_at":"', occurred, b'","project":', p, b',"key":', k, b',"payload":', body, b"}",
    ))
    return Outgoing(topic, key.encode(), value, event_type, items)
