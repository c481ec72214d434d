"""python -m projections serve | migrate | rebuild"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from projections import MIGRATIONS, SCHEMA
from projections.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m projections")
    parser.add_argument("command", choices=["serve", "migrate", "rebuild"])
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        from tally_shared.migrations import upgrade

        upgrade(MIGRATIONS, settings.database_url, SCHEMA)
        return 0
    if args.command == "serve":
        from projections.entrypoints.app import create_app
        from tally_shared.service import serve

        serve(create_app(settings), settings)
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
