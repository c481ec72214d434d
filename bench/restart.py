"""Restart to first 2xx: SIGKILL each service of an idle stack in turn and time, from the kill, the first 2xx of
a call that needs its own HTTP API (and database), then its readiness (/readyz: broker connected, consumers
started). The stack's supervisor does the restarting, as under ``tally up``.

Starts its own Tansu broker; uses DATABASE_URL (or the local server on 127.0.0.1:5432) in a fresh database that it
drops at the end.

    .venv/bin/python bench/restart.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import httpx

from tally_cli.routes import DEFAULT_PORTS
from tally_cli.stack import STABLE_AFTER, Stack, StackConfig
from tally_shared import infra
from tally_shared.testing.plugin import create_project_with_key

SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROBES = {
    "ingest": ("POST", "/api/public/ingestion"),
    "scoring": ("GET", "/api/public/score-configs"),
    "queue-router": ("GET", "/api/public/annotation-queues"),
    "projections": ("GET", "/api/public/traces?limit=1"),
}


def first_2xx(client: httpx.Client, url: str, method: str, path: str, since: float) -> float:
    while True:
        try:
            r = client.request(method, url + path, json={"batch": []} if method == "POST" else None)
            if r.status_code < 300:
                return time.monotonic() - since
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = infra.free_port()
    broker = infra.start_tansu(port)
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    db = infra.create_database(SERVER, name)
    config = StackConfig(database_url=db, kafka_bootstrap=f"127.0.0.1:{port}", secret_key=uuid.uuid4().hex,
                         ports={s: infra.free_port() for s in DEFAULT_PORTS}, group_suffix="-bench")
    stack = Stack(config, announce=lambda line: None)
    try:
        stack.prepare()
        stack.start(timeout=180)
        auth = infra.run_sync(create_project_with_key(db, "bench"))
        with httpx.Client(auth=auth, timeout=2) as client:
            for r in range(args.rounds):
                if r:
                    time.sleep(STABLE_AFTER)  # so every restart starts from the first backoff
                for svc, (method, path) in PROBES.items():
                    t0 = time.monotonic()
                    stack.kill(svc)
                    http = first_2xx(client, config.url(svc), method, path, t0)
                    stack.wait_healthy([svc], 120)
                    ready = time.monotonic() - t0
                    print(f"{svc:<13} restart to first 2xx {http:5.1f} s   to ready {ready:5.1f} s", flush=True)
    finally:
        stack.stop(drain=False)
        infra.stop_process(broker)
        infra.drop_database(SERVER, name)


if __name__ == "__main__":
    main()
