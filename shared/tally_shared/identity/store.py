"""Reads and writes of the identity schema. Services only read (``verify_api_key``, ``role_of``), with a short
in-process cache so that authentication costs no database round trip on the hot path.

The caches are bounded in size and age whatever callers send: a revoked key or a removed membership stops
working within ``cache_seconds`` (30 s) in every process. Valid key pairs and wrong ones live in separate caches,
so a flood of made-up keys (each costs one indexed lookup) cannot push the real ones out; wrong pairs are
remembered only briefly, for a client retrying the same bad key.

Password hashing (argon2, ~100 ms of CPU by design) runs in worker threads, a few at a time, never on the event
loop: a burst of sign-ins then waits its turn instead of stalling every other request of the process.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tally_shared.caching import TtlLru
from tally_shared.identity.tables import api_keys, memberships, projects, users

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "identity"
ROLES = ("admin", "member", "reviewer", "viewer")
# Column lengths (tables.py): a longer value cannot match a row.
_MAX_PUBLIC_KEY = api_keys.c.public_key.type.length or 100
_MAX_ID = memberships.c.project_id.type.length or 64

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except VerificationError:
        return False


# Password hashing gets threads of its own, few of them: a burst of sign-ins queues here instead of taking every
# thread of the default executor (which the rest of the process needs) or the event loop itself.
PASSWORD_HASHING_THREADS = 2
_password_pool = ThreadPoolExecutor(max_workers=PASSWORD_HASHING_THREADS, thread_name_prefix="tally-argon2")


@functools.cache
def _no_such_user_hash() -> str:
    """Checked when no account has the email, so that a wrong email costs the same time as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(16))


async def hash_password_off_loop(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_password_pool, hash_password, password)


async def verify_password_off_loop(password_hash: str, password: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(_password_pool, verify_password, password_hash,
                                                            password)


def hash_secret(secret: str) -> str:
    # API secrets are 256-bit random strings, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str | None


class IdentityStore:
    def __init__(
        self, engine: AsyncEngine, cache_seconds: float = 30.0, *, key_cache_size: int = 10_000,
        unknown_key_cache_size: int = 1_000, unknown_key_seconds: float = 5.0, role_cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        # Keyed by a digest of the pair: fixed size per entry, whatever length the caller sent.
        self._key_cache: TtlLru[str, str] = TtlLru(key_cache_size, cache_seconds, clock)
        self._unknown_keys: TtlLru[str, bool] = TtlLru(unknown_key_cache_size,
                                                       min(unknown_key_seconds, cache_seconds), clock)
        self._role_cache: TtlLru[tuple[str, str], str | None] = TtlLru(role_cache_size, cache_seconds, clock)

    async def verify_api_key(self, public_key: str, secret_key: str) -> str | None:
        """The project id of a valid, unrevoked key pair, else None."""
        if len(public_key) > _MAX_PUBLIC_KEY:
            return None  # longer than the column: no such key, and nothing to look up or remember
        digest = hash_secret(secret_key)
        cache_key = hashlib.sha256(f"{public_key}\0{digest}".encode()).hexdigest()
        project = self._key_cache.get(cache_key)
        if project is not None:
            return project
        if self._unknown_keys.get(cache_key):
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.project_id, api_keys.c.secret_hash).where(
                        api_keys.c.public_key == public_key, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        project = row.project_id if row and hmac.compare_digest(row.secret_hash, digest) else None
        if project is None:
            self._unknown_keys.set(cache_key, True)
        else:
            self._key_cache.set(cache_key, project)
        return project

    async def role_of(self, user_id: str, project_id: str) -> str | None:
        if len(user_id) > _MAX_ID or len(project_id) > _MAX_ID:
            return None  # longer than the columns: no such membership (the project id comes from a header)
        found, role = self._role_cache.lookup((user_id, project_id))
        if found:
            return role
        async with self._engine.connect() as conn:
            role = (
                await conn.execute(
                    select(memberships.c.role).where(
                        memberships.c.user_id == user_id, memberships.c.project_id == project_id
                    )
                )
            ).scalar()
        self._role_cache.set((user_id, project_id), role)
        return role

    async def projects_of(self, user_id: str) -> list[tuple[str, str, str]]:
        """(project id, project name, role) for every project the user belongs to."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(projects.c.id, projects.c.name, memberships.c.role)
                .join(memberships, memberships.c.project_id == projects.c.id)
                .where(memberships.c.user_id == user_id)
                .order_by(projects.c.name)
            )
            return [(r.id, r.name, r.role) for r in rows]

    async def project_name(self, project_id: str) -> str | None:
        async with self._engine.connect() as conn:
            return (await conn.execute(select(projects.c.name).where(projects.c.id == project_id))).scalar()

    async def create_project(self, project_id: str, name: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(pg_insert(projects).values(id=project_id, name=name).on_conflict_do_nothing())

    async def create_api_key(
        self, project_id: str, *, public_key: str | None = None, secret_key: str | None = None,
        note: str | None = None,
    ) -> tuple[str, str]:
        public_key = public_key or f"pk-tl-{uuid.uuid4()}"
        secret_key = secret_key or f"sk-tl-{secrets.token_urlsafe(32)}"
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(api_keys)
                .values(public_key=public_key, project_id=project_id, secret_hash=hash_secret(secret_key), note=note)
                .on_conflict_do_nothing()
            )
        return public_key, secret_key

    async def create_user(self, email: str, password: str, name: str | None = None) -> User:
        user_id = f"u-{uuid.uuid4().hex[:16]}"
        password_hash = await hash_password_off_loop(password)
        async with self._engine.begin() as conn:
            existing = (await conn.execute(select(users.c.id).where(users.c.email == email.lower()))).scalar()
            if existing:
                user_id = existing
            else:
                await conn.execute(
                    users.insert().values(id=user_id, email=email.lower(), name=name, password_hash=password_hash)
                )
        return User(user_id, email.lower(), name)

    async def add_member(self, user_id: str, project_id: str, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        async with self._engine.begin() as conn:
            stmt = pg_insert(memberships).values(user_id=user_id, project_id=project_id, role=role)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["user_id", "project_id"],
                                                          set_={"role": role}))
        self._role_cache.pop((user_id, project_id), None)

    async def authenticate_user(self, email: str, password: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(users.c.id, users.c.email, users.c.name, users.c.password_hash).where(
                        users.c.email == email.lower(), users.c.is_active.is_(True)
                    )
                )
            ).first()
        if row is None:
            await verify_password_off_loop(_no_such_user_hash(), password)
            return None
        if not await verify_password_off_loop(row.password_hash, password):
            return None
        return User(row.id, row.email, row.name)

    async def get_user(self, user_id: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users.c.id, users.c.email, users.c.name)
                                      .where(users.c.id == user_id))).first()
        return User(row.id, row.email, row.name) if row else None

    async def get_user_by_email(self, email: str) -> User | None:
        if len(email) > _MAX_ID * 4:
            return None  # longer than any stored email: no such user, nothing to look up
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users.c.id, users.c.email, users.c.name)
                                      .where(users.c.email == email.lower()))).first()
        return User(row.id, row.email, row.name) if row else None
