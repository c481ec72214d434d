"""``python -m projections dead-letters list | show | replay | discard``: the operators' view of every dead letter,
including those no project can see (the original did not say, or not validly, which project it belongs to)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from projections.adapters.queries.dead_letters import SqlDeadLetterReads, SqlDeadLetters
from projections.application import dead_letters as app_dl
from projections.application.dead_letters import Filter, Scope
from projections.config import Settings
from tally_shared.db import make_engine, make_session_factory
from tally_shared.messaging import make_broker


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m projections dead-letters",
                                description="Dead letters of every consumer (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS)")
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="dead letters, newest first (default: those of no project)")
    who = ls.add_mutually_exclusive_group()
    who.add_argument("--project", help="one project's")
    who.add_argument("--all", action="store_true", help="every project's and those of no project")
    ls.add_argument("--status", choices=["open", "replayed", "discarded", "all"], default="open")
    ls.add_argument("--reason-code")
    ls.add_argument("--consumer")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one dead letter with its original")
    show.add_argument("id", type=uuid.UUID)
    for name, what in (("replay", "republish the originals to their topics"), ("discard", "hide from the open list")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("ids", type=uuid.UUID, nargs="+")
    return p


def _settings() -> Settings:
    # This command signs nothing; it must not need the services' secret to run.
    if os.environ.get("TALLY_SECRET_KEY"):
        return Settings()
    return Settings(secret_key=secrets.token_urlsafe(32))


def _line(d: dict[str, Any]) -> str:
    reason = " ".join(str(d["reason"]).split())[:100]
    return (f"{d['id']}  {str(d['failed_at'])[:19]}  {d['project_id'] or '-':<16}  {d['consumer']:<14}  "
            f"{d['topic']:<20}  {d['reason_code']:<16}  {d['status']:<9}  {reason}")


async def _run(args: argparse.Namespace, out: Any) -> int:
    settings = _settings()
    engine = make_engine(settings.database_url, pool_size=2, application_name="tally-projections-dead-letters")
    sessions = make_session_factory(engine)
    everything = Scope(everything=True)
    try:
        if args.action == "list":
            scope = everything if args.all else Scope(project_id=args.project)
            flt = Filter(None if args.status == "all" else args.status, args.consumer, None, args.reason_code)
            async with sessions() as session:
                body = await app_dl.list_dead_letters(SqlDeadLetterReads(session), scope, flt,
                                                      limit=max(1, min(args.limit, 1000)))
            if args.json:
                out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
                return 0
            for d in body["data"]:
                out.write(_line(d) + "\n")
            counts = ", ".join(f"{k} {v}" for k, v in sorted(body["counts"]["by_reason"].items())) or "none"
            out.write(f"{len(body['data'])} of {body['meta']['total']} shown; by reason: {counts}\n")
            return 0
        if args.action == "show":
            async with sessions() as session:
                try:
                    body = await app_dl.get_dead_letter(SqlDeadLetterReads(session), everything, args.id)
                except app_dl.NotFound:
                    out.write(f"no dead letter {args.id}\n")
                    return 1
            out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
            return 0
        if args.action == "discard":
            result = await app_dl.discard(SqlDeadLetters(sessions), everything, Filter(None, ids=args.ids), actor="cli")
            out.write(f"discarded {result['discarded']}\n")
            return 0
        broker = make_broker(settings.kafka_bootstrap_servers, service="projections-cli", registry=CollectorRegistry())
        await broker.start()
        try:
            async def republish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
                await broker.publish(value, topic=topic, key=key, headers=headers)

            result = await app_dl.replay(SqlDeadLetters(sessions), republish, everything, Filter(None, ids=args.ids),
                                         actor="cli")
        finally:
            await broker.stop()
        out.write(f"replayed {result['replayed']} dead letters ({result['messages']} messages)\n")
        for s in result["skipped"]:
            out.write(f"not replayed {s['id']}: {s['reason']}\n")
        return 0 if not result["skipped"] else 1
    finally:
        await engine.dispose()


def main(argv: Sequence[str]) -> int:
    return asyncio.run(_run(_parser().parse_args(list(argv)), sys.stdout))
