"""Domain errors as HTTP answers: the kind of error picks the status, its code and details become the body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from queue_router.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable
from tally_shared.http import error_body

STATUS: dict[type[DomainError], int] = {NotFound: 404, Conflict: 409, Invalid: 422, Forbidden: 403,
                                        Unavailable: 503}


def status_of(exc: DomainError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=status_of(exc))
