"""``python -m queue_router serve`` | ``python -m queue_router migrate``."""

from __future__ import annotations

import sys

from queue_router import MIGRATIONS, SCHEMA
from queue_router.config import Settings
from tally_shared.migrations import upgrade
from tally_shared.service import serve


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    settings = Settings()
    if command == "migrate":
        upgrade(MIGRATIONS, settings.database_url, SCHEMA)
        return 0
    if command == "serve":
        from queue_router.entrypoints.app import create_app

        serve(create_app(settings), settings)
        return 0
    print(f"usage: python -m queue_router [serve|migrate], not {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
