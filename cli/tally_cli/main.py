"""``tally``: bring the whole system up, prepare a database and broker, manage keys and users."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

from tally_cli.routes import DEFAULT_PORTS, env_name
from tally_cli.stack import Stack, StackConfig
from tally_shared import infra
from tally_shared.db import make_engine
from tally_shared.identity.store import ROLES, IdentityStore

T = TypeVar("T")


def tally_home() -> Path:
    return Path(os.environ.get("TALLY_HOME", ".tally")).resolve()


def _secret_key(home: Path) -> str:
    if os.environ.get("TALLY_SECRET_KEY"):
        return os.environ["TALLY_SECRET_KEY"]
    path = home / "secret-key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _secret_key_path(home: Path) -> Path | None:
    """Where ``tally up``'s generated key is kept (None when TALLY_SECRET_KEY came from the environment)."""
    return None if os.environ.get("TALLY_SECRET_KEY") else home / "secret-key"


STACK_RECORD = "stack.json"


def write_stack_record(home: Path, config: StackConfig) -> Path:
    """While ``tally up`` runs: where its broker and database are, so other commands (``tally projections
    rebuild``) find them without any environment. Readable by the owner only: the database URL may hold a
    password."""
    key_path = _secret_key_path(home)
    record = {
        "pid": os.getpid(),
        "kafka_bootstrap_servers": config.kafka_bootstrap,
        "database_url": config.database_url,
        "secret_key_path": str(key_path) if key_path else None,
        "base_url": config.base_url,
    }
    path = home / STACK_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path


