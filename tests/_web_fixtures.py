"""Shared pieces of the web view tests: a detection log with evidence files written by the store API, the app on a
real waitress server on a free loopback port, and raw HTTP requests (no client-side path clean-up)."""

from __future__ import annotations

import contextlib
import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeav.runtime.evidence import write_wav
from edgeav.runtime.postprocess import Detection
from edgeav.runtime.store import DetectionStore, new_detection_id

T0 = 1_780_000_000 * 10**9  # 2026-05-28T20:26:40Z
SCRIPT_LABEL = "<script>alert('x')</script>"
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")  # served as bytes; never decoded server side


def tone(seconds: float = 1.0, hz: float = 2000.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def make_log(folder: Path, n: int, labels: tuple[str, ...] = ("crow", "finch"), evidence_every: int = 1) -> list[str]:
    """`n` detections one second apart from T0 (every `evidence_every`-th with a WAV + JPEG under
    folder/evidence/<day>/); returns their ids, oldest first."""
    store = DetectionStore(folder / "det.db", synchronous="NORMAL", batch_max=10_000)
    ids = []
    for i in range(n):
        utc = T0 + i * 10**9
        did = new_detection_id(utc)
        label = labels[i % len(labels)]
        det = Detection(
            label, i % len(labels), i * 10**9, i * 10**9 + 10**9, None, None, 0.5 + 0.4 * (i % 2), 0.9, 0.3,
            ("audio", "image"), "ab" * 32, 1,
        )  # fmt: skip
        wav = jpg = None
        if evidence_every and i % evidence_every == 0:
            day = folder / "evidence" / "2026-05-28"
            day.mkdir(parents=True, exist_ok=True)
            wav, jpg = day / f"{did}.wav", day / f"{did}.jpg"
            write_wav(wav, tone(), 16000)
            jpg.write_bytes(JPEG)
        store.add(det, detection_id=did, utc_ns=utc, audio_path=wav and str(wav), image_path=jpg and str(jpg))
        ids.append(did)
    store.close()
    return ids


@contextlib.contextmanager
def served(folder: Path, host: str = "127.0.0.1", password: str | None = None, page_rows: int = 50) -> Iterator[str]:
    """The app over folder/det.db on a real server; yields its base URL."""
    from edgeav.runtime.store_reviews import ensure_reviews_table
    from edgeav.runtime.web.app import create_app
    from edgeav.runtime.web.server import WebServer
    from edgeav.runtime.web.settings import WebSettings

    ensure_reviews_table(folder / "det.db")
    s = WebSettings(folder / "det.db", folder / "evidence", host=host, password=password, page_rows=page_rows)
    server = WebServer(create_app(s), host, 0, threads=2).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `path` exactly as written (no normalisation of `..` or percent escapes)."""
    host, port = base.removeprefix("http://").split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        con.putrequest("GET", path, skip_host=bool(headers and "Host" in headers))
        for k, v in (headers or {}).items():
            con.putheader(k, v)
        con.endheaders()
        r = con.getresponse()
        return r.status, r.read()
    finally:
        con.close()


def form_token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)
