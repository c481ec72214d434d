"""What both HTTP surfaces share: dependencies, error mapping, query parsing, cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from scoring.application.deps import Actor, Deps
from scoring.domain.errors import Conflict, Forbidden, Invalid, NotFound, Problem
from tally_shared import content
from tally_shared.http import ApiError
from tally_shared.identity import Principal
from tally_shared.producer import PublishFailed

MAX_BODY_BYTES = 4 * 1024 * 1024


def deps_of(request: Request) -> Deps:
    """The handlers' dependencies, from the app's container (scoring/bootstrap.py)."""
    deps = request.app.state.container.deps
    if not isinstance(deps, Deps):
        raise TypeError("the app's container has no scoring Deps")
    return deps


# For handlers that take their dependencies as a parameter: ``deps: ScoringDeps``.
ScoringDeps = Annotated[Deps, Depends(deps_of)]


def actor_of(principal: Principal) -> Actor:
    return Actor(project_id=principal.project_id, user_id=principal.user_id, is_admin=principal.is_admin,
                 can_configure=principal.can_configure, can_review=principal.can_review)


def invalid_error(problems: list[Problem], message: str | None = None) -> ApiError:
    return ApiError(422, "validation_error", message or "; ".join(f"{p.field}: {p.message}" for p in problems)[:500],
                    [p.as_dict() for p in problems])


@asynccontextmanager
async def domain_errors(aliases: dict[str, str] | None = None) -> AsyncIterator[None]:
    """Turn domain exceptions into HTTP errors (field names as the client spells them)."""
    try:
        yield
    except Invalid as exc:
        problems = exc.problems
        if aliases:
            problems = [Problem(alias(p.field, aliases), p.rule, p.message) for p in problems]
        raise invalid_error(problems) from None
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except Forbidden as exc:
        raise ApiError(403, "forbidden", str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, exc.code, exc.message) from None
    except PublishFailed as exc:
        raise ApiError(503, "event_not_acknowledged",
                       "stored, but the broker did not acknowledge the event yet; retrying the same request is safe",
                       {"reason": str(exc)[:300]}) from None


def alias(field: str, aliases: dict[str, str]) -> str:
    head, _, rest = field.partition(".")
    name = aliases.get(head, head)
    return f"{name}.{rest}" if rest else name


async def read_json(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        data, must_clean = content.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"body is not valid JSON: {exc}") from None
    # A NUL must be replaced before the rules see it (scanning a score body costs less than walking it).
    return clean_input(data) if must_clean or content.needs_clean(body) else data


def clean_input(data: Any) -> Any:
    """Intake's one transformation (``tally_shared.content``): NUL and lone surrogates kept as replacement
    characters, numbers as doubles; a number no double holds is refused, naming where it is."""
    try:
        return content.clean(data)
    except content.Unrepresentable as exc:
        raise invalid_error([Problem(exc.path, exc.rule, exc.message)]) from None
    except RecursionError:
        raise invalid_error([Problem("body", "max_depth", "nested too deeply to store")]) from None


def bad_query(field: str, rule: str, message: str) -> ApiError:
    # Langfuse answers malformed list queries with 400, which its SDK maps to a typed error.
    return ApiError(400, "bad_request", f"{field}: {message}", [{"field": field, "rule": rule, "message": message}])


def csv(request: Request, name: str) -> list[str] | None:
    """A filter given as comma-separated values, repeated parameters, or both."""
    raw = request.query_params.getlist(name)
    if not raw:
        return None
    values = [v.strip() for item in raw for v in item.split(",") if v.strip()]
    return values or None


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise bad_query(name, "integer", "must be an integer") from None
    if not lo <= v <= hi:
        raise bad_query(name, "range", f"must be between {lo} and {hi}")
    return v


def float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise bad_query(name, "number", "must be a number") from None


def ts_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_query(name, "datetime", "must be an ISO 8601 datetime") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def encode_cursor(ts: datetime, score_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts.isoformat(), score_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, sid = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(ts), str(sid)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad_query("cursor", "cursor", "not a cursor this API returned") from None


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
