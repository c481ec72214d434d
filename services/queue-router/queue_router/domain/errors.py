"""What the application refuses, in its own words: each error carries a stable ``code`` (clients branch on it),
a message for people and, where a field is at fault, ``details`` naming it. The HTTP edge maps the kinds to
statuses (``entrypoints.errors``); nothing below the edge knows about HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class NotFound(DomainError):
    @classmethod
    def of(cls, what: str, ident: str) -> NotFound:
        return cls("not_found", f"{what} {ident!r} not found")


class Conflict(DomainError):
    """The request is valid but the state does not allow it now (archived queue, lost lease, closed item)."""


class Invalid(DomainError):
    """A value breaks a rule; ``details`` lists ``{field, rule, message}``."""


class Forbidden(DomainError):
    pass


class Unavailable(DomainError):
    """A service this one asks (scoring, identity) is not configured or not answering."""


def not_null(field: str) -> Invalid:
    return Invalid("validation_error", f"{field} cannot be null",
                   [{"field": field, "rule": "not_null", "message": "cannot be null"}])
