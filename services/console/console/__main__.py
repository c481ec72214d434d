"""``python -m console serve`` runs the web app; ``python -m console migrate`` does nothing (no schema)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command == "migrate":
        print("console: no schema of its own, nothing to migrate")
        return 0
    if command == "serve":
        from console.config import Settings
        from console.entrypoints.app import create_app
        from tally_shared.service import serve

        settings = Settings()
        serve(create_app(settings), settings)
        return 0
    print(f"usage: python -m console serve|migrate (got {command!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