def read_stack_record(home: Path) -> dict[str, str] | None:
    """The running ``tally up``'s record, or None if there is none or its process is gone."""
    path = home / STACK_RECORD
    try:
        record = json.loads(path.read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(record)


def _database_url(home: Path) -> tuple[str, bool]:
    """DATABASE_URL, or the embedded PostgreSQL keeping its data under TALLY_HOME (survives restarts)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], False
    print("starting embedded PostgreSQL (data in %s)" % (home / "pgdata"), flush=True)
    return infra.embedded_postgres_url(home / "pgdata"), True


def cmd_up(args: argparse.Namespace) -> int:
    home = tally_home()
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    broker_proc = None
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    else:
        port = args.broker_port or infra.free_port()
        print(f"starting embedded Kafka-compatible broker (Tansu) on 127.0.0.1:{port}", flush=True)
        broker_proc = infra.start_tansu(port, log_path=home / "tansu.log")
        bootstrap = f"127.0.0.1:{port}"
    database_url, embedded_pg = _database_url(home)
    ports = {svc: int(os.environ.get(f"TALLY_{env_name(svc)}_PORT", port))
             for svc, port in DEFAULT_PORTS.items()}
    if args.port:
        ports["gateway"] = args.port
    config = StackConfig(database_url=database_url, kafka_bootstrap=bootstrap, secret_key=_secret_key(home),
                         host=args.host, ports=ports, log_dir=logs, status_file=home / "supervisor.json")
    if not args.no_demo:
        from tally_cli.demo import DEMO_PASSWORD, DEMO_USERS

        config.extra_env["TALLY_CONSOLE_DEMO_HINT"] = (
            f"Demo: sign in as {DEMO_USERS[0][0]} (team lead) or {DEMO_USERS[1][0]} (reviewer), "
            f"password {DEMO_PASSWORD}."
        )
    stack = Stack(config)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("creating topics and applying migrations", flush=True)
        stack.prepare()
        print("starting services", flush=True)
        stack.start()
        demo = None
        if not args.no_demo:
            from tally_cli.demo import ensure_demo

            demo = ensure_demo(config.base_url, database_url, home)
        write_stack_record(home, config)
        _print_banner(config, demo, logs)
        stopping.wait()
        print("\nstopping: closing intake, waiting for every consumer to catch up", flush=True)
        stack.stop(drain=True)
        print("all services stopped", flush=True)
    finally:
        for record in (STACK_RECORD, "supervisor.json"):
            with contextlib.suppress(OSError):
                (home / record).unlink()
        stack.stop(drain=False)
        if broker_proc is not None:
            infra.stop_process(broker_proc)
        if embedded_pg:
            infra.stop_embedded_postgres(home / "pgdata")
    return 0


def _print_banner(config: StackConfig, demo: dict[str, str] | None, logs: Path) -> None:
    lines = [
        "",
        "Tally is up.",
        f"  Base URL (APIs and console): {config.base_url}",
        f"  Console:                     {config.base_url}/",
        f"  Health:                      {config.base_url}/api/public/health",
        f"  OTLP/gRPC (own port):        {config.host}:{config.ports['ingest-grpc']}",
    ]
    for svc in ("ingest", "queue-router", "scoring", "projections", "console"):
        lines.append(f"  {svc:<13} {config.url(svc)}  (OpenAPI: {config.url(svc)}/docs, metrics: /metrics)")
    if demo:
        lines += [
            f"  Demo project: {demo['project_id']}",
            f"  Demo sign-in: {demo['email']} / {demo['password']}",
            f"  Demo API keys: public {demo['public_key']}  secret {demo['secret_key']}",
            f"  Try: curl -u {demo['public_key']}:{demo['secret_key']} {config.base_url}/api/public/traces",
        ]
    lines += [f"  Logs: {logs}", "Press Ctrl-C to stop (waits until every consumer has caught up).", ""]
    print("\n".join(lines), flush=True)


def cmd_init(_: argparse.Namespace) -> int:
    """Topics and the identity schema (each service migrates its own schema at start in compose)."""
    from tally_shared.identity.store import MIGRATIONS, SCHEMA
    from tally_shared.messaging import ensure_topics
    from tally_shared.migrations import upgrade

    asyncio.run(ensure_topics(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")))
    upgrade(MIGRATIONS, _require_db(), SCHEMA)
    print("topics created, identity migrated")
    return 0


def _require_db() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        home = tally_home()
        if (home / "pgdata").exists():
            return infra.embedded_postgres_url(home / "pgdata")
        raise SystemExit("set DATABASE_URL (or run `tally up` once to create the embedded database)")
    return url


def _store_call(coro_factory: Callable[[IdentityStore], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = make_engine(_require_db(), pool_size=1)
        try:
            return await coro_factory(IdentityStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def go(store: IdentityStore) -> tuple[str, str]:
        await store.create_project(args.project, args.name or args.project)
        return await store.create_api_key(args.project, note=args.note)

    public, secret = _store_call(go)
    if args.json:
        print(json.dumps({"project": args.project, "public_key": public, "secret_key": secret}))
    else:
        print(f"project:    {args.project}\npublic key: {public}\nsecret key: {secret}\n"
              "The secret is shown once; Tally keeps only its hash.")
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    async def go(store: IdentityStore) -> str:
        await store.create_project(args.project, args.project)
        user = await store.create_user(args.email, args.password, args.name)
        await store.add_member(user.id, args.project, args.role)
        return user.id

    print(_store_call(go))
    return 0


def service_env() -> dict[str, str]:
    """The environment for a one-off service command: the process's own, completed from the running
    ``tally up`` (its broker, database and secret key) where KAFKA_BOOTSTRAP_SERVERS or DATABASE_URL is unset."""
    env = dict(os.environ)
    if env.get("KAFKA_BOOTSTRAP_SERVERS") and env.get("DATABASE_URL"):
        return env
    record = read_stack_record(tally_home())
    if record is None:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, or start `tally up` first "
                         f"(it records where its broker and database are in {tally_home() / STACK_RECORD})")
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", record["kafka_bootstrap_servers"])
    env.setdefault("DATABASE_URL", record["database_url"])
    if not env.get("TALLY_SECRET_KEY") and record.get("secret_key_path"):
        env["TALLY_SECRET_KEY"] = Path(record["secret_key_path"]).read_text().strip()
    return env


def cmd_projections(args: argparse.Namespace) -> int:
    return subprocess.call([sys.executable, "-m", "projections", args.action], env=service_env())


def cmd_dead_letters(args: argparse.Namespace) -> int:
    # Like the rebuild, it finds a running `tally up`'s broker and database; help needs neither.
    env = None if {"-h", "--help"} & set(args.rest) else service_env()
    return subprocess.call([sys.executable, "-m", "projections", "dead-letters", *args.rest], env=env)


def cmd_migrate(_: argparse.Namespace) -> int:
    from tally_cli.stack import MODULES
    from tally_shared.identity.store import MIGRATIONS, SCHEMA
    from tally_shared.migrations import upgrade

    url = _require_db()
    upgrade(MIGRATIONS, url, SCHEMA)
    env = dict(os.environ, DATABASE_URL=url)
    for svc, mod in MODULES.items():
        if svc != "console" and subprocess.call([sys.executable, "-m", mod, "migrate"], env=env) != 0:
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tally", description="Tally: human annotation for LLM and agent traces")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start broker, database, every service and the console, with demo data; "
                                   "a process that crashes is restarted")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=None, help=f"base URL port (default {DEFAULT_PORTS['gateway']})")
    up.add_argument("--broker-port", type=int, default=None)
    up.add_argument("--no-demo", action="store_true", help="do not load demo data")
    up.set_defaults(func=cmd_up)

    sub.add_parser("init", help="create topics and the identity schema").set_defaults(func=cmd_init)
    sub.add_parser("migrate", help="apply every schema's migrations").set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    kc = keys.add_parser("create", help="create a key pair for a project (creates the project if new)")
    kc.add_argument("--project", required=True)
    kc.add_argument("--name", default=None, help="project display name")
    kc.add_argument("--note", default=None)
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(func=cmd_keys_create)

    users = sub.add_parser("users", help="console users").add_subparsers(dest="users_command", required=True)
    uc = users.add_parser("create", help="create a user and add them to a project")
    uc.add_argument("--email", required=True)
    uc.add_argument("--password", required=True)
    uc.add_argument("--name", default=None)
    uc.add_argument("--project", required=True)
    uc.add_argument("--role", choices=ROLES, default="member")
    uc.set_defaults(func=cmd_users_create)

    proj = sub.add_parser("projections", help="read models (rebuild: replay the log into fresh tables and swap "
                                               "them in; uses the running `tally up` unless DATABASE_URL and "
                                               "KAFKA_BOOTSTRAP_SERVERS are set)")
    proj.add_argument("action", choices=["rebuild"])
    proj.set_defaults(func=cmd_projections)

    dead = sub.add_parser("dead-letters", add_help=False,
                          help="messages consumers refused: list, show, replay, discard (incl. those of no project)")
    dead.add_argument("rest", nargs=argparse.REMAINDER)
    dead.set_defaults(func=cmd_dead_letters)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dead-letters"]:  # its options (--help too) belong to the projections command
        raise SystemExit(cmd_dead_letters(argparse.Namespace(rest=argv[1:])))
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
