"""The web view's Flask app: live, detections, detail (photo, spectrogram, sound, scores, review), charts.

`create_app(WebSettings)` builds it over one detection log; `edgeav serve` and the daemon (`daemon.web`) serve the
same app with waitress (edgeav.runtime.web.server). The app reads the log on read-only connections and writes only
reviews (edgeav.runtime.store_reviews). Evidence is served by detection id only: the file is looked up in the
detection's row and must lie under the evidence folder; no path ever comes from a URL.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, send_file, session, url_for

from edgeav.errors import ConfigError, EdgeAVError
from edgeav.runtime.evidence import disk_free_ratio
from edgeav.runtime.store_reviews import VERDICT_TITLES, VERDICTS, clear_review, is_detection_id, set_review
from edgeav.runtime.store_schema import connect
from edgeav.runtime.web import access, queries
from edgeav.runtime.web.settings import WebSettings
from edgeav.runtime.web.spectrogram import spectrogram_svg

log = logging.getLogger(__name__)

# evidence kinds: the row's column, the file suffixes allowed, the MIME types
EVIDENCE = {
    "image": ("image_path", {".jpg": "image/jpeg"}),
    "audio": ("audio_path", {".wav": "audio/wav", ".flac": "audio/flac"}),
    "clip": ("clip_path", {".mp4": "video/mp4"}),
}
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class LogReader:
    """One read-only connection per server thread (opened on first use, kept: the schema is parsed once)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()

    def con(self) -> sqlite3.Connection:
        c = getattr(self._local, "con", None)
        if c is None:
            c = connect(self.db_path, readonly=True)
            self._local.con = c
        return c


def evidence_file(row: dict[str, Any], kind: str, root: Path) -> Path | None:
    """The evidence file of `kind` for a detection row, or None. Only `<root>/<YYYY-MM-DD>/<id><suffix>` is ever
    returned (the row names the day folder and the suffix; the name must be the detection's id), resolved inside
    `root`: a row pointing elsewhere (or a moved log) serves nothing rather than an arbitrary file."""
    col, suffixes = EVIDENCE[kind]
    stored = row.get(col)
    if not stored:
        return None
    p = Path(stored)
    if p.suffix.lower() not in suffixes or p.stem != row["id"] or not _DAY_RE.match(p.parent.name):
        return None
    base = root.resolve()
    f = (base / p.parent.name / p.name).resolve()
    if not f.is_relative_to(base) or not f.is_file():
        return None
    return f


def create_app(settings: WebSettings) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False
    reader = LogReader(Path(settings.db_path))
    access.install(app, settings.host, settings.password)
    app.jinja_env.globals.update(VERDICT_TITLES=VERDICT_TITLES, VERDICTS=VERDICTS)

    def row_or_404(did: str) -> dict[str, Any]:
        if not is_detection_id(did):
            abort(404, "no detection with that id")
        d = queries.detection(reader.con(), did)
        if d is None:
            abort(404, "no detection with that id")
        return d

    @app.errorhandler(ConfigError)
    def _bad_request(e: ConfigError) -> tuple[str, int]:
        return render_template("error.html", code=400, message=str(e)), 400

    @app.errorhandler(EdgeAVError)
    def _unavailable(e: EdgeAVError) -> tuple[str, int]:
        log.warning("web: %s", e)
        return render_template("error.html", code=503, message=str(e)), 503

    @app.errorhandler(sqlite3.DatabaseError)
    def _db_error(e: sqlite3.DatabaseError) -> tuple[str, int]:
        log.warning("web: the detection log cannot be read: %s", e)
        return render_template("error.html", code=503, message=f"the detection log cannot be read: {e}"), 503

    for code in (400, 401, 403, 404, 405, 421):

        def _http_error(e: Any, code: int = code) -> tuple[str, int]:
            return render_template("error.html", code=code, message=getattr(e, "description", str(e))), code

        app.register_error_handler(code, _http_error)

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("detections"))

    @app.get("/live")
    def live() -> str:
        return render_template("live.html", status=status_now())

    def status_now() -> dict[str, Any]:
        s: dict[str, Any] = {"source": "daemon" if settings.status else "log"}
        if settings.status is not None:
            s.update(settings.status())
        s.update(queries.log_summary(reader.con()))
        if "disk_free_percent" not in s:
            try:
                where = settings.evidence_dir if settings.evidence_dir.exists() else settings.db_path
                s["disk_free_percent"] = round(100.0 * disk_free_ratio(where), 1)
            except OSError:
                s["disk_free_percent"] = None
        return s

    @app.get("/api/status")
    def api_status() -> Response:
        return jsonify(status_now())

    @app.get("/detections")
    def detections() -> str:
        f = queries.Filters.parse(request.args)
        con = reader.con()
        page = queries.detection_page(con, f, settings.page_rows)
        return render_template("detections.html", f=f, page=page, labels=queries.labels(con))

    @app.get("/detections/<did>")
    def detail(did: str) -> str:
        d = row_or_404(did)
        have = {k: evidence_file(d, k, settings.evidence_dir) is not None for k in EVIDENCE}
        return render_template("detail.html", d=d, have=have)

    @app.get("/detections/<did>/<kind>")
    def evidence(did: str, kind: str) -> Response:
        if kind not in EVIDENCE and kind != "spectrogram.svg":
            abort(404, "no such evidence")
        d = row_or_404(did)
        if kind == "spectrogram.svg":
            f = evidence_file(d, "audio", settings.evidence_dir)
            if f is None:
                abort(404, "this detection has no audio evidence")
            resp = Response(spectrogram_svg(f), mimetype="image/svg+xml")
            resp.headers["Cache-Control"] = "private, max-age=3600"
            return resp
        f = evidence_file(d, kind, settings.evidence_dir)
        if f is None:
            abort(404, f"this detection has no {kind} evidence")
        return send_file(f, mimetype=EVIDENCE[kind][1][f.suffix.lower()], conditional=True, max_age=3600)

    @app.post("/detections/<did>/review")
    def review(did: str) -> Response:
        d = row_or_404(did)
        verdict = request.form.get("verdict", "")
        if verdict == "clear":
            clear_review(settings.db_path, d["id"])
            log.info("review of %s cleared", d["id"], extra={"fields": {"event": "review", "id": d["id"]}})
        else:
            set_review(settings.db_path, d["id"], verdict, request.form.get("reason"))
            log.info(
                "review of %s (%s): %s",
                d["id"],
                d["label"],
                verdict,
                extra={"fields": {"event": "review", "id": d["id"], "verdict": verdict}},
            )
        return redirect(url_for("detail", did=d["id"]), code=303)

    @app.get("/charts")
    def charts() -> str:
        c = queries.chart_counts(reader.con())
        top = max([max(v) for v in c["hours"].values()] + [max(v) for v in c["per_day"].values()] + [1])
        return render_template("charts.html", c=c, top=top, level=lambda n: 0 if n <= 0 else 1 + int(8 * n / top))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        nxt = request.values.get("next", "")
        nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else url_for("detections")
        if not settings.password:
            return redirect(nxt)
        error = None
        if request.method == "POST":
            if access.check_password(settings.password, request.form.get("password", "")):
                session.clear()
                session["auth"] = True
                return redirect(nxt, code=303)
            error = "wrong password"
            log.warning("web: failed login from %s", request.remote_addr)
        return render_template("login.html", error=error, next=nxt), (401 if error else 200)

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("login"), code=303)

    return app


__all__ = ["create_app", "WebSettings", "evidence_file", "EVIDENCE"]
