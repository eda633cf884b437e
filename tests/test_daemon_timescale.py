"""The time scale of the daemon tests (tests/_daemon_fixtures.py): every deadline is stretched by
EDGEAV_TEST_TIME_SCALE, else by the load per core; waits are on conditions, and a wait that gives up says what for."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from _daemon_fixtures import TIME_SCALE_ENV, scaled, time_scale, wait_until


def test_env_sets_the_scale_and_bad_values_are_refused(monkeypatch) -> None:
    monkeypatch.setenv(TIME_SCALE_ENV, "3")
    assert time_scale() == 3.0 and scaled(2.0) == 6.0
    for bad in ("fast", "0.5"):
        monkeypatch.setenv(TIME_SCALE_ENV, bad)
        with pytest.raises(ValueError, match=TIME_SCALE_ENV):
            time_scale()


def test_default_scale_follows_the_load_and_is_at_least_1(monkeypatch) -> None:
    import os

    monkeypatch.delenv(TIME_SCALE_ENV, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0, 1.0, 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert time_scale() == 4.0  # 8 runnable on 2 cores: everything takes about 4 times as long
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 1.0, 1.0))
    assert time_scale() == 1.0  # a quiet machine never shortens a deadline


def test_wait_until_returns_the_value_or_names_what_it_waited_for(monkeypatch) -> None:
    monkeypatch.setenv(TIME_SCALE_ENV, "2")
    t0 = time.monotonic()
    seen = []
    assert wait_until("three polls", lambda: seen.append(1) or (len(seen) >= 3 and seen), 5) == [1, 1, 1]
    with pytest.raises(AssertionError, match="timed out after 0.2 s waiting for never"):
        wait_until("never", lambda: False, 0.1)
    took = time.monotonic() - t0
    assert 0.2 <= took < 5  # 0.1 s stretched by 2
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(AssertionError, match=r"the daemon ended \(rc 0\) while waiting for ready"):
        wait_until("ready", lambda: False, 60, proc=p)  # at once, not after 60 s
