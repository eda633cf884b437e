"""Serving the web view: waitress on a daemon thread (`WebServer`), `edgeav serve` over a log, and the daemon's
`daemon.web` (the same app, with the daemon's live state).

waitress: a pure-Python production WSGI server with a fixed thread pool (nothing to compile for an ARM unit); it is
started and stopped from our own threads, so the daemon keeps its signal handling and its shutdown order.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeav.errors import ConfigError
from edgeav.result import CommandResult

if TYPE_CHECKING:
    from flask import Flask

    from edgeav.schema.web import WebConfig

log = logging.getLogger(__name__)


def _flask_app(settings: Any) -> Flask:
    try:
        import waitress  # noqa: F401

        from edgeav.runtime.web.app import create_app
    except ImportError as e:
        raise ConfigError(
            f"the web view needs the {e.name} package: pip install 'edgeav[web]' (or set daemon.web.enabled=false)"
        ) from None
    return create_app(settings)


def read_password(path: str | None) -> str | None:
    """The password of the web view from its file (surrounding white space stripped); ConfigError if unusable."""
    if not path:
        return None
    try:
        pw = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"web password file {path}: {e.strerror or e}") from None
    if len(pw) < 8:
        raise ConfigError(f"web password file {path}: the password must have at least 8 characters")
    return pw


class WebServer:
    """The app on host:port from a daemon thread; `stop()` closes the sockets and ends the thread."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = 4) -> None:
        self.app, self.host, self.port, self.threads = app, host, port, threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebServer:
        from waitress.server import create_server

        try:
            self._server = create_server(
                self.app,
                host=self.host,
                port=self.port,
                threads=self.threads,
                ident="edgeav",
                clear_untrusted_proxy_headers=True,
            )
        except OSError as e:
            raise ConfigError(f"the web view cannot bind {self.host}:{self.port}: {e.strerror or e}") from None
        self.port = int(self._server.effective_port)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(self._server,), name="web-http", daemon=True)
        self._thread.start()
        log.info("web view on %s", self.url, extra={"fields": {"event": "web_started", "url": self.url}})
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self, server: Any) -> None:
        """waitress's loop, one poll at a time, so the sockets are closed by this thread once stop() asks (closing
        them from another thread under a running select() fails with EBADF)."""
        # a one-socket server keeps its socket map as _map, a multi-socket one as map (waitress 3)
        sockets = server.map if hasattr(server, "map") else server._map
        try:
            while not self._stopping.is_set():
                server.asyncore.loop(timeout=0.2, map=sockets, use_poll=server.adj.asyncore_use_poll, count=1)
        finally:
            server.task_dispatcher.shutdown()
            server.asyncore.close_all(sockets)

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout_s)
            self._thread = None
        self._server = None


# -- the daemon's web view ----------------------------------------------------------------------------------------


def daemon_status(daemon: Any) -> dict[str, Any]:
    """The live page's figures from a running daemon: its /health answer plus inference latency (mean, from the
    metrics when on), free share of the evidence disk and the clock's state."""
    _, h = daemon.health()
    out = {
        k: h.get(k)
        for k in (
            "status",
            "reason",
            "uptime_s",
            "last_window_age_s",
            "windows",
            "detections",
            "committed",
            "sensors",
            "queues",
            "mqtt_connected",
        )
    }
    out["restarts"] = sum(int(s.get("restarts") or 0) for s in (h.get("sensors") or {}).values())
    out["clock"] = getattr(daemon.wallclock, "state", None)
    out["latency_ms"] = None
    if daemon.metrics is not None:
        reg = daemon.metrics.registry
        n = reg.get_sample_value("edgeav_inference_latency_seconds_count") or 0.0
        s = reg.get_sample_value("edgeav_inference_latency_seconds_sum") or 0.0
        out["latency_ms"] = round(1000.0 * s / n, 2) if n else None
    if daemon.evidence is not None:
        try:
            out["disk_free_percent"] = round(100.0 * daemon.evidence.free_ratio(), 1)
        except OSError:
            out["disk_free_percent"] = None
    return out


def start_daemon_web(daemon: Any) -> WebServer | None:
    """`daemon.web.enabled`: the app over the daemon's log and evidence, with its live state. None when off."""
    wc: WebConfig = daemon.daemon_cfg.web
    if not wc.enabled:
        return None
    from edgeav.runtime.web.settings import WebSettings

    # the daemon's store (started before the web view) has migrated the log: the reviews table is there
    settings = WebSettings(
        db_path=Path(daemon.db_path),
        evidence_dir=Path(daemon.daemon_cfg.evidence.dir),
        host=wc.host,
        password=read_password(wc.password_file),
        page_rows=wc.page_rows,
        status=lambda: daemon_status(daemon),
    )
    return WebServer(_flask_app(settings), wc.host, wc.port, wc.threads).start()


# -- edgeav serve -------------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> CommandResult:
    """`edgeav serve --db FILE [--evidence DIR] [--host H] [--port P] [--password-file F]`: the web view over an
    existing log until SIGINT / SIGTERM."""
    from edgeav.runtime.store_reviews import ensure_reviews_table
    from edgeav.schema.web import check_web_access

    try:
        check_web_access(args.host, args.password_file, option="--password-file")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    db = Path(args.db)
    evidence = Path(args.evidence) if args.evidence else db.parent / "evidence"
    before, after = ensure_reviews_table(db)
    if before != after:
        log.info("%s: schema %d -> %d (the reviews table)", db, before, after)
    from edgeav.runtime.web.settings import WebSettings

    settings = WebSettings(
        db_path=db,
        evidence_dir=evidence,
        host=args.host,
        password=read_password(args.password_file),
        page_rows=args.page_rows,
    )
    server = WebServer(_flask_app(settings), args.host, args.port, args.threads).start()
    stop = threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            old[s] = signal.signal(s, lambda *_: stop.set())
    log.info("serving %s (log %s, evidence %s); Ctrl-C stops", server.url, db, evidence)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return CommandResult({"url": server.url, "db": str(db), "evidence": str(evidence)}, f"stopped serving {server.url}")


__all__ = ["WebServer", "cmd_serve", "start_daemon_web", "daemon_status", "read_password"]
