"""Supervision: backoff with jitter, restart budgets, ordered start with roll-back, and a sensor worker that
restarts a silent or failing sensor (a scripted capture object stands in for GStreamer here; the GStreamer-backed
fault tests are in test_daemon_faults.py)."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from _daemon_fixtures import scaled

from edgeav.errors import SensorError
from edgeav.runtime.capture import AudioChunk, ReadStatus
from edgeav.runtime.queues import BoundedQueue
from edgeav.runtime.supervisor import (
    Backoff,
    Component,
    ComponentStack,
    RestartBudget,
    SensorEvent,
    SensorItem,
    SensorWorker,
    stream_sets,
)


def test_backoff_grows_caps_and_jitters() -> None:
    b = Backoff(1.0, 8.0, factor=2.0, jitter=0.0)
    assert [b.next_delay_s() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay_s() == 1.0
    j = Backoff(1.0, 100.0, factor=2.0, jitter=0.2, rng=random.Random(1))
    delays = [j.next_delay_s() for _ in range(5)]
    for k, d in enumerate(delays):
        assert 0.8 * 2**k <= d <= 1.2 * 2**k
    assert len({round(d / 2**k, 6) for k, d in enumerate(delays)}) > 1  # jitter is not a constant factor


def test_restart_budget_is_per_window() -> None:
    now = [0.0]
    b = RestartBudget(3, 10.0, clock=lambda: now[0])
    assert all(b.record() for _ in range(3))
    assert not b.record()  # 4th within 10 s
    now[0] = 10.5  # the first four left the window
    assert b.record() and b.in_window == 1


def test_components_roll_back_in_reverse_and_stop_in_reverse() -> None:
    order: list[str] = []

    def comp(name: str, fail: bool = False) -> Component:
        def start() -> None:
            if fail:
                raise RuntimeError(f"{name} broke")
            order.append(f"start {name}")

        return Component(name, start, lambda: order.append(f"stop {name}"))

    s = ComponentStack()
    s.start(comp("a"))
    s.start(comp("b"))
    with pytest.raises(RuntimeError, match="c broke"):
        s.start(comp("c", fail=True))
    assert order == ["start a", "start b", "stop b", "stop a"] and s.started == []
    order.clear()
    s2 = ComponentStack()
    for n in "xyz":
        s2.start(comp(n))
    assert s2.stop_all() == [] and order[-3:] == ["stop z", "stop y", "stop x"]


def test_stream_sets() -> None:
    assert stream_sets("split", ("video", "audio")) == [("camera", ("video",)), ("microphone", ("audio",))]
    assert stream_sets("combined", ("video", "audio")) == [("av", ("video", "audio"))]
    assert stream_sets("split", ("audio",)) == [("microphone", ("audio",))]


class ScriptedCapture:
    """Plays a script: ("data", n) items, ("silence", s), ("error", text), ("eos",)."""

    streams = ("audio",)

    def __init__(self, script: list[tuple], fail_start: bool = False) -> None:
        self.script = list(script)
        self.fail_start = fail_start
        self.error: str | None = None
        self.closed = False
        self.pts = 0
        self._silent_until = None

    def start(self):
        if self.fail_start:
            raise SensorError("device not found")
        return self

    def utc_ns_for(self, pts_ns: int) -> int:
        return time.time_ns() + pts_ns

    def read(self, timeout_ns: int = 0):
        while self.script:
            step = self.script[0]
            if step[0] == "data":
                n = step[1]
                self.script[0] = ("data", n - 1) if n > 1 else None
                if self.script[0] is None:
                    self.script.pop(0)
                item = AudioChunk(self.pts, np.zeros(160, np.float32), 16000)
                self.pts += 10_000_000
                return ReadStatus.OK, item
            if step[0] == "silence":
                time.sleep(timeout_ns / 1e9)
                return ReadStatus.TIMEOUT, None
            if step[0] == "error":
                self.error = step[1]
                self.script.pop(0)
                return ReadStatus.ERROR, None
            if step[0] == "eos":
                return ReadStatus.EOS, None
        return ReadStatus.EOS, None

    def close(self) -> None:
        self.closed = True


def _worker(captures: list, q: BoundedQueue, budget: int = 5, loop: bool = False, clock: str = "media") -> SensorWorker:
    it = iter(captures)
    restarts: list[str] = []
    w = SensorWorker(
        "microphone",
        lambda: next(it),
        q,
        uri="test://",
        clock=clock,
        t0_monotonic_ns=time.monotonic_ns(),
        stall_timeout_s=0.15,
        read_timeout_s=0.05,
        backoff=Backoff(0.05, 0.2, jitter=0.1),
        budget=RestartBudget(budget, 60.0),
        healthy_after_s=60.0,
        loop=loop,
        on_restart=lambda s, r: restarts.append(r),
    )
    w.restart_reasons = restarts  # type: ignore[attr-defined]
    return w


def _drain(q: BoundedQueue, until: float = 5.0) -> list:
    """What the worker put on `q` until its eos/fatal event, or `until` seconds (stretched by the load)."""
    out, deadline = [], time.monotonic() + scaled(until)
    while time.monotonic() < deadline:
        ok, m = q.get(timeout_s=0.1)
        if ok:
            out.append(m)
            if isinstance(m, SensorEvent) and m.kind in ("eos", "fatal"):
                break
    return out


def test_silent_and_failing_sensor_is_restarted_until_it_delivers() -> None:
    q: BoundedQueue = BoundedQueue(1000, "block")
    caps = [
        ScriptedCapture([("data", 3), ("silence",)]),  # goes silent
        ScriptedCapture([], fail_start=True),  # cannot start
        ScriptedCapture([("data", 2), ("error", "v4l2src0: device disconnected")]),
        ScriptedCapture([("data", 4), ("eos",)]),
    ]
    w = _worker(caps, q)
    w.start()
    msgs = _drain(q)
    w.join(scaled(2))
    items = [m for m in msgs if isinstance(m, SensorItem)]
    events = [(m.kind, m.detail) for m in msgs if isinstance(m, SensorEvent)]
    assert len(items) == 3 + 2 + 4
    kinds = [k for k, _ in events]
    assert kinds == ["up", "down", "down", "up", "down", "up", "eos"]
    assert "no data for 0.15 s" in events[1][1] and "device not found" in events[2][1]
    assert "device disconnected" in events[4][1]
    assert w.restarts == 3 and all(c.closed for c in caps if not c.fail_start)
    # media clock: every epoch continues after the previous one, so times never go backwards
    pts = [m.item.pts_ns for m in items]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert {m.epoch for m in items} == {1, 2, 3}


def test_budget_spent_is_fatal() -> None:
    q: BoundedQueue = BoundedQueue(1000, "block")
    w = _worker([ScriptedCapture([], fail_start=True) for _ in range(10)], q, budget=2)
    w.start()
    msgs = _drain(q)
    w.join(scaled(2))
    fatal = [m for m in msgs if isinstance(m, SensorEvent) and m.kind == "fatal"]
    assert len(fatal) == 1 and "more than 2 restarts" in fatal[0].detail and w.state == "failed"
    assert len(w.restart_reasons) == 3  # the 3rd restart broke the budget of 2


def test_loop_replays_from_start_without_counting_a_failure() -> None:
    q: BoundedQueue = BoundedQueue(1000, "block")
    stop = threading.Event()
    w = _worker(
        [ScriptedCapture([("data", 2), ("eos",)]) for _ in range(3)] + [ScriptedCapture([], fail_start=True)] * 20,
        q,
        budget=1,
        loop=True,
    )
    w.stop_event = stop
    w.start()
    msgs = _drain(q, until=3.0)
    stop.set()
    w.join(scaled(2))
    items = [m for m in msgs if isinstance(m, SensorItem)]
    assert len(items) == 6 and w.epoch == 3
    # three epochs on the media clock, 1 s apart at least: looping never reuses a time
    starts = [m.item.pts_ns for m in items][::2]
    assert all(b - a >= 1_000_000_000 for a, b in zip(starts, starts[1:]))
