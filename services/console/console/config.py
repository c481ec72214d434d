from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tally_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_CONSOLE_", extra="ignore")

    port: int = 8105
    # The console has no consumers; the field exists because every service's settings have one.
    group_id: str = "console"
    # Where the other services' APIs answer (the gateway's base URL).
    api_url: str = "http://127.0.0.1:3000"
    api_timeout_seconds: float = 15.0
    # Shown on the sign-in page, e.g. "Demo: sign in as demo@tally.local / demo" when `tally up` loaded demo data.
    demo_hint: str | None = None
    # Name of a header an authenticating proxy sets to the signed-in person's email. Off unless set: turn it on
    # only behind a proxy that strips this header from client requests.
    trusted_user_header: str | None = None
    # Proxies whose X-Forwarded-For is believed (addresses or networks, comma-separated): the gateway. Under
    # compose the gateway is another container on the compose network, so that network must be listed.
    trusted_proxies: str = "127.0.0.1,::1"
    # Sign-in rate limit: failed attempts per account (email) and per client address within the window, after
    # which sign-in answers 429 with Retry-After until the oldest failure leaves the window.
    signin_account_failures: int = Field(default=5, ge=1)
    signin_address_failures: int = Field(default=20, ge=1)
    signin_window_seconds: int = Field(default=15 * 60, ge=1)
    session_cookie: str = "tally_session"
    session_max_age_seconds: int = 12 * 3600
    # Set on deployments served over HTTPS so the session cookie is never sent in clear.
    secure_cookies: bool = False
    # Content longer than this is folded (shown collapsed with a preview).
    fold_chars: int = Field(default=1200, ge=100)
    page_size: int = Field(default=50, ge=5, le=500)
