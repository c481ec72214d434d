"""``python -m scoring serve | migrate``."""

import sys

from scoring import MIGRATIONS, SCHEMA
from scoring.config import Settings
from tally_shared.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli("scoring", argv, Settings, app="scoring.entrypoints.app:create_app", migrations=MIGRATIONS,
                   schema=SCHEMA)


if __name__ == "__main__":
    sys.exit(main())
