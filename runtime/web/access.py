"""Who may use the web view, and the headers every answer carries.

- Bound to loopback (the default) it needs no password, and answers only requests whose Host header names loopback
  (a web page elsewhere cannot reach it through DNS rebinding). Bound anywhere else it refuses to start without a
  password (`edgeav.schema.web.check_web_access`).
- With a password every page needs it: the login form (a signed session cookie, SameSite=Strict, HttpOnly) or
  `Authorization: Bearer <password>` for scripts.
- Every state-changing POST (a review, login, logout) carries the session's CSRF token (a hidden form field, compared
  in constant time); a POST without it is refused with 403 and changes nothing.
- Every answer: a Content-Security-Policy allowing only this origin's scripts, styles, images and media (no inline
  script), no framing, no MIME sniffing, no referrer.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Flask, Response, abort, redirect, request, session, url_for

from edgeav.schema.web import is_loopback_host

CSRF_FIELD = "csrf_token"
CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
OPEN_ENDPOINTS = ("login", "static")


def csrf_token() -> str:
    """The session's CSRF token (made on first use)."""
    tok = session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(32)
        session["csrf"] = tok
    return tok


def host_name(host_header: str) -> str:
    """The name of a Host header without its port: `127.0.0.1:8080` -> `127.0.0.1`, `[::1]:80` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


def check_password(password: str | None, given: str) -> bool:
    """`given` is the password (compared in constant time); False when there is none."""
    return bool(password) and hmac.compare_digest(given.encode(), password.encode())


def _bearer_ok(password: str | None) -> bool:
    h = request.headers.get("Authorization", "")
    return h.startswith("Bearer ") and check_password(password, h[7:].strip())


def install(app: Flask, host: str, password: str | None) -> None:
    """Hook the rules above into `app`."""
    loopback = is_loopback_host(host)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions last as long as the process
        SESSION_COOKIE_NAME="edgeav_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )

    @app.before_request
    def _gate() -> Any:
        if loopback:
            if not is_loopback_host(host_name(request.host or "")):
                abort(421, "this unit's web view answers only to its loopback address")
        if password and request.endpoint not in OPEN_ENDPOINTS:
            if not (session.get("auth") or _bearer_ok(password)):
                if request.path.startswith("/api/") or request.method != "GET" or request.endpoint == "evidence":
                    abort(401, "log in first (or send Authorization: Bearer <password>)")
                return redirect(url_for("login", next=request.full_path if request.query_string else request.path))
        if request.method == "POST" and not _bearer_ok(password):
            sent = request.form.get(CSRF_FIELD, "")
            want = session.get("csrf", "")
            if not sent or not want or not hmac.compare_digest(sent.encode(), want.encode()):
                abort(403, "the form's CSRF token is missing or stale: reload the page and try again")
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if resp.mimetype in ("text/html", "application/json"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["CSRF_FIELD"] = CSRF_FIELD
    app.jinja_env.globals["login_required"] = bool(password)


__all__ = ["install", "csrf_token", "check_password", "CSRF_FIELD", "CSP"]
