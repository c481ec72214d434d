#!/usr/bin/env python3
"""Tally's two commands, on a machine with nothing but Python 3.11+:

    python3 dev.py up      # set up, then bring the whole system up with demo data (tally up)
    python3 dev.py test    # set up, then run the whole test suite (lint, types, tests)
    python3 dev.py test --unit   # set up, then only the unit tier (pytest -m unit: no broker, database or processes)

Setup is a virtualenv in .venv with uv, synced from uv.lock. Extra arguments go to `tally up` or pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"


def run(*cmd: str | Path, **kw: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)  # type: ignore[call-overload]


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (this script may run on an older python3)
        sys.exit(f"Tally needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print("creating .venv", flush=True)
        run(sys.executable, "-m", "venv", VENV)
    if not (BIN / "uv").exists():
        run(BIN / "python", "-m", "pip", "install", "--quiet", "uv")
    run(BIN / "uv", "sync", "--all-packages", "--locked", "--quiet",
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV)})


def ensure_debian_packages() -> None:
    """Debian packages some tests drive: Chromium for the browser tests (no browser download is possible in CI),
    nginx for the compose routing tests (deploy/nginx.conf in front of the services)."""
    wanted = {"chromium": Path("/usr/bin/chromium"), "nginx": Path("/usr/sbin/nginx")}
    missing = [pkg for pkg, binary in wanted.items() if not binary.exists()]
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print(f"installing Debian's {' and '.join(missing)} for the tests", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env,
            stdout=subprocess.DEVNULL)
    else:
        print(f"warning: {', '.join(missing)} missing and cannot be installed here (no apt-get as root); "
              "browser tests will fail and the nginx routing tests will skip", flush=True)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("up", "test"):
        sys.exit(__doc__)
    command, extra = sys.argv[1], sys.argv[2:]
    setup()
    if command == "up":
        os.execv(BIN / "tally", [str(BIN / "tally"), "up", *extra])
    if "--unit" in extra:
        extra.remove("--unit")
        os.execv(BIN / "pytest", [str(BIN / "pytest"), "-m", "unit", *extra])
    ensure_debian_packages()
    print("ruff", flush=True)
    run(BIN / "ruff", "check", ".")
    print("mypy", flush=True)
    run(BIN / "mypy", "shared/tally_shared", "cli/tally_cli", *sorted(str(p) for p in ROOT.glob("services/*/*/")
                                                                     if (p / "__init__.py").exists()))
    os.execv(BIN / "pytest", [str(BIN / "pytest"), *extra])


if __name__ == "__main__":
    main()
