"""Logs: one formatter for every service. JSON lines by default (service, logger, level, message, and when known
the consumer group, event id and trace id); ``TALLY_LOG_FORMAT=text`` for people reading a terminal.

Context travels in a contextvar: the HTTP middleware binds the request's trace id, the Kafka middleware binds the
consumer group and event id of the message being handled, and anything else can add fields with ``log_context``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import orjson

LOG_FORMATS = ("json", "text")
_CONTEXT: ContextVar[dict[str, str]] = ContextVar("tally_log_context", default={})  # noqa: B039 (never mutated)


def bind(**fields: object) -> Token[dict[str, str]]:
    """Add fields to the log context of the current task (and the tasks it starts); ``unbind`` with the token."""
    current = _CONTEXT.get()
    merged = {**current, **{k: str(v) for k, v in fields.items() if v is not None}}
    return _CONTEXT.set(merged)


def unbind(token: Token[dict[str, str]]) -> None:
    _CONTEXT.reset(token)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """``with log_context(consumer=group, event_id=env.id): ...``: every line logged inside carries the fields."""
    token = bind(**fields)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def context() -> dict[str, str]:
    return dict(_CONTEXT.get())


# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
# uvicorn's color_message repeats the message with terminal colour codes.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_CONTEXT.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with the context fields appended as ``key=value``."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _CONTEXT.get()
        if not fields:
            return line
        head, sep, rest = line.partition("\n")
        return head + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" + sep + rest


def formatter(service: str, fmt: str) -> logging.Formatter:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter(service) if fmt == "json" else TextFormatter(service)


def configure(service: str, *, level: str = "info", fmt: str = "json") -> None:
    """One handler on the root logger (stderr) with the service's formatter; every other logger (uvicorn's,
    FastStream's, aiokafka's) propagates to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(service, fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
