"""CI cannot pass vacuously: with EDGEAV_REQUIRE_ALL=1 (set by .ci/run) a test skipped because a Python module is
missing fails the run; skips for absent data stay skips. Each case runs pytest in a subprocess on a small test file,
next to a copy of this project's conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

MODULE_LEVEL = """
import pytest
pytest.importorskip("edgeav_no_such_module_xyz", reason="the daemon captures through GStreamer")

def test_daemon():
    assert True
"""
IN_A_TEST = """
import pytest

def test_export():
    pytest.importorskip("edgeav_no_such_module_xyz")

def test_other():
    assert True
"""
HAND_MADE = """
import pytest

def test_mqtt():
    try:
        import edgeav_no_such_module_xyz  # noqa: F401
    except ImportError as e:
        pytest.skip(str(e))
"""
DATA_ABSENT = """
def test_real_data(shared_data):
    assert shared_data.is_dir()

def test_runs():
    assert True
"""


def _pytest(tmp_path: Path, body: str, require_all: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copyfile(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_case.py").write_text(body)
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    assert True\n")  # the rest of the suite passes
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEAV_REQUIRE_ALL", "EDGEAV_DATA")}
    if require_all is not None:
        env["EDGEAV_REQUIRE_ALL"] = require_all
    env["EDGEAV_DATA"] = str(tmp_path / "no-data-here")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("body", [MODULE_LEVEL, IN_A_TEST, HAND_MADE], ids=["module-level", "in-a-test", "hand-made"])
def test_a_skip_for_a_missing_module_fails_under_require_all(tmp_path: Path, body: str) -> None:
    loose = _pytest(tmp_path, body, None)
    assert loose.returncode == 0 and "skipped" in loose.stdout, loose.stdout[-2000:]  # the vacuous pass it stops
    strict = _pytest(tmp_path, body, "1")
    assert strict.returncode != 0, strict.stdout[-2000:]
    assert "EDGEAV_REQUIRE_ALL=1" in strict.stdout and "edgeav_no_such_module_xyz" in strict.stdout


def test_data_absent_skips_are_still_allowed(tmp_path: Path) -> None:
    strict = _pytest(tmp_path, DATA_ABSENT, "1")
    assert strict.returncode == 0, strict.stdout[-2000:]
    assert "2 passed, 1 skipped" in strict.stdout and "real data not found" in strict.stdout


def test_ci_run_sets_require_all() -> None:
    text = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "export EDGEAV_REQUIRE_ALL=1" in text and "scripts/test.sh" in text
