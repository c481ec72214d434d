"""Rule violations, each naming the field and the rule it broke (HTTP turns them into 422 bodies, the command
consumer into dead-letter reasons)."""

from __future__ import annotations

from tally_shared.score_rules import Invalid, Problem

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "Problem"]


class NotFound(Exception):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.what = what
        self.ident = ident


class Forbidden(Exception):
    pass


class Conflict(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
