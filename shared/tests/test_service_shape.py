"""The service shell without a broker or database: lifecycle hooks in order, the typed container through
``provide``, request metrics by route template, trace ids in the log context, JSON and text log lines."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends

from tally_shared import logs
from tally_shared.service import Container, create_app, provide
from tally_shared.settings import ServiceSettings


@dataclass(kw_only=True)
class Shop(Container):
    greeting: str
    calls: list[str] = field(default_factory=list)

    def checks(self):  # type: ignore[no-untyped-def]
        async def fine() -> None:
            return None

        return {"stock": fine}

    def background(self):  # type: ignore[no-untyped-def]
        async def job() -> None:
            self.calls.append("background")

        return [job]

    async def close(self) -> None:
        self.calls.append("close")


ShopDep = Annotated[Shop, Depends(provide(Shop))]
router = APIRouter()


@router.get("/items/{item_id}")
async def item(item_id: str, shop: ShopDep) -> dict[str, str]:
    logging.getLogger("shop").info("looked at %s", item_id)
    return {"greeting": shop.greeting, "item": item_id}


def _settings() -> ServiceSettings:
    return ServiceSettings(secret_key="s" * 32)


async def test_lifecycle_container_and_request_metrics() -> None:
    shop = Shop(name="shop", settings=_settings(), greeting="hi")

    async def up() -> None:
        shop.calls.append("startup")

    async def down1() -> None:
        shop.calls.append("shutdown1")

    async def down2() -> None:
        shop.calls.append("shutdown2")

    app = create_app(shop, title="shop", routers=[router], on_startup=[up], on_shutdown=[down1, down2])
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/items/42")
            assert r.json() == {"greeting": "hi", "item": "42"}
            await c.get("/items/43")
            assert (await c.get("/nowhere")).status_code == 404
            ready = await c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"stock": "ok"}
            metrics = (await c.get("/metrics")).text
    assert 'tally_http_requests_total{method="GET",route="/items/{item_id}",status="200"} 2.0' in metrics
    assert 'tally_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in metrics
    assert 'tally_http_request_seconds_count{method="GET",route="/items/{item_id}"} 2.0' in metrics
    assert shop.calls == ["startup", "background", "shutdown2", "shutdown1", "close"]


def _capture(fmt: str) -> tuple[io.StringIO, logging.Handler]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.formatter("shop", fmt))
    logging.getLogger("shop").addHandler(handler)
    logging.getLogger("shop").setLevel(logging.INFO)
    return buf, handler


async def test_request_logs_carry_the_trace_id_of_traceparent() -> None:
    buf, handler = _capture("json")
    try:
        app = create_app(Shop(name="shop", settings=_settings(), greeting="hi"), title="shop", routers=[router])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            await c.get("/items/1", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
            await c.get("/items/2")
    finally:
        logging.getLogger("shop").removeHandler(handler)
    first, second = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert (first["service"], first["logger"], first["level"], first["message"]) == (
        "shop", "shop", "info", "looked at 1")
    assert len(second["trace_id"]) == 32 and second["trace_id"] != first["trace_id"]


def test_json_and_text_lines_name_the_context() -> None:
    buf, handler = _capture("json")
    try:
        with logs.log_context(consumer="g1", event_id="e-1"):
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("shop").exception("failed")
        logging.getLogger("shop").info("after", extra={"batch": 3})
    finally:
        logging.getLogger("shop").removeHandler(handler)
    failed, after = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert failed["consumer"] == "g1" and failed["event_id"] == "e-1" and "ValueError: boom" in failed["exception"]
    assert "consumer" not in after and after["batch"] == 3

    buf, handler = _capture("text")
    try:
        with logs.log_context(consumer="g1"):
            logging.getLogger("shop").warning("plain")
    finally:
        logging.getLogger("shop").removeHandler(handler)
    line = buf.getvalue().strip()
    assert line.endswith("shop WARNING plain [consumer=g1]")


def test_log_format_setting() -> None:
    import os

    os.environ["TALLY_LOG_FORMAT"] = "text"
    try:
        assert _settings().log_format == "text"
    finally:
        del os.environ["TALLY_LOG_FORMAT"]
    assert _settings().log_format == "json"


async def test_openapi_page_and_document_under_the_services_prefix() -> None:
    # /docs is the same path in every service; behind one base URL each is reached as /api/docs/<service>.
    app = create_app(Shop(name="shop", settings=_settings(), greeting="hi"), title="shop", routers=[router])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        page = await c.get("/api/docs/shop")
        document = await c.get("/api/docs/shop/openapi.json")
        assert (await c.get("/openapi.json")).json() == document.json()
    assert page.status_code == 200 and "/api/docs/shop/openapi.json" in page.text
    assert "/items/{item_id}" in document.json()["paths"]
    assert not any(p.startswith("/api/docs") for p in document.json()["paths"])
    hidden = create_app(Shop(name="quiet", settings=_settings(), greeting="hi"), title="quiet", docs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hidden), base_url="http://t") as c:
        assert (await c.get("/api/docs/quiet")).status_code == 404
