"""libpq's TLS options in DATABASE_URL reach every connection (SQLAlchemy engines, migrations, plain asyncpg)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tally_shared.db import SSL_MODES, async_url, connect_args, make_engine, ping, plain_url, ssl_argument
from tally_shared.identity.store import MIGRATIONS as IDENTITY_MIGRATIONS
from tally_shared.migrations import upgrade

URL = "postgresql://u:p@db.example:5432/tally"
SYSTEM_ROOTS = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("cert")
    cert, key = d / "client.crt", d / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tally", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_a_url_without_tls_options_keeps_the_driver_default() -> None:
    assert ssl_argument(URL) is None
    settings = {"application_name": "x"}
    assert connect_args(URL, server_settings=settings) == {"server_settings": settings}


@pytest.mark.parametrize("mode", SSL_MODES)
def test_each_libpq_mode_becomes_asyncpgs_mode_of_that_name(mode: str) -> None:
    assert ssl_argument(f"{URL}?sslmode={mode}") == mode
    assert connect_args(f"{URL}?sslmode={mode}")["ssl"] == mode


def test_sqlalchemy_spelling_ssl_is_read_as_sslmode() -> None:
    assert ssl_argument(f"{URL}?ssl=require") == "require"
    assert plain_url("postgresql+asyncpg://u@h/db?ssl=verify-full") == "postgresql://u@h/db?sslmode=verify-full"


def test_an_unknown_mode_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="sslmode='required'"):
        ssl_argument(f"{URL}?sslmode=required")


def test_tls_options_leave_the_sqlalchemy_url_and_other_options_stay() -> None:
    url = f"{URL}?sslmode=verify-full&sslrootcert=/r.crt&sslcert=/c.crt&sslkey=/c.key&connect_timeout=5"
    assert async_url(url) == "postgresql+asyncpg://u:p@db.example:5432/tally?connect_timeout=5"
    # libpq clients (asyncpg with the DSN) read them themselves, so they stay there.
    assert "sslmode=verify-full" in plain_url(url) and "sslrootcert=%2Fr.crt" in plain_url(url)


@pytest.mark.parametrize("mode, hostname, verified", [
    ("verify-full", True, True), ("verify-ca", False, True), ("require", False, True),
])
def test_a_root_certificate_verifies_the_server(mode: str, hostname: bool, verified: bool) -> None:
    context = ssl_argument(f"{URL}?sslmode={mode}&sslrootcert={SYSTEM_ROOTS}")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is hostname
    assert (context.verify_mode == ssl.CERT_REQUIRED) is verified
    assert context.cert_store_stats()["x509_ca"] > 0


@pytest.mark.parametrize("mode", ["require", "prefer"])
def test_a_client_certificate_is_presented_and_makes_tls_required(mode: str, client_cert: tuple[str, str]) -> None:
    cert, key = client_cert
    context = ssl_argument(f"{URL}?sslmode={mode}&sslcert={cert}&sslkey={key}")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_a_missing_root_certificate_file_fails_at_once() -> None:
    with pytest.raises(FileNotFoundError):
        ssl_argument(f"{URL}?sslmode=verify-full&sslrootcert=/nonexistent/root.crt")


# The local server has no TLS: require must fail, never connect in plain text; disable and prefer connect.


async def test_sslmode_require_against_a_server_without_tls_fails(database_url: str) -> None:
    engine = make_engine(f"{database_url}?sslmode=require", pool_size=1)
    try:
        with pytest.raises(ConnectionError, match="SSL"):
            await ping(engine)
    finally:
        await engine.dispose()
    with pytest.raises(ConnectionError, match="SSL"):
        await asyncpg.connect(plain_url(f"{database_url}?sslmode=require"))


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_modes_that_allow_plain_text_connect(database_url: str, mode: str) -> None:
    engine = make_engine(f"{database_url}?sslmode={mode}", pool_size=1)
    try:
        await ping(engine)
    finally:
        await engine.dispose()


def test_migrations_honour_sslmode(database_url: str) -> None:
    with pytest.raises(ConnectionError, match="SSL"):
        upgrade(Path(IDENTITY_MIGRATIONS), f"{database_url}?sslmode=require", "identity")
