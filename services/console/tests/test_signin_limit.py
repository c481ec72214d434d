"""Sign-in rate limit: per account and per client address, 429 with Retry-After, bounded memory."""

from __future__ import annotations

from fastapi.testclient import TestClient
from starlette.requests import Request

from console.application.signin_limit import Limits, SignInLimiter
from console.config import Settings
from console.entrypoints.app import create_app
from console.entrypoints.security import client_address, parse_networks
from console.testing.fakes import FakeApiFactory, FakeIdentity
from console.testing.pages import PASSWORD, csrf_of

SECRET = "s" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_an_account_is_held_after_five_failures_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    limiter = SignInLimiter(Limits(account_failures=5, address_failures=100, window_seconds=900), clock)
    for i in range(5):
        assert limiter.retry_after("Lead@T.test", f"10.0.0.{i}") is None
        limiter.failed("Lead@T.test", f"10.0.0.{i}")
        clock.now += 10
    assert limiter.retry_after(" lead@t.test", "10.9.9.9") == 900 - 50
    assert limiter.retry_after("other@t.test", "10.9.9.9") is None
    clock.now += 900 - 50
    assert limiter.retry_after("lead@t.test", "10.9.9.9") is None


def test_a_success_clears_the_account_but_not_the_address() -> None:
    limiter = SignInLimiter(Limits(account_failures=3, address_failures=4), Clock())
    for _ in range(3):
        limiter.failed("a@t.test", "10.0.0.1")
    limiter.succeeded("a@t.test")
    assert limiter.retry_after("a@t.test", "10.0.0.2") is None
    limiter.failed("b@t.test", "10.0.0.1")
    assert limiter.retry_after("c@t.test", "10.0.0.1") is not None  # the address's fourth failure


def test_a_flood_of_accounts_and_addresses_keeps_memory_bounded() -> None:
    limiter = SignInLimiter(Limits(max_tracked=100), Clock())
    for i in range(20_000):
        limiter.failed(f"user{i}@t.test", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter._accounts) == 100 and len(limiter._addresses) == 100


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "method": "POST", "path": "/login", "headers": headers, "client": (peer, 1)})


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    proxies = parse_networks("127.0.0.1, 10.0.0.0/8")
    assert client_address(_request("203.0.113.5", "198.51.100.1"), proxies) == "203.0.113.5"
    assert client_address(_request("127.0.0.1", "198.51.100.1"), proxies) == "198.51.100.1"
    # The client wrote the first entry itself; the gateway appended the address it saw.
    assert client_address(_request("127.0.0.1", "1.2.3.4, 198.51.100.1, 10.1.2.3"), proxies) == "198.51.100.1"
    assert client_address(_request("127.0.0.1", None), proxies) == "127.0.0.1"


def _app(**settings: int) -> tuple[object, FakeIdentity]:
    identity = FakeIdentity()
    for name in ("lead", "rev", "view"):
        identity.add(f"{name}@t.test", PASSWORD, "proj-a", "admin")
    app = create_app(Settings(secret_key=SECRET, **settings), api_factory=FakeApiFactory(), identity=identity)
    return app, identity


def _attempt(client: TestClient, email: str, password: str, forwarded: str | None = None):  # type: ignore[no-untyped-def]
    token = csrf_of(client.get("/login").text)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/login", data={"email": email, "password": password, "csrf": token, "next": "/"},
                       headers=headers)


def test_the_sixth_attempt_gets_429_with_retry_after_and_a_friendly_page_even_with_the_right_password() -> None:
    app, _ = _app()
    client = TestClient(app, follow_redirects=False)  # type: ignore[arg-type]
    for _ in range(5):
        assert _attempt(client, "lead@t.test", "wrong").status_code == 401
    r = _attempt(client, "lead@t.test", PASSWORD)
    assert r.status_code == 429
    assert 800 < int(r.headers["retry-after"]) <= 900
    assert "Too many failed sign-ins" in r.text and "try again in 15 minutes" in r.text
    assert "uid" not in client.cookies.get("tally_session", "")
    # Another account from the same address is not held by this one's failures.
    assert _attempt(client, "rev@t.test", PASSWORD).status_code == 303


def test_a_successful_sign_in_resets_the_account_counter() -> None:
    app, _ = _app()
    client = TestClient(app, follow_redirects=False)  # type: ignore[arg-type]
    for _ in range(4):
        assert _attempt(client, "lead@t.test", "wrong").status_code == 401
    assert _attempt(client, "lead@t.test", PASSWORD).status_code == 303
    client = TestClient(app, follow_redirects=False)  # type: ignore[arg-type]  # signed out: a new browser
    for _ in range(4):
        assert _attempt(client, "lead@t.test", "wrong").status_code == 401
    assert _attempt(client, "lead@t.test", PASSWORD).status_code == 303


def test_behind_the_trusted_gateway_each_client_address_has_its_own_count() -> None:
    app, _ = _app(signin_address_failures=3, signin_account_failures=100)
    gateway = TestClient(app, follow_redirects=False, client=("127.0.0.1", 40000))  # type: ignore[arg-type]
    for i in range(3):
        assert _attempt(gateway, f"nobody{i}@t.test", "x", forwarded="198.51.100.7").status_code == 401
    assert _attempt(gateway, "lead@t.test", PASSWORD, forwarded="198.51.100.7").status_code == 429
    assert _attempt(gateway, "lead@t.test", PASSWORD, forwarded="198.51.100.8").status_code == 303
    # A client talking to the console directly cannot pick its address with the header.
    direct = TestClient(app, follow_redirects=False, client=("203.0.113.9", 40000))  # type: ignore[arg-type]
    for i in range(3):
        assert _attempt(direct, f"nobody{i}@t.test", "x", forwarded=f"192.0.2.{i}").status_code == 401
    assert _attempt(direct, "rev@t.test", PASSWORD, forwarded="192.0.2.200").status_code == 429
