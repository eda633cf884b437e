"""The web view over a real log on a real server: pages, paging, filters, spectrogram, charts, reviews, and the
access rules (escaping, path traversal, ids of another form, CSRF, Host header, password off loopback)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("flask")
pytest.importorskip("waitress")
requests = pytest.importorskip("requests")

from _web_fixtures import JPEG, SCRIPT_LABEL, form_token, make_log, raw_get, served  # noqa: E402

from edgeav.cli import main  # noqa: E402
from edgeav.schema import load_config  # noqa: E402


def _ids_on(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


def test_pages_list_detail_evidence_and_paging(tmp_path: Path) -> None:
    ids = make_log(tmp_path, 120, evidence_every=2)
    with served(tmp_path, page_rows=50) as base:
        r = requests.get(f"{base}/detections", timeout=30)
        assert r.status_code == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
        first = _ids_on(r.text)
        assert first == ids[::-1][:50]  # newest first
        older = re.search(r'id="older" href="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        second = _ids_on(requests.get(base + older, timeout=30).text)
        assert second == ids[::-1][50:100]
        page2 = requests.get(base + older, timeout=30).text
        newer = re.search(r'id="newer" href="([^"]+)"', page2).group(1).replace("&amp;", "&")
        assert _ids_on(requests.get(base + newer, timeout=30).text) == first
        # filters: class, confidence, time range
        finch = _ids_on(requests.get(f"{base}/detections?label=finch&min_confidence=0.8", timeout=30).text)
        assert finch and all(ids.index(i) % 2 == 1 for i in finch)
        ranged = _ids_on(
            requests.get(f"{base}/detections?since=2026-05-28T20:26:45Z&until=2026-05-28T20:26:50Z", timeout=30).text
        )
        assert ranged == ids[5:10][::-1]
        assert requests.get(f"{base}/detections?min_confidence=7", timeout=30).status_code == 400
        # detail: photo, spectrogram and sound of a detection with evidence, neighbours
        d = requests.get(f"{base}/detections/{ids[10]}", timeout=30).text
        assert 'id="photo"' in d and 'id="player"' in d and 'id="spectrogram"' in d and "ab" * 32 in d
        assert f"/detections/{ids[9]}" in d and f"/detections/{ids[11]}" in d
        img = requests.get(f"{base}/detections/{ids[10]}/image", timeout=30)
        assert img.status_code == 200 and img.headers["Content-Type"] == "image/jpeg" and img.content == JPEG
        wav = requests.get(f"{base}/detections/{ids[10]}/audio", headers={"Range": "bytes=0-3"}, timeout=30)
        assert wav.status_code == 206 and wav.content == b"RIFF"  # ranges: what an <audio> element asks for
        svg = requests.get(f"{base}/detections/{ids[10]}/spectrogram.svg", timeout=30)
        assert svg.headers["Content-Type"].startswith("image/svg+xml")
        assert "time (s)" in svg.text and "frequency (kHz)" in svg.text and "data:image/png;base64," in svg.text
        assert ">8</text>" in svg.text and ">1</text>" in svg.text  # 8 kHz at the top, 1 s at the end
        # a detection without evidence: the page says so, the evidence URLs are 404
        assert "no photo" in requests.get(f"{base}/detections/{ids[11]}", timeout=30).text
        assert requests.get(f"{base}/detections/{ids[11]}/image", timeout=30).status_code == 404
        charts = requests.get(f"{base}/charts", timeout=30).text
        assert "crow" in charts and ">60</td>" in charts  # 60 crows, all in one hour of one day
        status = requests.get(f"{base}/api/status", timeout=30).json()
        assert status["source"] == "log" and status["newest_detection_label"] == "finch"


def test_script_label_is_escaped_everywhere(tmp_path: Path) -> None:
    ids = make_log(tmp_path, 4, labels=(SCRIPT_LABEL, "crow"))
    with served(tmp_path) as base:
        for path in ("/detections", f"/detections/{ids[0]}", "/charts", "/live"):
            html = requests.get(base + path, timeout=30).text
            assert "<script>alert" not in html, path
        assert "&lt;script&gt;alert(" in requests.get(f"{base}/detections/{ids[0]}", timeout=30).text
        assert "&lt;script&gt;alert(" in requests.get(f"{base}/charts", timeout=30).text
        # the reason of a review is a user string too
        page = requests.Session()
        tok = form_token(page.get(f"{base}/detections/{ids[0]}", timeout=30).text)
        page.post(
            f"{base}/detections/{ids[0]}/review",
            data={"csrf_token": tok, "verdict": "confirmed", "reason": "<img src=x onerror=alert(1)>"},
            timeout=30,
        )
        html = page.get(f"{base}/detections/{ids[0]}", timeout=30).text
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_path_traversal_and_ids_of_another_form_get_nothing(tmp_path: Path) -> None:
    ids = make_log(tmp_path, 3)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    with served(tmp_path) as base:
        for path in (
            "/detections/../det.db",
            "/detections/..%2fdet.db",
            "/detections/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            f"/detections/{ids[0]}/..%2f..%2fdet.db",
            f"/detections/{ids[0]}/../../secret.txt",
            "/detections/1%20OR%201=1",
            "/detections/1' OR '1'='1",
            f"/detections/{ids[0].upper()}",
            f"/detections/{ids[0]}x/image",
            f"/detections/{ids[0]}/det.db",
            "/static/../det.db",
            "/static/..%2f..%2fdet.db",
        ):
            code, body = raw_get(base, path.replace(" ", "%20"))
            assert code in (400, 404), (path, code)
            assert b"SQLite format" not in body and b"do not serve" not in body
        # a row that points outside the evidence folder (a tampered or moved log) serves nothing
        con = sqlite3.connect(tmp_path / "det.db")
        con.execute("UPDATE detections SET audio_path=?, image_path=? WHERE id=?", (str(secret), "/etc/passwd", ids[1]))
        con.commit()
        con.close()
        for kind in ("audio", "image", "spectrogram.svg"):
            code, body = raw_get(base, f"/detections/{ids[1]}/{kind}")
            assert code == 404 and b"do not serve" not in body and b"root:" not in body


def test_review_needs_the_csrf_token_and_shows_in_lists_and_filters(tmp_path: Path) -> None:
    ids = make_log(tmp_path, 6)
    db = tmp_path / "det.db"
    with served(tmp_path) as base:
        anon = requests.post(f"{base}/detections/{ids[2]}/review", data={"verdict": "false_positive"}, timeout=30)
        assert anon.status_code == 403
        s = requests.Session()
        s.get(f"{base}/detections/{ids[2]}", timeout=30)
        forged = s.post(
            f"{base}/detections/{ids[2]}/review", data={"verdict": "false_positive", "csrf_token": "x"}, timeout=30
        )
        assert forged.status_code == 403
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0
        tok = form_token(s.get(f"{base}/detections/{ids[2]}", timeout=30).text)
        r = s.post(
            f"{base}/detections/{ids[2]}/review",
            data={"verdict": "false_positive", "reason": "a door", "csrf_token": tok},
            timeout=30,
        )
        assert r.status_code == 200 and "false positive" in r.text  # followed the 303 back to the detail page
        row = sqlite3.connect(db).execute("SELECT detection_id, verdict, reason FROM reviews").fetchall()
        assert row == [(ids[2], "false_positive", "a door")]
        assert _ids_on(s.get(f"{base}/detections?review=false_positive", timeout=30).text) == [ids[2]]
        assert ids[2] not in _ids_on(s.get(f"{base}/detections?review=unreviewed", timeout=30).text)
        assert "badge-false_positive" in s.get(f"{base}/detections", timeout=30).text
        # ignore this class: its detections leave the default list, come back on request
        s.post(f"{base}/detections/{ids[1]}/review", data={"verdict": "ignore_class", "csrf_token": tok}, timeout=30)
        shown = _ids_on(s.get(f"{base}/detections", timeout=30).text)
        assert shown == [ids[4], ids[2], ids[0]]  # the crows; every finch hidden
        assert len(_ids_on(s.get(f"{base}/detections?show_ignored=1", timeout=30).text)) == 6
        bad = s.post(f"{base}/detections/{ids[1]}/review", data={"verdict": "maybe", "csrf_token": tok}, timeout=30)
        assert bad.status_code == 400


def test_loopback_answers_only_to_loopback_host_names(tmp_path: Path) -> None:
    make_log(tmp_path, 1)
    with served(tmp_path) as base:
        assert raw_get(base, "/detections", {"Host": "attacker.example:8080"})[0] == 421
        assert raw_get(base, "/detections", {"Host": "localhost:8080"})[0] == 200


def test_off_loopback_a_password_is_required(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_log(tmp_path, 2)
    capsys.readouterr()  # what logging wrote before (a handler of an earlier main() may hold a closed stream)
    assert main(["serve", "--db", str(tmp_path / "det.db"), "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a password" in err and "--password-file" in err
    with pytest.raises(Exception, match="needs a password"):
        load_config(None, ["daemon.web.enabled=true", "daemon.web.host=0.0.0.0"])
    pw = "correct horse battery"
    with served(tmp_path, host="0.0.0.0", password=pw) as base:
        assert requests.get(f"{base}/api/status", timeout=30).status_code == 401
        r = requests.get(f"{base}/detections", timeout=30, allow_redirects=False)
        assert r.status_code == 302 and "/login" in r.headers["Location"]
        assert requests.get(f"{base}/api/status", headers={"Authorization": f"Bearer {pw}"}, timeout=30).ok
        s = requests.Session()
        tok = form_token(s.get(f"{base}/login", timeout=30).text)
        assert s.post(f"{base}/login", data={"password": "guess", "csrf_token": tok}, timeout=30).status_code == 401
        assert s.get(f"{base}/api/status", timeout=30).status_code == 401
        r = s.post(f"{base}/login", data={"password": pw, "csrf_token": tok}, timeout=30)
        assert r.ok and "<h1>Detections</h1>" in r.text
        assert s.get(f"{base}/api/status", timeout=30).ok
