"""The console's reads and writes of the shared identity schema: IdentityStore plus the two listings the
member pages need. The console has no other database access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from tally_shared.identity.store import IdentityStore, User
from tally_shared.identity.tables import memberships, users


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    name: str | None
    role: str


class Identity(Protocol):
    async def authenticate_user(self, email: str, password: str) -> User | None: ...
    async def get_user(self, user_id: str) -> User | None: ...
    async def user_by_email(self, email: str) -> User | None: ...
    async def projects_of(self, user_id: str) -> list[tuple[str, str, str]]: ...
    async def role_of(self, user_id: str, project_id: str) -> str | None: ...
    async def members_of(self, project_id: str) -> list[Member]: ...
    async def create_user(self, email: str, password: str, name: str | None = None) -> User: ...
    async def add_member(self, user_id: str, project_id: str, role: str) -> None: ...


class ConsoleIdentity(IdentityStore):
    async def user_by_email(self, email: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users.c.id, users.c.email, users.c.name).where(
                users.c.email == email.strip().lower(), users.c.is_active.is_(True)))).first()
        return User(row.id, row.email, row.name) if row else None

    async def members_of(self, project_id: str) -> list[Member]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(users.c.id, users.c.email, users.c.name, memberships.c.role)
                .join(memberships, memberships.c.user_id == users.c.id)
                .where(memberships.c.project_id == project_id)
                .order_by(users.c.email)
            )
            return [Member(r.id, r.email, r.name, r.role) for r in rows]

    async def role_of(self, user_id: str, project_id: str) -> str | None:
        # The console must see a role change at once (the services may cache for a few seconds).
        self._role_cache.pop((user_id, project_id))
        return await super().role_of(user_id, project_id)
