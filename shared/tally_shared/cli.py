"""``python -m <service> serve | migrate [| ...]``, the same for every service.

Kept light on imports: ``migrate`` should not pay for the web app, ``serve`` should not pay for Alembic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tally_shared.settings import ServiceSettings, settings_error


def run_cli(
    prog: str,
    argv: Sequence[str] | None,
    settings_cls: Callable[[], ServiceSettings],
    *,
    app: str,
    migrations: Path | None = None,
    schema: str | None = None,
    extra: Mapping[str, Callable[[Any], int]] | None = None,
) -> int:
    """``app`` is ``"module:factory"``, a function of the settings returning the FastAPI app."""
    extra = extra or {}
    parser = argparse.ArgumentParser(prog=f"python -m {prog}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate", *extra])
    args = parser.parse_args(argv)
    try:
        settings = settings_cls()
    except ValidationError as exc:
        # One clear line instead of a traceback, e.g. when TALLY_SECRET_KEY is missing: the service does not start.
        print(f"{prog}: cannot start: {settings_error(exc)}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        if migrations is None or schema is None:
            print(f"{prog}: no schema of its own, nothing to migrate")
            return 0
        from tally_shared.migrations import upgrade

        upgrade(migrations, settings.database_url, schema)
        return 0
    if args.command == "serve":
        from tally_shared.service import serve

        module, _, attr = app.partition(":")
        serve(getattr(importlib.import_module(module), attr)(settings), settings)
        return 0
    return extra[args.command](settings)
