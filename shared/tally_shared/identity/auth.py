"""Who is calling: a project's API key pair (HTTP Basic, as Langfuse does) or a signed-in person (a bearer token
the console signs, plus the project in ``X-Tally-Project``)."""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel

from tally_shared.http import ApiError
from tally_shared.identity.store import IdentityStore

USER_TOKEN_MAX_AGE = 12 * 3600


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    REVIEWER = "reviewer"
    VIEWER = "viewer"


class Principal(BaseModel):
    project_id: str
    via: Literal["api_key", "user"]
    role: Role
    user_id: str | None = None

    @property
    def actor(self) -> str:
        """What to record as author: the user id, or ``api`` for a key."""
        return self.user_id or "api"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def can_configure(self) -> bool:
        return self.role in (Role.ADMIN, Role.MEMBER)

    @property
    def can_review(self) -> bool:
        return self.role != Role.VIEWER


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="tally-user-token")


def sign_user_token(secret: str, user_id: str) -> str:
    return _serializer(secret).dumps({"uid": user_id})


def read_user_token(secret: str, token: str, max_age: int = USER_TOKEN_MAX_AGE) -> str | None:
    try:
        data = _serializer(secret).loads(token, max_age=max_age)
    except BadSignature:
        return None
    uid = data.get("uid") if isinstance(data, dict) else None
    return uid if isinstance(uid, str) else None


_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="tally"'}


async def authenticate(request: Request, store: IdentityStore, secret: str) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            public, _, secret_key = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "unauthorized", "malformed Basic credentials", headers=_UNAUTHORIZED) from None
        project = await store.verify_api_key(public, secret_key) if public and secret_key else None
        if project is None:
            raise ApiError(401, "unauthorized", "invalid public or secret key", headers=_UNAUTHORIZED)
        return Principal(project_id=project, via="api_key", role=Role.ADMIN)
    if scheme.lower() == "bearer" and value:
        user_id = read_user_token(secret, value.strip())
        project = request.headers.get("x-tally-project") or request.query_params.get("project")
        if user_id is None:
            raise ApiError(401, "unauthorized", "invalid or expired token", headers=_UNAUTHORIZED)
        if not project:
            raise ApiError(400, "project_required", "name the project in the X-Tally-Project header")
        role = await store.role_of(user_id, project)
        if role is None:
            raise ApiError(403, "forbidden", "you are not a member of this project")
        return Principal(project_id=project, via="user", role=Role(role), user_id=user_id)
    raise ApiError(401, "unauthorized", "authentication required", headers=_UNAUTHORIZED)


async def require_principal(request: Request) -> Principal:
    """FastAPI dependency. Expects ``app.state.identity`` (IdentityStore) and ``app.state.secret_key``."""
    return await authenticate(request, request.app.state.identity, request.app.state.secret_key)


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
