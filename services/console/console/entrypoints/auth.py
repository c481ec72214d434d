"""Sign-in, sign-out, project switching and the members page (the console's only identity writes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from console.application.signin_limit import SignInLimiter
from console.entrypoints.security import client_address, verify_csrf
from console.entrypoints.web import (
    Ctx,
    flash,
    get_ctx,
    identity_of,
    page,
    redirect,
    safe_next,
    signed_in_user,
)

router = APIRouter(dependencies=[Depends(verify_csrf)])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/") -> Response:
    if await signed_in_user(request) is not None:
        return redirect(safe_next(next))
    return page(None, request, "login.html", next=safe_next(next), demo_hint=request.app.state.settings.demo_hint)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, email: Annotated[str, Form(max_length=320)], password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    limiter: SignInLimiter = request.app.state.signin_limiter
    address = client_address(request, request.app.state.trusted_proxies)
    wait = limiter.retry_after(email, address)
    if wait is not None:
        # Refused before the password is checked: guessing costs the guesser time, and this process no CPU.
        response = page(None, request, "login.html", status_code=429, next=safe_next(next), email=email,
                        error=f"Too many failed sign-ins. For your account's safety, try again in "
                              f"{_minutes(wait)}.", demo_hint=request.app.state.settings.demo_hint)
        response.headers["Retry-After"] = str(wait)
        return response
    user = await identity_of(request).authenticate_user(email.strip(), password)
    if user is None:
        limiter.failed(email, address)
        return page(None, request, "login.html", status_code=401, next=safe_next(next), email=email,
                    error="Wrong email or password.", demo_hint=request.app.state.settings.demo_hint)
    limiter.succeeded(email)
    # A fresh session on sign-in: nothing from before (a planted CSRF token, say) carries over.
    request.session.clear()
    request.session["uid"] = user.id
    return redirect(safe_next(next))


def _minutes(seconds: int) -> str:
    minutes = max(1, -(-seconds // 60))
    return "a minute" if minutes == 1 else f"{minutes} minutes"


@router.post("/logout")
async def logout(request: Request) -> Response:
    request.session.clear()
    return redirect("/login")


@router.post("/projects/switch")
async def switch_project(ctx: CtxDep, project: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
    if any(p[0] == project for p in ctx.projects):
        ctx.request.session["project"] = project
    target = safe_next(next)
    # Object pages (a queue item, a trace) belong to the old project; land on the section's list instead.
    section = "/" + target.strip("/").split("/")[0] if target != "/" else "/"
    return redirect(section)


@router.get("/", response_class=HTMLResponse)
async def home(ctx: CtxDep) -> Response:
    return redirect("/queues" if ctx.can_review else "/dashboards")


@router.get("/setup/members", response_class=HTMLResponse)
async def members(ctx: CtxDep) -> Response:
    ctx.require("admin")
    rows = await identity_of(ctx.request).members_of(ctx.project_id)
    return page(ctx, ctx.request, "members.html", members=rows)


@router.post("/setup/members", response_class=HTMLResponse)
async def add_member(
    ctx: CtxDep, email: Annotated[str, Form(max_length=320)], role: Annotated[str, Form()],
    name: Annotated[str, Form(max_length=200)] = "", password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    ctx.require("admin")
    identity = identity_of(ctx.request)
    email = email.strip().lower()
    if role not in ("admin", "member", "reviewer", "viewer") or "@" not in email:
        flash(ctx.request, "Give an email address and one of the roles.", "error")
        return redirect("/setup/members")
    user = await identity.user_by_email(email)
    if user is None:
        if len(password) < 8:
            flash(ctx.request, "A new account needs a password of at least 8 characters.", "error")
            return redirect("/setup/members")
        user = await identity.create_user(email, password, name.strip() or None)
    await identity.add_member(user.id, ctx.project_id, role)
    flash(ctx.request, f"{email} is now {role} of {ctx.project_name}.", "ok")
    return redirect("/setup/members")
