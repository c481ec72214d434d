"""The identity store's hot paths: bounded key caches, and password hashing in a few threads of its own."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from tally_shared.caching import TtlLru
from tally_shared.db import make_engine
from tally_shared.identity import store as store_module
from tally_shared.identity.store import PASSWORD_HASHING_THREADS, IdentityStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(identity_db: str) -> AsyncIterator[object]:
    engine = make_engine(identity_db, pool_size=2)
    yield engine
    await engine.dispose()


def test_ttl_lru_bounds_size_and_age() -> None:
    clock = Clock()
    cache: TtlLru[int, str] = TtlLru(3, ttl=10, clock=clock)
    for i in range(5):
        cache.set(i, str(i))
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == "4"
    cache.get(2)  # used: 3 is now the oldest
    cache.set(5, "5")
    assert cache.get(3) is None and cache.get(2) == "2"
    clock.now += 10
    assert cache.get(2) is None and cache.lookup(5) == (False, None)


async def test_a_flood_of_made_up_keys_keeps_the_caches_bounded_and_the_real_key_cached(engine, project_id) -> None:
    store = IdentityStore(engine, key_cache_size=5, unknown_key_cache_size=10)  # type: ignore[arg-type]
    await store.create_project(project_id, project_id)
    public, secret = await store.create_api_key(project_id)
    assert await store.verify_api_key(public, secret) == project_id
    for _ in range(300):
        assert await store.verify_api_key(f"pk-{uuid.uuid4()}", secrets.token_urlsafe(32) * 20) is None
    assert len(store._unknown_keys) == 10
    assert len(store._key_cache) == 1
    # Served from the cache: no database needed.
    await engine.dispose()  # type: ignore[attr-defined]
    assert await store.verify_api_key(public, secret) == project_id


async def test_a_revoked_key_stops_working_within_the_cache_time(engine, project_id) -> None:
    clock = Clock()
    store = IdentityStore(engine, cache_seconds=30, clock=clock)  # type: ignore[arg-type]
    await store.create_project(project_id, project_id)
    public, secret = await store.create_api_key(project_id)
    assert await store.verify_api_key(public, secret) == project_id
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text("UPDATE identity.api_keys SET revoked_at = now() WHERE public_key = :k"),
                           {"k": public})
    clock.now += 29
    assert await store.verify_api_key(public, secret) == project_id  # still cached, as documented
    clock.now += 1
    assert await store.verify_api_key(public, secret) is None


async def test_a_wrong_secret_is_refused_without_blocking_the_right_one(engine, project_id) -> None:
    clock = Clock()
    store = IdentityStore(engine, clock=clock)  # type: ignore[arg-type]
    await store.create_project(project_id, project_id)
    public, secret = await store.create_api_key(project_id)
    assert await store.verify_api_key(public, "sk-wrong") is None
    assert await store.verify_api_key(public, secret) == project_id


async def test_password_hashing_runs_off_the_event_loop_a_few_at_a_time(engine, monkeypatch) -> None:
    lock = threading.Lock()
    running, peak, threads = [0], [0], set()
    real = store_module.verify_password

    def verify(password_hash: str, password: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.02)  # overlap the calls, so that the bound is what limits them
        with lock:
            running[0] -= 1
        return real(password_hash, password)

    monkeypatch.setattr(store_module, "verify_password", verify)
    store = IdentityStore(engine)  # type: ignore[arg-type]
    email = f"u-{uuid.uuid4().hex[:8]}@t.test"
    await store.create_user(email, "right password")
    results = await asyncio.gather(*(store.authenticate_user(email, "right password" if i % 2 else "wrong")
                                     for i in range(8)))
    assert [r is not None for r in results] == [i % 2 == 1 for i in range(8)]
    assert await store.authenticate_user("nobody-" + email, "x") is None
    assert threading.main_thread().name not in threads
    assert all(name.startswith("tally-argon2") for name in threads)
    assert peak[0] == PASSWORD_HASHING_THREADS


async def test_a_new_membership_is_seen_at_once_by_the_process_that_made_it(engine, project_id) -> None:
    store = IdentityStore(engine)  # type: ignore[arg-type]
    await store.create_project(project_id, project_id)
    user = await store.create_user(f"m-{uuid.uuid4().hex[:8]}@t.test", "pw")
    assert await store.role_of(user.id, project_id) is None  # cached as "no role"
    await store.add_member(user.id, project_id, "reviewer")
    assert await store.role_of(user.id, project_id) == "reviewer"


async def test_made_up_project_ids_keep_the_role_cache_bounded(engine) -> None:
    store = IdentityStore(engine, role_cache_size=5)  # type: ignore[arg-type]
    for i in range(50):
        assert await store.role_of("u-someone", f"p-{i}") is None
        assert await store.role_of("u-someone", "p" * 100_000 + str(i)) is None  # longer than any project id
    assert len(store._role_cache) == 5
