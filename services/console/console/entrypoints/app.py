"""Wiring: settings -> identity store, API client, templates, middleware, routers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from console.adapters.api import HttpApiFactory
from console.adapters.identity import ConsoleIdentity, Identity
from console.adapters.port import ApiCallError, ApiFactory
from console.application.signin_limit import Limits, SignInLimiter
from console.config import Settings
from console.entrypoints import auth, curation, dead_letters, docs, reading, review, setup, traces
from console.entrypoints.security import CsrfError, parse_networks, security_headers
from console.entrypoints.web import Forbidden, LoginRequired, login_url, make_templates, page, redirect
from tally_shared.db import make_engine, ping
from tally_shared.http import HealthCheck
from tally_shared.service import Container
from tally_shared.service import create_app as create_service_app

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
log = logging.getLogger("console")


@dataclass(kw_only=True)
class ConsoleContainer(Container):
    """The console owns no schema and no broker: an identity store (its own small engine unless one is given)
    and the client of the services' API."""

    settings: Settings
    identity: Identity
    api_factory: ApiFactory
    http_factory: HttpApiFactory | None = None
    engine: AsyncEngine | None = None

    def checks(self) -> dict[str, HealthCheck]:
        async def database_ok() -> None:
            if self.engine is not None:
                await ping(self.engine)

        async def api_ok() -> None:
            if self.http_factory is not None:
                await self.http_factory.check_reachable()

        # The API check calls one plain path per service (answered 401 without credentials), never the gateway's
        # aggregated /api/public/health, which calls this /readyz back. A console whose API base URL is wrong
        # (unset under compose, or pointing at itself) serves a 502 on every signed-in page, so it must not look
        # healthy.
        return {"database": database_ok, "api": api_ok}

    async def close(self) -> None:
        if self.http_factory is not None:
            await self.http_factory.aclose()
        if self.engine is not None:
            await self.engine.dispose()


def bootstrap(settings: Settings, *, api_factory: ApiFactory | None = None,
              identity: Identity | None = None) -> ConsoleContainer:
    engine = None
    if identity is None:
        engine = make_engine(settings.database_url, pool_size=5, application_name="tally-console")
        identity = ConsoleIdentity(engine)
    http_factory = HttpApiFactory(settings.api_url, settings.secret_key, settings.api_timeout_seconds) \
        if api_factory is None else None
    factory: ApiFactory = api_factory or http_factory
    return ConsoleContainer(name="console", settings=settings, identity=identity, api_factory=factory,
                            http_factory=http_factory, engine=engine)


def create_app(settings: Settings | None = None, *, api_factory: ApiFactory | None = None,
               identity: Identity | None = None) -> FastAPI:
    settings = settings or Settings()
    container = bootstrap(settings, api_factory=api_factory, identity=identity)
    # HTML pages render their own errors (handlers below); request metrics keep the console's historical names.
    app = create_service_app(container, title="Tally console", docs=False, error_handlers=False,
                             request_metrics_prefix="tally_console")
    app.state.settings = settings
    app.state.console_identity = container.identity
    app.state.api_factory = container.api_factory
    app.state.templates = make_templates()
    app.state.trusted_proxies = parse_networks(settings.trusted_proxies)
    app.state.signin_limiter = SignInLimiter(Limits(
        account_failures=settings.signin_account_failures, address_failures=settings.signin_address_failures,
        window_seconds=settings.signin_window_seconds))

    # Middleware order: the last added runs first. Headers wrap everything, including the session's.
    app.add_middleware(
        SessionMiddleware, secret_key=settings.secret_key + ":console-session", session_cookie=settings.session_cookie,
        max_age=settings.session_max_age_seconds, same_site="lax", https_only=settings.secure_cookies,
    )
    app.middleware("http")(security_headers)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if request.method != "GET" or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": {"code": "unauthorized", "message": "sign in again"}}, status_code=401)
        return redirect(login_url(exc.next_path))

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return page(None, request, "error.html", status_code=403, title="Not allowed", message=exc.message)

    @app.exception_handler(CsrfError)
    async def _csrf(request: Request, exc: CsrfError) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": {"code": "csrf", "message": "missing or wrong CSRF token"}},
                                status_code=403)
        return page(None, request, "error.html", status_code=403, title="Form expired",
                    message="This form was not sent from this console session (or the session changed). "
                            "Go back, reload the page and try again.")

    @app.exception_handler(ApiCallError)
    async def _api(request: Request, exc: ApiCallError) -> Response:
        log.warning("service call failed: %s", exc)
        status = exc.status if exc.status in (403, 404) else 502
        return page(None, request, "error.html", status_code=status, title="A service did not answer as expected",
                    message=exc.describe())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/api/", "/static/")):
            return JSONResponse({"error": {"code": "not_found" if exc.status_code == 404 else "error",
                                           "message": str(exc.detail)}}, status_code=exc.status_code)
        title = "Page not found" if exc.status_code == 404 else "Error"
        return page(None, request, "error.html", status_code=exc.status_code, title=title, message=str(exc.detail))

    for router in (auth.router, review.router, traces.router, setup.router, dead_letters.router, reading.router,
                   curation.router, docs.router):
        app.include_router(router)
    return app


