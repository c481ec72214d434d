"""What a read can refuse, in the read models' own terms. The HTTP edge (``entrypoints/http.py``) turns these
into the answers clients know (status, code, details); the application layer never speaks HTTP."""

from __future__ import annotations


class ReadError(Exception):
    """Base of every refusal a read model answers with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ReadError):
    """The object asked for does not exist in the caller's project."""


class Invalid(ReadError):
    """A parameter breaks a rule (``field`` as the client spelled it; ``rule`` names the rule broken). ``message``
    is the one-line summary, ``detail`` what the rule asks for."""

    def __init__(self, field: str | None, rule: str | None, detail: str, message: str | None = None) -> None:
        super().__init__(message or (f"{field}: {detail}" if field else detail))
        self.field = field
        self.rule = rule
        self.detail = detail

    def problems(self) -> list[dict[str, str]] | None:
        if self.field is None or self.rule is None:
            return None
        return [{"field": self.field, "rule": self.rule, "message": self.detail}]


class Unsupported(Invalid):
    """A query the Langfuse-compatible reads do not serve (an unknown filter column, operator, field group or
    cursor): Langfuse answers those as a malformed request, not as a failed validation."""
