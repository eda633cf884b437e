"""The web view in a real browser and inside the daemon.

A log made the way the quick start makes one (the field daemon, `edgeav run --config`, over a recording, with a WAV
+ JPEG per detection) is served by `edgeav serve`; headless Chromium (Debian's package, driven by Selenium through
Debian's chromedriver) sees the detections, opens one, finds the photo loaded and the audio playable, marks it a
false positive, and the database holds the review. A screenshot of each page goes to the test's temp folder.

The daemon with `daemon.web.enabled` on a live GStreamer test source: the live page's JSON shows its sensors up,
windows counted and the inference latency; its detections page lists what it logged.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("gi", reason="the daemon captures through GStreamer")
pytest.importorskip("flask")
pytest.importorskip("waitress")

from _daemon_fixtures import (  # noqa: E402
    EDGEAV,
    daemon_tree,
    env,
    free_port,
    make_bundle,
    scaled,
    wait_until,
    write_config,
    write_media,
)

pytestmark = pytest.mark.gstreamer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LIVE = "test://?live=1&pattern=ball&wave=ticks"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("web") / "bundle")


@pytest.fixture(scope="module")
def daemon_log(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick start's step 6 in small: the daemon over a recording (combined sensors, not real time) into a log
    with evidence; returns the folder holding det.db and evidence/."""
    tmp = tmp_path_factory.mktemp("daemon_log")
    media = write_media(tmp / "clip.mkv", 4.0)
    tree = daemon_tree(tmp, bundle, f"file://{media}", sensors="combined", realtime=False)
    cfg = write_config(tmp / "daemon.yaml", tree)
    p = subprocess.run([*EDGEAV, "run", "--config", str(cfg)], env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    n = sqlite3.connect(tmp / "det.db").execute("SELECT COUNT(*) FROM detections WHERE image_path IS NOT NULL")
    assert n.fetchone()[0] > 0, "the daemon logged no detection with evidence"
    return tmp


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=scaled(5)) as r:
        return json.loads(r.read())


def _browser(shots: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed (apt-get install chromium chromium-driver; scripts/setup.sh does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(a)
    opts.add_argument("--autoplay-policy=no-user-gesture-required")
    opts.add_argument(f"--user-data-dir={shots / 'profile'}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_browser_sees_detections_opens_one_and_marks_it_false_positive(daemon_log: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log_dir = tmp_path / "log"
    shutil.copytree(daemon_log, log_dir)  # the review is written into this test's copy
    port = free_port()
    srv = subprocess.Popen(
        [*EDGEAV, "serve", "--db", str(log_dir / "det.db"), "--port", str(port)],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        wait_until("edgeav serve to answer", lambda: _json(f"{base}/api/status"), 30, proc=srv)
        driver = _browser(tmp_path)
        wait = WebDriverWait(driver, scaled(20))
        driver.get(f"{base}/detections")
        rows = driver.find_elements(By.CSS_SELECTOR, "#detections tbody tr[data-id]")
        assert rows, driver.page_source[:2000]
        driver.save_screenshot(str(tmp_path / "detections.png"))
        did = rows[0].get_attribute("data-id")
        rows[0].find_element(By.CSS_SELECTOR, "a.detail-link").click()
        wait.until(lambda d: d.find_elements(By.ID, "photo"))
        wait.until(lambda d: d.execute_script("return document.getElementById('photo').naturalWidth") > 0)
        wait.until(lambda d: d.execute_script("return document.getElementById('spectrogram').naturalWidth") > 0)
        # playable: the element has the WAV's metadata and enough data, and play() is accepted
        wait.until(lambda d: d.execute_script("return document.getElementById('player').readyState") >= 2)
        assert driver.execute_script("return document.getElementById('player').duration") > 0
        played = driver.execute_async_script(
            "const done = arguments[arguments.length - 1], a = document.getElementById('player');"
            "a.play().then(() => { a.pause(); done('ok'); }, (e) => done(String(e)));"
        )
        assert played == "ok"
        assert driver.execute_script("return document.getElementById('player').error") is None
        driver.save_screenshot(str(tmp_path / "detail.png"))
        driver.find_element(By.ID, "false-positive").click()
        wait.until(lambda d: d.find_elements(By.ID, "review-state"))
        assert driver.find_element(By.ID, "review-state").text == "false positive"
        driver.save_screenshot(str(tmp_path / "detail_reviewed.png"))
        con = sqlite3.connect(log_dir / "det.db")
        assert con.execute("SELECT detection_id, verdict FROM reviews").fetchall() == [(did, "false_positive")]
        driver.get(f"{base}/live")
        wait.until(lambda d: d.find_element(By.ID, "updated").text.startswith("updated"))
        driver.save_screenshot(str(tmp_path / "live.png"))
        driver.get(f"{base}/charts")
        assert driver.find_elements(By.ID, "chart-hours")
        driver.save_screenshot(str(tmp_path / "charts.png"))
        for name in ("detections", "detail", "detail_reviewed", "live", "charts"):
            assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name
    finally:
        if driver is not None:
            driver.quit()
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            srv.kill()
    assert srv.returncode == 0, srv.stderr.read()[-2000:]


def test_daemon_serves_the_web_view_with_its_live_state(bundle: Path, tmp_path: Path) -> None:
    web, metrics = free_port(), free_port()
    tree = daemon_tree(
        tmp_path, bundle, LIVE, web={"enabled": True, "port": web}, metrics={"enabled": True, "port": metrics}
    )
    cfg = write_config(tmp_path / "d.yaml", tree)
    p = subprocess.Popen([*EDGEAV, "run", "--config", str(cfg)], env=env(), stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{web}"
    try:
        st = wait_until(
            "the live state with windows, sensors up and a latency",
            lambda: (
                s
                if (s := _json(f"{base}/api/status"))["windows"]
                and s["latency_ms"]
                and s["sensors"]
                and all(v["state"] == "up" for v in s["sensors"].values())
                else None
            ),
            60,
            proc=p,
        )
        assert st["source"] == "daemon" and set(st["sensors"]) == {"camera", "microphone"}
        assert st["clock"] in ("synced", "unsynced") and st["disk_free_percent"] > 0
        assert "camera" in st["queues"] and st["latency_ms"] > 0
        html = wait_until(
            "a detection on the web view",
            lambda: h if "data-id=" in (h := urllib.request.urlopen(f"{base}/detections").read().decode()) else None,
            60,
            proc=p,
        )
        assert "<h1>Detections</h1>" in html
        live = urllib.request.urlopen(f"{base}/live").read().decode()
        assert "State of the running daemon" in live and 'id="sensors"' in live
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=scaled(15))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, p.stderr.read()[-2000:]
