"""The `tally up` gateway alone: CPU per proxied request, throughput, latency.

Starts a trivial upstream (a raw asyncio HTTP/1.1 server in its own process, answering a small JSON body once it
has read the request body) as every service, the gateway (``python -m tally_cli.gateway``) in front of it, and
drives N POSTs of a ~300 KB body (the size of a 100-span OTLP request) to ``/api/public/otel/v1/traces`` over 4
keep-alive connections. Prints req/s, p50/p99 latency and the gateway's user+system CPU per request (and per span,
at 100 spans a request).

    .venv/bin/python bench/gateway.py                 # 2,000 requests
    .venv/bin/python bench/gateway.py -n 5000 --body-kb 300 --connections 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))
sys.path.insert(0, str(ROOT / "cli"))

from tally_cli.routes import SERVICES, env_name  # noqa: E402
from tally_shared.infra import free_port, wait_for_port  # noqa: E402

UPSTREAM_BODY = b'{"partialSuccess":{}}'
UPSTREAM_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                     b"server: upstream\r\ncontent-length: " + str(len(UPSTREAM_BODY)).encode() + b"\r\n\r\n"
                     + UPSTREAM_BODY)


async def _upstream_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            writer.write(UPSTREAM_RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve_upstream(port: int) -> None:
    server = await asyncio.start_server(_upstream_conn, "127.0.0.1", port, limit=1 << 20)
    async with server:
        await server.serve_forever()


async def _client(port: int, body: bytes, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    head = (f"POST /api/public/otel/v1/traces HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/x-protobuf\r\nauthorization: Basic cGs6c2s=\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    for _ in range(count):
        start = time.perf_counter()
        writer.write(head)
        writer.write(body)
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200"), response
        lowered = response.lower()
        if b"content-length:" in lowered:
            length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        else:  # chunked
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        latencies.append(time.perf_counter() - start)
    writer.close()


async def _drive(port: int, body: bytes, n: int, connections: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    per = n // connections
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, body, per, latencies) for _ in range(connections)))
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="requests (default 2000)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--body-kb", type=int, default=300)
    parser.add_argument("--spans", type=int, default=100, help="spans a request stands for (per-span figure)")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(_serve_upstream(args.upstream))
        return

    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port)])
    env = {**os.environ, "TALLY_GATEWAY_PORT": str(gw_port),
           **{f"TALLY_{env_name(s)}_URL": f"http://127.0.0.1:{up_port}" for s in SERVICES}}
    gateway = subprocess.Popen([sys.executable, "-m", "tally_cli.gateway"], env=env)
    try:
        wait_for_port("127.0.0.1", up_port)
        wait_for_port("127.0.0.1", gw_port)
        body = os.urandom(args.body_kb * 1024)
        asyncio.run(_drive(gw_port, body, 100, args.connections))  # warm up
        proc = psutil.Process(gateway.pid)
        before = proc.cpu_times()
        elapsed, latencies = asyncio.run(_drive(gw_port, body, args.n, args.connections))
        after = proc.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        done = len(latencies)
        latencies.sort()
        print(f"{done} requests of {args.body_kb} KB over {args.connections} connections in {elapsed:.2f} s "
              f"(load average {os.getloadavg()[0]:.1f})")
        print(f"  {done / elapsed:,.0f} req/s, latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
              f"p99 {latencies[int(done * 0.99) - 1] * 1000:.2f} ms")
        print(f"  gateway CPU {cpu / done * 1e6:,.0f} µs/request (user {(after.user - before.user) / done * 1e6:,.0f}"
              f", system {(after.system - before.system) / done * 1e6:,.0f}), "
              f"{cpu / done / args.spans * 1e6:.1f} µs/span at {args.spans} spans a request")
    finally:
        for p in (gateway, upstream):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
