"""The web view under a big log: how fast the detections page answers, and what the web app costs the daemon in memory.

    .venv/bin/python bench/web.py [--rows 100000] [--requests 300] [--bundle runs/quickstart/bundle] [--daemon-s 60]
                                  [--out bench/results/web.json]

1. Latency: a log of `--rows` detections (5 classes over 60 days, 10 % reviewed) written with the store API; the web
   app (edgeav.runtime.web, the same one `edgeav serve` runs) on a real waitress server on loopback. `--requests`
   detections pages: the first page, filtered pages (class, confidence, review state, modalities, time range) and
   pages deep in the log (following the "older" link 50 times), in a fixed mix. Server side = from the WSGI call
   until the last byte of the body is produced (a middleware around the app); round trip = an HTTP client on
   loopback. Target: p95 server side < 200 ms. The detail and charts pages are timed too (no target).
2. Memory: the field daemon (`edgeav run --config`, `--bundle`, a live GStreamer test source, metrics on) writing into
   a copy of that log, `--daemon-s` seconds with `daemon.web.enabled: false`, then as long with it on while a client
   reads the live JSON, two detections pages and the charts every 0.5 s. Resident memory (VmRSS) is sampled every
   second; the figure is the median of the last third of the run with the web app minus the same without it.
   Target: <= 40 MB.
Writes JSON and one line.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_common import REPO, RESULTS, free_port, machine, proc_status_kb, write_result  # noqa: E402

LABELS = ("crow", "finch", "owl", "wren", "robin")
DAY_NS = 86_400 * 10**9


def build_log(db: Path, rows: int, seed: int = 0) -> list[str]:
    from edgeav.runtime.postprocess import Detection
    from edgeav.runtime.store import DetectionStore, new_detection_id
    from edgeav.runtime.store_reviews import VERDICTS

    rng = random.Random(seed)
    t0 = time.time_ns() - 60 * DAY_NS
    store = DetectionStore(db, synchronous="NORMAL", batch_max=5000, max_pending=20_000)
    ids = []
    for i in range(rows):
        utc = t0 + int(i * 60 * DAY_NS / rows)
        did = new_detection_id(utc)
        k = rng.randrange(len(LABELS))
        mods = rng.choice((("audio", "image"), ("audio",), ("image",)))
        det = Detection(
            LABELS[k], k, i * 10**9, i * 10**9 + 3 * 10**9, None, None, rng.uniform(0.3, 1.0),
            rng.random() if "audio" in mods else None, rng.random() if "image" in mods else None, mods, "ab" * 32, 1,
        )  # fmt: skip
        ev = i % 10 == 0  # every tenth links evidence (the files are not there: thumbnails are not timed)
        day = time.strftime("%Y-%m-%d", time.gmtime(utc / 1e9))
        store.add(
            det,
            detection_id=did,
            utc_ns=utc,
            audio_path=f"/evidence/{day}/{did}.wav" if ev else None,
            image_path=f"/evidence/{day}/{did}.jpg" if ev else None,
        )
        ids.append(did)
        store.maybe_flush()
    store.close()
    import sqlite3

    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO reviews (detection_id, verdict, label, reason, reviewed_utc_ns) VALUES (?, ?, 'crow', NULL, ?)",
        [(d, VERDICTS[j % 2], time.time_ns()) for j, d in enumerate(rng.sample(ids, rows // 10))],
    )
    con.commit()
    con.close()
    return ids


class Timed:
    """WSGI middleware: seconds from the call until the body's last chunk, per request."""

    def __init__(self, app) -> None:
        self.app, self.times = app, []

    def __call__(self, environ, start_response):
        t0 = time.perf_counter()
        body = list(self.app(environ, start_response))
        self.times.append(time.perf_counter() - t0)
        return body


