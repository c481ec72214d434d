"""python -m projections serve | migrate | rebuild | dead-letters ..."""

from __future__ import annotations

import asyncio
import logging
import sys

from projections import MIGRATIONS, SCHEMA
from projections.config import Settings
from tally_shared.cli import run_cli


def _rebuild(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from projections.adapters.rebuild import rebuild
    from tally_shared.db import make_engine

    async def run() -> None:
        engine = make_engine(settings.database_url, pool_size=4, application_name="tally-projections-rebuild")
        try:
            await rebuild(engine, settings.kafka_bootstrap_servers, live_schema=SCHEMA,
                          batch_size=settings.rebuild_batch_size, progress=print)
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["dead-letters"]:
        # its own sub-commands and options, which the shared command line does not take
        from projections.entrypoints.dead_letters_cli import main as dead_letters

        return dead_letters(args[1:])
    return run_cli("projections", argv, Settings, app="projections.entrypoints.app:create_app",
                   migrations=MIGRATIONS, schema=SCHEMA, extra={"rebuild": _rebuild})


if __name__ == "__main__":
    sys.exit(main())
