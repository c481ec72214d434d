"""``python -m ingest serve | migrate``."""

from __future__ import annotations

import sys

from ingest import MIGRATIONS, SCHEMA
from ingest.config import Settings


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    settings = Settings()
    if command == "migrate":
        from tally_shared.migrations import upgrade

        upgrade(MIGRATIONS, settings.database_url, SCHEMA)
        return 0
    if command == "serve":
        from ingest.entrypoints.app import create_app
        from tally_shared.service import serve

        serve(create_app(settings), settings)
        return 0
    print(f"usage: python -m ingest [serve|migrate], not {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
