"""An engine without the pre-ping (a consumer's): a connection the server dropped surfaces as a transient error
(retried, never dead-lettered), and the retry gets a fresh connection."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tally_shared.db import make_engine
from tally_shared.messaging import is_deterministic


async def test_a_dropped_connection_is_a_transient_error_and_the_retry_reconnects(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=2, application_name="tally-test-no-ping", pre_ping=False)
    admin = make_engine(database_url, pool_size=1, application_name="tally-test-admin")
    try:
        async with engine.begin() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # the pooled connection is dropped by the server while it waits in the pool (a restart, an idle timeout)
        async with admin.begin() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one()
        with pytest.raises(DBAPIError) as failed:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated and not is_deterministic(failed.value)
        async with engine.begin() as conn:  # the batch's retry
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
    finally:
        await engine.dispose()
        await admin.dispose()
