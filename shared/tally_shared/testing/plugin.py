"""pytest plugin (loaded with ``-p tally_shared.testing.plugin``): session-wide real infrastructure.

Broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else Apache Kafka from testcontainers where a Docker engine runs,
else an embedded Tansu broker started for the session.
Database server: ``DATABASE_URL`` if set, else PostgreSQL from testcontainers where Docker runs, else the
local server on 127.0.0.1:5432 if one answers, else the embedded PostgreSQL. Every test session works in
fresh databases of its own, dropped at the end.
"""

from __future__ import annotations

import gc
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

# A test session imports some 1,500 modules (the services' apps and their libraries). Where bytecode caches are off
# (PYTHONDONTWRITEBYTECODE, common in containers), every session compiled them all again: more CPU than the unit
# tier's tests themselves. The session writes them (``__pycache__`` is ignored by git; a changed source is compiled
# again). Set before the imports below, so they are cached too.
sys.dont_write_bytecode = False
# Importing those modules, and the tests' apps, allocates millions of objects that live for the whole session;
# with the default thresholds the cyclic collector scanned them again and again (about a tenth of the unit tier's
# CPU). Reference counting frees nearly everything a test makes; the collector still runs, less often.
gc.set_threshold(50_000, 50, 50)

from tally_shared import infra  # noqa: E402
from tally_shared.messaging import ensure_topics  # noqa: E402

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

# The fixtures that bring up real infrastructure (broker, database server, the whole system). A test that needs
# none of them, directly or through other fixtures, and is not marked as starting processes of its own
# (``processes``) or driving a browser, is a unit test: ``pytest -m unit`` runs those alone, in seconds.
INFRASTRUCTURE_FIXTURES = frozenset({"infra_tmp", "kafka_bootstrap", "pg_server_url", "make_database",
                                     "database_url", "identity_db", "api_key", "tally_stack"})
NOT_UNIT_MARKERS = ("processes", "browser")


def _broker(stack: ExitStack, tmp: Path) -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    if infra.have_docker():
        from testcontainers.kafka import KafkaContainer

        kafka = stack.enter_context(KafkaContainer().with_kraft())
        return str(kafka.get_bootstrap_server())
    port = infra.free_port()
    proc = infra.start_tansu(port, log_path=tmp / "tansu.log")
    stack.callback(infra.stop_process, proc)
    return f"127.0.0.1:{port}"


def _pg_server(stack: ExitStack, tmp: Path) -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if infra.have_docker():
        from testcontainers.postgres import PostgresContainer

        pg = stack.enter_context(PostgresContainer("postgres:16"))
        return str(pg.get_connection_url())
    if infra.port_open("127.0.0.1", 5432):
        return LOCAL_PG
    data = tmp / "pgdata"
    url = infra.embedded_postgres_url(data)
    stack.callback(infra.stop_embedded_postgres, data)
    return url


def pytest_configure(config: pytest.Config) -> None:
    # Services refuse to start without a strong TALLY_SECRET_KEY; a test session gets a random one of its own
    # (settings built in-process read it, and the processes the tests start inherit it).
    from tally_shared.settings import KNOWN_PUBLIC_SECRETS, MIN_SECRET_KEY_LENGTH

    current = os.environ.get("TALLY_SECRET_KEY", "")
    if len(current) < MIN_SECRET_KEY_LENGTH or current in KNOWN_PUBLIC_SECRETS:
        os.environ["TALLY_SECRET_KEY"] = "test-" + secrets.token_urlsafe(32)


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker (-m unit)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if INFRASTRUCTURE_FIXTURES.isdisjoint(fixtures) and not any(
            item.get_closest_marker(name) for name in NOT_UNIT_MARKERS
        ):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def infra_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tally-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def kafka_bootstrap(infra_tmp: Path) -> Iterator[str]:
    with ExitStack() as stack:
        bootstrap = _broker(stack, infra_tmp)
        infra.run_sync(ensure_topics(bootstrap))
        yield bootstrap


@pytest.fixture(scope="session")
def pg_server_url(infra_tmp: Path) -> Iterator[str]:
    with ExitStack() as stack:
        yield _pg_server(stack, infra_tmp)


@pytest.fixture(scope="session")
def make_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory: a new empty database on the session's server; all are dropped at session end."""
    created: list[str] = []

    def _make() -> str:
        name = f"tally_t_{uuid.uuid4().hex[:12]}"
        url = infra.create_database(pg_server_url, name)
        created.append(name)
        return url

    yield _make
    for name in created:
        infra.drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def database_url(make_database: Callable[[], str]) -> str:
    """One fresh database for the whole session (services' schemas are migrated into it by their fixtures)."""
    return make_database()


@pytest.fixture
def project_id() -> str:
    """A project id no other test uses, so tests sharing the broker and database never see each other's data."""
    return f"p-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def identity_db(database_url: str) -> str:
    """The session database with the identity schema migrated."""
    from tally_shared.identity.store import MIGRATIONS, SCHEMA
    from tally_shared.migrations import upgrade

    upgrade(MIGRATIONS, database_url, SCHEMA)
    return database_url


@pytest.fixture
def api_key(identity_db: str, project_id: str) -> tuple[str, str]:
    """A project (``project_id``) with one API key pair: (public key, secret key)."""
    return infra.run_sync(create_project_with_key(identity_db, project_id))


async def create_project_with_key(database_url: str, project_id: str) -> tuple[str, str]:
    from tally_shared.db import make_engine
    from tally_shared.identity.store import IdentityStore

    engine = make_engine(database_url, pool_size=1)
    try:
        store = IdentityStore(engine)
        await store.create_project(project_id, project_id)
        return await store.create_api_key(project_id)
    finally:
        await engine.dispose()


def basic_auth(public_key: str, secret_key: str) -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class StackHandle:
    """What the cross-service tests get: the running system and a project to use."""

    def __init__(self, stack: object, *, base_url: str, console_url: str, project_id: str, public_key: str,
                 secret_key: str, admin_email: str, admin_password: str, database_url: str,
                 kafka_bootstrap: str, log_dir: Path) -> None:
        self.stack = stack
        self.base_url = base_url
        self.console_url = console_url
        self.project_id = project_id
        self.public_key = public_key
        self.secret_key = secret_key
        self.admin_email = admin_email
        self.admin_password = admin_password
        self.database_url = database_url
        self.kafka_bootstrap = kafka_bootstrap
        self.log_dir = log_dir

    @property
    def auth(self) -> tuple[str, str]:
        return (self.public_key, self.secret_key)


ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


async def project_admin(database_url: str, project: str, email: str, password: str) -> tuple[str, str]:
    """A project with an admin member and one API key pair: (public key, secret key)."""
    from tally_shared.db import make_engine
    from tally_shared.identity.store import IdentityStore

    engine = make_engine(database_url, pool_size=1)
    try:
        store = IdentityStore(engine)
        await store.create_project(project, project)
        user = await store.create_user(email, password, "Test Admin")
        await store.add_member(user.id, project, "admin")
        return await store.create_api_key(project)
    finally:
        await engine.dispose()
