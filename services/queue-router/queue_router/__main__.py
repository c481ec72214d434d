"""``python -m queue_router serve | migrate``."""

import sys

from queue_router import MIGRATIONS, SCHEMA
from queue_router.config import Settings
from tally_shared.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli("queue_router", argv, Settings, app="queue_router.entrypoints.app:create_app", migrations=MIGRATIONS,
                   schema=SCHEMA)


if __name__ == "__main__":
    sys.exit(main())
