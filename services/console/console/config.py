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
    session_cookie: str = "tally_session"
    session_max_age_seconds: int = 12 * 3600
    # Set on deployments served over HTTPS so the session cookie is never sent in clear.
    secure_cookies: bool = False
    # Content longer than this is folded (shown collapsed with a preview).
    fold_chars: int = Field(default=1200, ge=100)
    page_size: int = Field(default=50, ge=5, le=500)
