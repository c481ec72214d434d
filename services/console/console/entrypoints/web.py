"""What every page handler shares: the signed-in context, rendering with the page's nonce and CSRF token, flash
messages, redirects."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from console.adapters.identity import Identity
from console.adapters.port import ApiFactory, TallyApi
from console.config import Settings
from console.domain import charts, render
from console.domain.scoring import display_value, options
from console.domain.tree import build_rows
from console.entrypoints.security import csrf_token
from tally_shared.identity.store import User

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

ROLE_LABELS = {"admin": "Admin", "member": "Member", "reviewer": "Reviewer", "viewer": "Viewer"}


def make_templates() -> Jinja2Templates:
    # Autoescape on for every template, whatever its extension: trace content is hostile.
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(as_text=render.as_text, chat_messages=render.chat_messages, fold=render.fold,
                       markdown=render.sanitised_markdown, options=options, display_value=display_value,
                       charts=charts, role_labels=ROLE_LABELS, tree_rows=build_rows)
    env.filters["ms"] = _ms
    env.filters["num"] = _num
    env.filters["when"] = _when
    return Jinja2Templates(env=env)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"


def _num(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, int | float):
        if isinstance(v, float) and not v.is_integer():
            return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{max(digits - 1, 0)}f}".rstrip("0").rstrip(".")
        return f"{int(v):,}"
    return str(v)


def _when(v: Any) -> str:
    """A time in UTC, saying so: reviewers in several time zones read the same pages."""
    if not v:
        return "-"
    if isinstance(v, datetime):
        t = v
    else:
        try:
            t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            return str(v)[:19].replace("T", " ")
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


@dataclass
class Ctx:
    request: Request
    user: User
    projects: list[tuple[str, str, str]]
    project_id: str
    project_name: str
    role: str
    api: TallyApi
    settings: Settings

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_configure(self) -> bool:
        return self.role in ("admin", "member")

    @property
    def can_review(self) -> bool:
        return self.role != "viewer"

    async def people(self) -> dict[str, str]:
        """User id -> a readable name for this project's members (scores and reviews name people by id)."""
        members = await identity_of(self.request).members_of(self.project_id)
        return {m.user_id: m.name or m.email for m in members}

    def require(self, what: str) -> None:
        ok = {"configure": self.can_configure, "review": self.can_review, "admin": self.is_admin}[what]
        if not ok:
            raise Forbidden(f"Your role in this project ({self.role}) does not allow this.")


def identity_of(request: Request) -> Identity:
    return request.app.state.console_identity


async def signed_in_user(request: Request) -> User | None:
    settings: Settings = request.app.state.settings
    identity = identity_of(request)
    uid = request.session.get("uid")
    if uid:
        user = await identity.get_user(uid)
        if user is not None:
            return user
        request.session.clear()
    if settings.trusted_user_header:
        email = request.headers.get(settings.trusted_user_header)
        if email:
            user = await identity.user_by_email(email)
            if user is not None:
                request.session["uid"] = user.id
                return user
    return None


async def get_ctx(request: Request) -> Ctx:
    """Dependency of every signed-in page."""
    user = await signed_in_user(request)
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    identity = identity_of(request)
    projects = await identity.projects_of(user.id)
    if not projects:
        raise Forbidden("Your account is not a member of any project yet. Ask a project admin to add you.")
    chosen = request.session.get("project")
    match = next((p for p in projects if p[0] == chosen), projects[0])
    request.session["project"] = match[0]
    factory: ApiFactory = request.app.state.api_factory
    return Ctx(request=request, user=user, projects=projects, project_id=match[0], project_name=match[1],
               role=match[2], api=factory.for_user(user.id, match[0]), settings=request.app.state.settings)


def flash(request: Request, message: str, kind: str = "info") -> None:
    items = list(request.session.get("flash", []))
    items.append([kind, message[:500]])
    request.session["flash"] = items[-5:]


def page(ctx: Ctx | None, request: Request, template: str, status_code: int = 200, **data: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    messages = request.session.pop("flash", []) if "flash" in request.session else []
    data.setdefault("people", {})
    context = {"ctx": ctx, "nonce": request.state.nonce, "csrf": csrf_token(request), "messages": messages,
               "path": request.url.path, "now": time.time(), **data}
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """Only same-site paths: never redirect to another origin after sign-in."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="")
