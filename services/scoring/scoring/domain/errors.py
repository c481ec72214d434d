"""Rule violations, each naming the field and the rule it broke (HTTP turns them into 422 bodies, the command
consumer into dead-letter reasons)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class Invalid(Exception):
    """One or more rule violations."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message} ({p.rule})" for p in problems))
        self.problems = problems

    @classmethod
    def one(cls, field: str, rule: str, message: str) -> Invalid:
        return cls([Problem(field, rule, message)])

    @property
    def reason(self) -> str:
        return str(self)


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
