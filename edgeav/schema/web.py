"""`daemon.web:` section: the web view on the unit (edgeav.runtime.web), also what `edgeav serve` checks its flags by."""

from __future__ import annotations

import ipaddress

from pydantic import Field, model_validator

from edgeav.schema.base import Section

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback_host(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_web_access(host: str, password_file: str | None, option: str = "web.password_file") -> None:
    """Binding anywhere but loopback needs a password (or token): ValueError with one line otherwise, naming
    `option` (the YAML key, or `edgeav serve`'s flag) as the way to give one."""
    if not is_loopback_host(host) and not password_file:
        raise ValueError(
            f"the web view on {host} (not loopback) needs a password: set {option} to a file holding it, "
            "or bind 127.0.0.1"
        )


class WebConfig(Section):
    """Detections with photo, spectrogram and sound, reviews, charts and the unit's live state, served by the daemon
    (the same app as `edgeav serve`; extra `web`: Flask + waitress)."""

    enabled: bool = Field(False, description="Serve the web view from the daemon.")
    host: str = Field(
        "127.0.0.1",
        description="Address to bind; 127.0.0.1 keeps it on the unit. Any other address needs password_file.",
    )
    port: int = Field(8080, ge=0, le=65_535, description="TCP port; 0 = any free port (logged), port.")
    password_file: str | None = Field(
        None,
        description="File holding the password (also accepted as a bearer token, `Authorization: Bearer ...`); "
        "required when host is not loopback; never put the password itself in the YAML.",
    )
    threads: int = Field(4, ge=1, le=64, description="Requests served at once (waitress threads), threads.")
    page_rows: int = Field(50, ge=5, le=500, description="Detections per page of the detections list, rows.")

    @model_validator(mode="after")
    def _check(self) -> WebConfig:
        if self.enabled:
            check_web_access(self.host, self.password_file)
        return self


__all__ = ["WebConfig", "is_loopback_host", "check_web_access"]
