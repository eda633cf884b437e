"""The daemon as systemd runs it: READY / WATCHDOG / STOPPING over NOTIFY_SOCKET, SIGTERM flushes and exits
within 5 s, /metrics and /health on 127.0.0.1, structured logs; a failing component rolls back the ones started
before it; a bad config or bundle is one line and exit 2."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("prometheus_client")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")

from _daemon_fixtures import EDGEAV, daemon_tree, env, free_port, make_bundle, scaled, write_config  # noqa: E402

pytestmark = pytest.mark.gstreamer

LIVE = "test://?live=1&pattern=ball&wave=ticks"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("lc") / "bundle")


def spawn(cfg: Path, extra_env: dict | None = None, args: list[str] | None = None) -> subprocess.Popen:
    e = env()
    e.update(extra_env or {})
    return subprocess.Popen(
        [*EDGEAV, "--log-json", "run", "--config", str(cfg), "--json", *(args or [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=e,
        text=True,
    )


def logs(stderr: str) -> list[dict]:
    out = []
    for ln in stderr.splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            pass
    return out


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=scaled(3)) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_notify_metrics_health_and_sigterm(bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path / "d.yaml", daemon_tree(tmp_path, bundle, LIVE, metrics={"enabled": True, "port": port})
    )
    sock_path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(sock_path)
    ns.settimeout(0.2)
    # 1 s on a quiet machine (keep-alive every 0.5 s); systemd's period is stretched with the load as every deadline
    # here is, and the keep-alives must still come within it
    watchdog_s = round(scaled(1.0), 3)
    p = spawn(cfg, {"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": str(int(watchdog_s * 1e6))})
    msgs: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline and not any("READY=1" in m for _, m in msgs):
            try:
                msgs.append((time.monotonic(), ns.recv(4096).decode()))
            except TimeoutError:
                assert p.poll() is None, p.communicate()[1][-2000:]
        assert any("READY=1" in m for _, m in msgs), msgs
        t_ready = time.monotonic()
        while time.monotonic() < t_ready + 3.0 * watchdog_s:
            try:
                msgs.append((time.monotonic(), ns.recv(4096).decode()))
            except TimeoutError:
                pass
        watchdogs = [t for t, m in msgs if m == "WATCHDOG=1"]
        assert len(watchdogs) >= 4 and max(b - a for a, b in zip(watchdogs, watchdogs[1:])) < watchdog_s
        code, health = get(f"http://127.0.0.1:{port}/health")
        h = json.loads(health)
        assert code == 200 and h["status"] == "ok" and h["windows"] > 0
        assert set(h["sensors"]) == {"camera", "microphone"} and all(s["state"] == "up" for s in h["sensors"].values())
        code, text = get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        for name in (
            "edgeav_sensor_items_total{",
            "edgeav_inference_latency_seconds_bucket{",
            "edgeav_windows_total{",
            "edgeav_detections_total{",
            "edgeav_queue_depth{",
            "edgeav_sensor_up{",
        ):
            assert name in text, name
        items = {
            ln.split("{")[1].split("}")[0]: float(ln.split()[-1])
            for ln in text.splitlines()
            if ln.startswith("edgeav_sensor_items_total{")
        }
        assert any('sensor="camera",stream="video"' in k and v > 0 for k, v in items.items())
        assert any('sensor="microphone",stream="audio"' in k and v > 0 for k, v in items.items())
        assert get(f"http://127.0.0.1:{port}/nothing")[0] == 404
        with pytest.raises(OSError):  # bound to loopback only
            addr = socket.gethostbyname(socket.gethostname())
            if addr.startswith("127."):
                raise OSError("no non-loopback address to test against")
            socket.create_connection((addr, port), timeout=1).close()
        t_term = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=scaled(10))
        stop_s = time.monotonic() - t_term
        try:
            while True:  # what was sent after we stopped listening is still queued on the socket
                msgs.append((time.monotonic(), ns.recv(4096).decode()))
        except TimeoutError:
            pass
    finally:
        if p.poll() is None:
            p.kill()
        ns.close()
    assert p.returncode == 0, err[-2000:]
    assert stop_s < scaled(5.0)  # what systemd's TimeoutStopSec allows, on this machine's time scale
    summary = json.loads(out)
    assert summary["exit_reason"] == "signal" and summary["detections"] > 0
    assert summary["committed"] == summary["detections"]  # nothing left in memory
    recs = logs(err)
    committed = [i for r in recs if r.get("event") == "committed" for i in r["ids"]]
    con = sqlite3.connect(tmp_path / "det.db")
    ids = {r[0] for r in con.execute("SELECT id FROM detections")}
    assert set(committed) == ids and len(ids) == summary["detections"]
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # every logged line is JSON with level/logger/msg, the start order is logged
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in recs)
    started = [r["msg"].split()[1] for r in recs if r["msg"].startswith("started ")]
    assert started == ["bundle", "store", "evidence", "metrics", "web", "mqtt", "integrations", "sensors"]
    # evidence files are named by the detection id and linked from the record
    row = con.execute(
        "SELECT id, audio_path, image_path FROM detections WHERE audio_path IS NOT NULL LIMIT 1"
    ).fetchone()
    assert row is not None and Path(row[1]).name == f"{row[0]}.wav" and Path(row[2]).name == f"{row[0]}.jpg"
    assert Path(row[1]).is_file() and Path(row[2]).is_file()
    assert any(m == "STOPPING=1" for _, m in msgs)


def test_failed_component_rolls_back_in_reverse(bundle: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = write_config(
            tmp_path / "d.yaml", daemon_tree(tmp_path, bundle, LIVE, metrics={"enabled": True, "port": port})
        )
        p = spawn(cfg)
        out, err = p.communicate(timeout=scaled(60))
    assert p.returncode == 2
    errors = [ln for ln in err.splitlines() if not ln.startswith("{")]
    assert len(errors) == 1 and "cannot bind" in errors[0] and str(port) in errors[0]
    msgs = [r["msg"] for r in logs(err)]
    assert any("rolling back evidence, store, bundle" in m for m in msgs), msgs
    assert not any(m.startswith("started sensors") for m in msgs)


def test_bad_config_and_bad_bundle_exit_2_with_one_line(bundle: Path, tmp_path: Path) -> None:
    tree = daemon_tree(tmp_path, bundle, LIVE)
    tree["daemon"]["store"]["batch_interval_sec"] = 1
    bad = write_config(tmp_path / "bad.yaml", tree)
    r = subprocess.run(
        [*EDGEAV, "run", "--config", str(bad)], capture_output=True, text=True, env=env(), timeout=scaled(60)
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "batch_interval_sec" in r.stderr and "bad.yaml" in r.stderr
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    m = json.loads((broken / "manifest.json").read_text())
    m["extra"]["files"]["model_fp32"]["sha256"] = "0" * 64
    (broken / "manifest.json").write_text(json.dumps(m))
    cfg = write_config(tmp_path / "d.yaml", daemon_tree(tmp_path, broken, LIVE))
    r = subprocess.run(
        [*EDGEAV, "-q", "run", "--config", str(cfg)], capture_output=True, text=True, env=env(), timeout=scaled(60)
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "sha256" in r.stderr
    assert not (tmp_path / "det.db").exists()
    r = subprocess.run(
        [*EDGEAV, "run", "--config", str(cfg), "--set", "runtime.source.uri=gopher://x"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=scaled(60),
    )
    assert r.returncode == 2 and "unknown source scheme" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_service_unit_is_type_notify_with_watchdog() -> None:
    import configparser

    import edgeav.runtime

    unit = Path(edgeav.runtime.__file__).parent / "edgeav.service"
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read_string(unit.read_text())
    svc = cp["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert "run --config" in svc["ExecStart"] and svc["RestartPreventExitStatus"] == "2"
    assert int(svc["TimeoutStopSec"]) >= 5
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        problems = [
            ln
            for ln in r.stderr.splitlines()
            if "is not executable" not in ln and "No such file" not in ln and ln.strip()
        ]
        assert not problems, problems


def test_example_config_is_valid_and_installed() -> None:
    import edgeav.runtime
    from edgeav.schema import load_config

    example = Path(edgeav.runtime.__file__).parent / "daemon.example.yaml"
    cfg = load_config(example)
    assert cfg.daemon.sensors == "split" and cfg.daemon.metrics.host == "127.0.0.1"
    assert cfg.runtime.source.audio_uri == "alsa://hw:1,0"
