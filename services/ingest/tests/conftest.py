"""An ingest server for the whole test session (real broker, real identity database), served by uvicorn on a
free port so that SDKs exporting over HTTP can reach it; and a reader of what it published."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer

from ingest.bootstrap import create_app
from ingest.config import Settings
from tally_shared import infra
from tally_shared.envelope import Envelope, Payload, PoisonMessage, decode


@dataclass
class Server:
    base_url: str
    settings: Settings
    # host:port of OTLP/gRPC
    grpc_target: str = ""


class ThreadedServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=settings.host, port=settings.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("ingest server did not start")
            time.sleep(0.05)
        return Server(f"http://{self.settings.host}:{self.settings.port}", self.settings,
                      f"{self.settings.host}:{self.app.state.grpc_port}")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="session")
def ingest_server(kafka_bootstrap: str, identity_db: str) -> Iterator[Server]:
    settings = Settings(database_url=identity_db, grpc_port=0, kafka_bootstrap_servers=kafka_bootstrap,
                        host="127.0.0.1", port=infra.free_port(), max_body_bytes=2 * 1024 * 1024,
                        max_item_bytes=256 * 1024,
                        # No scoring here: a score naming a config is answered 503 (retry), never sent unchecked.
                        scoring_url=f"http://127.0.0.1:{infra.free_port()}")
    with ThreadedServer(settings) as server:
        yield server


def _envelope_of(raw: bytes | None) -> Envelope | None:
    """The envelope of a message whose payload does not decode, if it has one."""
    try:
        return Envelope.model_validate(orjson.loads(raw or b""))
    except (orjson.JSONDecodeError, ValueError):
        return None


async def read_events(bootstrap: str, topic: str, match: Callable[[Envelope], bool], *, count: int,
                      timeout: float = 20.0, settle: float = 0.0) -> list[tuple[Envelope, Payload]]:
    """Every matching event on ``topic`` from the beginning, once at least ``count`` are there (then ``settle``
    more seconds, to catch duplicates)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[tuple[Envelope, Payload]] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    try:
                        env, payload = decode(r.value)
                    except PoisonMessage:
                        # The topic is shared with other tests, some of which publish poison on purpose. Poison
                        # in an envelope this test is looking for is still an error.
                        env_only = _envelope_of(r.value)
                        if env_only is not None and match(env_only):
                            raise
                        continue
                    if match(env):
                        found.append((env, payload))
            if len(found) >= count:
                if settle_until is None:
                    settle_until = time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
        return found
    finally:
        await consumer.stop()

