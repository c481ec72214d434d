"""``python -m ingest serve | migrate``."""

import sys

from ingest import MIGRATIONS, SCHEMA
from ingest.config import Settings
from tally_shared.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli("ingest", argv, Settings, app="ingest.bootstrap:create_app", migrations=MIGRATIONS,
                   schema=SCHEMA)


if __name__ == "__main__":
    sys.exit(main())
