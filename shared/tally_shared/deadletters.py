"""The record every consumer publishes to ``tally.dead-letter``, and how it is read back.

A dead letter says which consumer refused which message (topic, partition, offset), why (``reason_code``: a small
bounded set, fit for a metric label; ``reason``: the human text), and carries the original bytes so the message can
be replayed once its cause is fixed. What the original says about itself (project, event id and type, key) is taken
from its raw JSON even when it fails validation, so a dead letter can be shown to the project it belongs to.

Reason codes: ``decode`` (not JSON), ``envelope`` (JSON but not an envelope), ``unknown_type``, ``validation``
(payload does not match its type), ``rule:<name>`` (a consumer's domain rule refused it), ``database:<sqlstate
class>`` (the database rejects the data, e.g. ``database:22``), ``handler`` (any other deterministic failure).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError

# Bigger originals are kept cut to this size (and cannot be replayed): the record must fit the broker's request
# limit (16 MiB) once base64-encoded.
MAX_ORIGINAL_BYTES = 4 * 1024 * 1024
MAX_REASON_CHARS = 1000
_CODE_PART = re.compile(r"[^a-z0-9_.-]+")
_NAMESPACE = uuid.UUID("6f0d3c1e-3b53-4c8e-9d55-0d2b1f1e7a10")


class DeadLetter(BaseModel):
    """One record on ``tally.dead-letter``."""

    id: uuid.UUID
    reason_code: str
    reason: str
    consumer: str
    topic: str
    partition: int
    offset: int
    failed_at: datetime
    project: str | None = None
    event_id: uuid.UUID | None = None
    event_type: str | None = None
    key: str | None = None
    original_b64: str
    original_size: int = 0
    original_truncated: bool = False

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def code_part(text: str, limit: int = 40) -> str:
    """A rule or class name as a metric-label-safe token."""
    return _CODE_PART.sub("_", text.lower()).strip("_")[:limit] or "unknown"


def reason_code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code and not isinstance(exc, DBAPIError):
        return code
    if isinstance(exc, DBAPIError):
        state = sqlstate(exc)
        return f"database:{state[:2]}" if state else "database"
    if isinstance(exc, ValidationError):
        return "validation"
    return "handler"


def sqlstate(exc: DBAPIError) -> str | None:
    seen: set[int] = set()
    cur: BaseException | None = exc.orig
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        state = getattr(cur, "sqlstate", None) or getattr(cur, "pgcode", None)
        if isinstance(state, str):
            return state
        cur = cur.__cause__ or cur.__context__
    return None


def _str(value: Any, max_len: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= max_len else None


def describe_original(raw: bytes) -> dict[str, Any]:
    """Project, event id, type and key from the raw envelope, as far as it decodes."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {"project": _str(data.get("project"), 64), "event_type": _str(data.get("type"), 100),
                           "key": _str(data.get("key"), 200)}
    try:
        out["event_id"] = uuid.UUID(str(data.get("id"))) if data.get("id") is not None else None
    except ValueError:
        out["event_id"] = None
    return out


def dead_letter_id(consumer: str, topic: str, partition: int, offset: int, raw: bytes) -> uuid.UUID:
    """The same refusal of the same message gets the same id (a consumer that dead-letters, then crashes before
    committing its offset, dead-letters it again on redelivery): the reader dedupes on it."""
    digest = hashlib.sha256(raw).hexdigest()[:32]
    return uuid.uuid5(_NAMESPACE, f"{consumer}\n{topic}\n{partition}\n{offset}\n{digest}")


def build(*, consumer: str, raw: bytes, reason: str, code: str, topic: str, partition: int, offset: int,
          record_key: bytes | None = None) -> DeadLetter:
    seen = describe_original(raw)
    key = seen.get("key")
    if record_key is not None:
        try:
            key = record_key.decode() if len(record_key) <= 1000 else key
        except UnicodeDecodeError:
            pass
    kept = raw[:MAX_ORIGINAL_BYTES]
    return DeadLetter(
        id=dead_letter_id(consumer, topic, partition, offset, raw), reason_code=code[:100],
        reason=reason[:MAX_REASON_CHARS], consumer=consumer, topic=topic, partition=partition, offset=offset,
        failed_at=datetime.now(UTC), project=seen.get("project"), event_id=seen.get("event_id"),
        event_type=seen.get("event_type"), key=key, original_b64=base64.b64encode(kept).decode(),
        original_size=len(raw), original_truncated=len(kept) < len(raw),
    )


def parse(raw: bytes, *, topic: str, partition: int, offset: int) -> DeadLetter:
    """Read one record of the dead-letter topic, whatever it holds: records of the first format (no id, no codes)
    are completed from the original; anything unreadable becomes a dead letter of its own (consumer
    ``unknown``), so the reader never refuses a record (a dead letter of a dead letter would loop)."""
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        original = base64.b64decode(str(data.get("original_b64", "")), validate=True)
        consumer = str(data.get("consumer") or "unknown")[:200]
        src_topic = str(data.get("topic") or "unknown")[:200]
        src_partition = int(data.get("partition", -1))
        src_offset = int(data.get("offset", -1))
        if not (-1 <= src_partition < 2**31 and -1 <= src_offset < 2**63):
            raise ValueError("partition or offset out of range")
        record = build(consumer=consumer, raw=original, reason=str(data.get("reason") or ""),
                       code=str(data.get("reason_code") or _legacy_code(str(data.get("reason") or ""))),
                       topic=src_topic, partition=src_partition, offset=src_offset)
        updates: dict[str, Any] = {}
        if data.get("id"):
            updates["id"] = uuid.UUID(str(data["id"]))
        if data.get("failed_at"):
            failed_at = datetime.fromisoformat(str(data["failed_at"]))
            updates["failed_at"] = failed_at if failed_at.tzinfo else failed_at.replace(tzinfo=UTC)
        if isinstance(data.get("key"), str):
            updates["key"] = data["key"][:1000]
        if isinstance(data.get("original_size"), int) and 0 <= data["original_size"] < 2**31:
            updates["original_size"] = data["original_size"]
            updates["original_truncated"] = bool(data.get("original_truncated"))
        return record.model_copy(update=updates)
    except (orjson.JSONDecodeError, ValueError, TypeError, binascii.Error, OverflowError):
        return build(consumer="unknown", raw=raw, reason="unreadable dead-letter record", code="decode",
                     topic="tally.dead-letter", partition=partition, offset=offset)


def _legacy_code(reason: str) -> str:
    if reason.startswith("not JSON"):
        return "decode"
    if reason.startswith("invalid envelope"):
        return "envelope"
    if reason.startswith("unknown event type"):
        return "unknown_type"
    if reason.startswith("handler failed"):
        return "handler"
    return "validation"
