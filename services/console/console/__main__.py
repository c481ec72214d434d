"""``python -m console serve`` runs the web app; ``python -m console migrate`` does nothing (no schema)."""

import sys

from console.config import Settings
from tally_shared.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli("console", argv, Settings, app="console.entrypoints.app:create_app")


if __name__ == "__main__":
    sys.exit(main())
