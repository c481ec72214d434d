"""python -m projections serve | migrate | rebuild | dead-letters ..."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from projections import MIGRATIONS, SCHEMA
from projections.config import Settings
from tally_shared.cli import run_cli

if TYPE_CHECKING:
    from projections.adapters.rebuild import RebuildProgress


class ProgressLine:
    """One line that updates in place on a terminal; elsewhere (a log, a pipe) a line at most every 2 s."""

    def __init__(self, out: TextIO, interval: float = 2.0) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval = 0.0 if self.tty else interval
        self.last = -interval
        self.open = False

    def update(self, p: RebuildProgress) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        if self.tty:
            self.out.write("\r\x1b[2K" + p.line())
            self.open = True
        else:
            self.out.write(p.line() + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        if self.open:
            self.out.write("\n")
            self.open = False
        self.out.write(text + "\n")
        self.out.flush()


def _rebuild(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from projections.adapters.rebuild import rebuild
    from projections.bootstrap import tune_gc

    tune_gc()  # the rebuild applies the whole log: the live service's collector settings pay off most here
    from tally_shared.db import make_engine

    line = ProgressLine(sys.stdout)

    async def run() -> None:
        engine = make_engine(settings.database_url, pool_size=4, application_name="tally-projections-rebuild")
        try:
            await rebuild(engine, settings.kafka_bootstrap_servers, live_schema=SCHEMA,
                          batch_size=settings.rebuild_batch_size, progress=line.say, on_progress=line.update)
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
