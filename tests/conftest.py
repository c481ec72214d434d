"""The cross-service tests' fixture: the whole system as real processes, started by the CLI's ``Stack``. It lives
here rather than in ``tally_shared.testing.plugin``, which every service's tests load and which must not depend on
the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tally_cli.routes import DEFAULT_PORTS
from tally_cli.stack import Stack, StackConfig
from tally_shared import infra
from tally_shared.testing.plugin import ARTIFACTS, StackHandle, project_admin


@pytest.fixture(scope="session")
def tally_stack(kafka_bootstrap: str, make_database: Callable[[], str]) -> Iterator[StackHandle]:
    """The whole system as real processes (every service and the gateway) on a fresh database, with one project,
    its API key pair, and an admin user. Started once per test session."""
    db = make_database()
    log_dir = ARTIFACTS / "stack-logs"
    ports = {svc: infra.free_port() for svc in DEFAULT_PORTS}
    config = StackConfig(database_url=db, kafka_bootstrap=kafka_bootstrap, secret_key="test-" + uuid.uuid4().hex,
                         ports=ports, log_dir=log_dir, group_suffix=f"-{uuid.uuid4().hex[:8]}")
    stack = Stack(config)
    try:
        stack.prepare()
        stack.start(timeout=120)
        project = f"e2e-{uuid.uuid4().hex[:8]}"
        email, password = f"admin-{project}@tally.test", "correct horse battery staple"
        public, secret = infra.run_sync(project_admin(db, project, email, password))
        yield StackHandle(stack, base_url=config.base_url, console_url=config.base_url + "/", project_id=project,
                          public_key=public, secret_key=secret, admin_email=email, admin_password=password,
                          database_url=db, kafka_bootstrap=kafka_bootstrap, log_dir=log_dir)
    finally:
        stack.stop(drain=False)


# Directories without a single unit test (every test there needs the whole system, a browser or its own stack):
# the unit tier (-m unit) does not import them at all, which would cost it seconds (Playwright, the Langfuse and
# OpenTelemetry SDKs) for nothing. The full suite collects them as always.
NO_UNIT_TESTS = frozenset({"browser", "compat", "faults"})


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("markexpr", "") == "unit" and collection_path.name in NO_UNIT_TESTS \
            and collection_path.parent == Path(__file__).parent:
        return True
    return None