def get(port: int, path: str) -> tuple[int, bytes]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        con.request("GET", path)
        r = con.getresponse()
        return r.status, r.read()
    finally:
        con.close()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def latency(db: Path, ids: list[str], n: int) -> dict:
    import re

    from edgeav.runtime.web.app import create_app
    from edgeav.runtime.web.server import WebServer
    from edgeav.runtime.web.settings import WebSettings

    app = create_app(WebSettings(db, db.parent / "evidence"))
    timed = Timed(app.wsgi_app)
    app.wsgi_app = timed
    server = WebServer(app, "127.0.0.1", 0, threads=4).start()
    mid = time.strftime("%Y-%m-%d", time.gmtime((time.time_ns() - 30 * DAY_NS) / 1e9))
    pages = [
        "/detections",
        "/detections?label=owl",
        "/detections?min_confidence=0.9",
        "/detections?review=unreviewed",
        "/detections?review=confirmed",
        "/detections?modalities=audio",
        f"/detections?since={mid}&label=wren",
        "/detections?label=finch&min_confidence=0.95&modalities=image",
    ]
    deep, path = [], "/detections"
    for _ in range(50):  # the "older" link, 50 pages down
        code, body = get(server.port, path)
        m = re.search(rb'id="older" href="([^"]+)"', body)
        if m is None:
            raise SystemExit(f"--rows {len(ids)}: under 51 pages of 50 (the deep pages need at least 2,550 rows)")
        path = m.group(1).decode().replace("&amp;", "&")
        deep.append(path)
    mix = (pages * (n // len(pages) + 1))[: n // 2] + (deep * (n // len(deep) + 1))[: n - n // 2]
    random.Random(1).shuffle(mix)
    for p in pages:  # warm: each thread's connection, SQLite's page cache
        get(server.port, p)
    timed.times.clear()
    rtt = []
    for p in mix:
        t0 = time.perf_counter()
        code, _ = get(server.port, p)
        rtt.append(time.perf_counter() - t0)
        assert code == 200, (p, code)
    server_s = list(timed.times)
    other = {}
    for name, p in (("detail", f"/detections/{ids[len(ids) // 2]}"), ("charts", "/charts")):
        timed.times.clear()
        for _ in range(20):
            assert get(server.port, p)[0] == 200
        other[name] = timed.times[:]
    server.stop()
    ms = lambda xs, q: round(1000 * pct(xs, q), 2)  # noqa: E731
    return {
        "requests": len(mix),
        "server_p50_ms": ms(server_s, 0.5),
        "server_p95_ms": ms(server_s, 0.95),
        "server_max_ms": ms(server_s, 1.0),
        "roundtrip_p95_ms": ms(rtt, 0.95),
        "detail_p95_ms": ms(other["detail"], 0.95),
        "charts_p95_ms": ms(other["charts"], 0.95),
    }


def daemon_rss(tmp: Path, db: Path, bundle: str, seconds: float, web: bool) -> list[int]:
    import yaml

    port, mport = free_port(), free_port()
    tree = {
        "runtime": {"source": {"uri": "test://?live=1&pattern=ball&wave=ticks", "fps": 10}},
        "daemon": {
            "bundle": bundle,
            "store": {"db_path": str(db)},
            "evidence": {"dir": str(tmp / "evidence"), "min_free_percent": 0.0},
            "metrics": {"enabled": True, "port": mport},
            "web": {"enabled": web, "port": port},
        },
    }
    cfg = tmp / f"daemon_web_{web}.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "edgeav", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()

    def client() -> None:
        while not stop.wait(0.5):
            for path in ("/api/status", "/detections", "/detections?label=owl", "/charts"):
                try:
                    get(port, path)
                except OSError:
                    pass

    samples: list[int] = []
    t = threading.Thread(target=client, daemon=True) if web else None
    try:
        time.sleep(5.0)  # start-up: bundle, sensors
        if t is not None:
            t.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end and p.poll() is None:
            try:
                samples.append(proc_status_kb("VmRSS", p.pid))
            except OSError:  # it ended between poll() and the read
                break
            time.sleep(1.0)
    finally:
        stop.set()
        p.terminate()
        p.wait(timeout=30)
    if not samples:
        raise SystemExit(f"the daemon (web {web}) ended at once (rc {p.returncode})")
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--bundle", default=str(REPO / "runs" / "quickstart" / "bundle"))
    p.add_argument("--daemon-s", type=float, default=60.0, help="each of the two daemon runs, s (0: no memory run)")
    p.add_argument("--out", default=str(RESULTS / "web.json"))
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="edgeav_web_bench_"))
    try:
        db = tmp / "det.db"
        t0 = time.perf_counter()
        ids = build_log(db, a.rows)
        build_s = time.perf_counter() - t0
        lat = latency(db, ids, a.requests)
        mem: dict = {}
        if a.daemon_s > 0:
            if not Path(a.bundle).is_dir():
                raise SystemExit(f"{a.bundle}: no bundle (run scripts/quickstart.sh, or --bundle, or --daemon-s 0)")
            shutil.copy(db, tmp / "off.db")
            shutil.copy(db, tmp / "on.db")
            off = daemon_rss(tmp, tmp / "off.db", a.bundle, a.daemon_s, web=False)
            on = daemon_rss(tmp, tmp / "on.db", a.bundle, a.daemon_s, web=True)
            tail = lambda xs: statistics.median(xs[-max(1, len(xs) // 3) :]) / 1024  # noqa: E731
            mem = {
                "daemon_s": a.daemon_s,
                "rss_web_off_mb": round(tail(off), 1),
                "rss_web_on_mb": round(tail(on), 1),
                "rss_web_cost_mb": round(tail(on) - tail(off), 1),
                "rss_web_on_growth_mb": round((statistics.median(on[-5:]) - statistics.median(on[:5])) / 1024, 1),
                "samples_off_kb": off,
                "samples_on_kb": on,
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "rows": a.rows,
        "build_log_s": round(build_s, 1),
        **lat,
        **mem,
        "pass_latency": lat["server_p95_ms"] < 200.0,
        "pass_rss": (mem["rss_web_cost_mb"] <= 40.0) if mem else None,
        **machine(),
    }
    result["pass"] = result["pass_latency"] and result["pass_rss"] is not False
    rss = (
        f"daemon RSS {mem['rss_web_off_mb']} MB without the web app, {mem['rss_web_on_mb']} MB with it "
        f"(+{mem['rss_web_cost_mb']} MB, target <= 40)"
        if mem
        else "no memory run"
    )
    line = (
        f"web: detections page of a {a.rows:,}-detection log: p95 {lat['server_p95_ms']} ms server side "
        f"(p50 {lat['server_p50_ms']}, round trip p95 {lat['roundtrip_p95_ms']}; target < 200) over {lat['requests']} "
        f"requests; detail p95 {lat['detail_p95_ms']} ms, charts p95 {lat['charts_p95_ms']} ms; {rss}: "
        f"{'PASS' if result['pass'] else 'FAIL'} -> {a.out}"
    )
    write_result("web", result, line, a.out)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
