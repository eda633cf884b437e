"""Keeping the daemon's parts alive: ordered start with roll-back, reverse stop with time budgets, and sensors
restarted with exponential backoff + jitter under a restart budget.

`ComponentStack` (birdnet-go style): components start in order; if one fails, the ones already started are
stopped in reverse and the error goes up; `stop_all()` stops everything in reverse, each within its budget.

`SensorWorker`: one thread per sensor. It opens a `Capture` (a pipeline with that sensor's stream(s)), reads
items, shifts their PTS onto the daemon's timeline and hands them to the daemon's queue. A pipeline error, or no
item for `stall_timeout_s`, closes the capture and restarts it after a backoff delay (initial * factor^k, +/-
jitter), never longer than `backoff_max_s`. More than `restart_budget` restarts within `restart_window_s` ends
the worker with a fatal event: the daemon then exits non-zero and systemd decides what next.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edgeav.errors import EdgeAVError, SensorError
from edgeav.runtime.queues import BoundedQueue
from edgeav.runtime.sources import mask_credentials

if TYPE_CHECKING:
    from edgeav.runtime.capture import CaptureItem

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0  # a capture that takes longer to close is left behind


# -- components -----------------------------------------------------------------------------------------------------


@dataclass
class Component:
    name: str
    start: Callable[[], Any]
    stop: Callable[[], Any]
    stop_budget_s: float = 1.0


class ComponentStack:
    """Start in order, roll back on failure, stop in reverse (each stop timed against its budget)."""

    def __init__(self) -> None:
        self._started: list[Component] = []
        self.events: list[str] = []  # "start NAME", "stop NAME", ... in the order they happened (tests, logs)

    def start(self, comp: Component) -> None:
        try:
            comp.start()
        except BaseException as e:
            # a typed error becomes the CLI's one line; the roll-back itself is information
            level = logging.INFO if isinstance(e, EdgeAVError) else logging.ERROR
            log.log(
                level,
                "component %s failed to start: %s; rolling back %s",
                comp.name,
                e,
                ", ".join(c.name for c in reversed(self._started)) or "nothing",
            )
            self.events.append(f"fail {comp.name}")
            self.stop_all()
            raise
        self._started.append(comp)
        self.events.append(f"start {comp.name}")
        log.info("started %s", comp.name)

    @property
    def started(self) -> list[str]:
        return [c.name for c in self._started]

    def stop_all(self) -> list[str]:
        """Stop every started component in reverse order; returns the names whose stop overran or failed."""
        late: list[str] = []
        while self._started:
            comp = self._started.pop()
            t0 = time.monotonic()
            try:
                comp.stop()
            except Exception as e:  # keep stopping the rest
                log.error("component %s failed to stop cleanly: %s", comp.name, e)
                late.append(comp.name)
            dt = time.monotonic() - t0
            self.events.append(f"stop {comp.name}")
            if dt > comp.stop_budget_s:
                log.warning("component %s took %.2f s to stop (budget %.2f s)", comp.name, dt, comp.stop_budget_s)
                late.append(comp.name)
        return late


# -- backoff and budget -----------------------------------------------------------------------------------------------


class Backoff:
    """Delays initial * factor^k (k = consecutive failures), capped at max_s, each +/- jitter (a fraction)."""

    def __init__(
        self, initial_s: float, max_s: float, factor: float = 2.0, jitter: float = 0.2, rng: random.Random | None = None
    ) -> None:
        self.initial_s, self.max_s, self.factor, self.jitter = initial_s, max_s, factor, jitter
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor**self.failures)
        self.failures += 1
        if self.jitter:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(base, self.max_s * (1.0 + self.jitter)))

    def reset(self) -> None:
        self.failures = 0


class RestartBudget:
    """At most `budget` restarts within any `window_s`: `record()` returns False once it is exceeded."""

    def __init__(self, budget: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget, self.window_s, self.clock = int(budget), float(window_s), clock
        self._times: collections.deque[float] = collections.deque()

    def record(self) -> bool:
        now = self.clock()
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times) <= self.budget

    @property
    def in_window(self) -> int:
        now = self.clock()
        return sum(1 for t in self._times if t > now - self.window_s)


# -- sensors -------------------------------------------------------------------------------------------------------


class CaptureLike(Protocol):
    streams: tuple[str, ...]
    error: str | None

    def start(self) -> Any: ...
    def read(self, timeout_ns: int = ...) -> tuple[Any, Any]: ...
    def close(self) -> None: ...
    def utc_ns_for(self, pts_ns: int) -> int | None: ...


@dataclass(frozen=True)
class SensorEvent:
    sensor: str
    kind: str  # "up" | "down" | "eos" | "fatal"
    detail: str = ""
    epoch: int = 0


@dataclass(frozen=True)
class SensorItem:
    sensor: str
    epoch: int
    item: CaptureItem  # pts_ns on the daemon timeline


class SensorWorker(threading.Thread):
    """One sensor, supervised. Puts `SensorItem`s and `SensorEvent`s on `out`.

    clock "wall": a (re)started pipeline's running time 0 is placed at the monotonic time it started (live
    sources, real-time replay) - a restarted sensor lines up with the one that kept going. clock "media": PTS
    continue from where the previous epoch ended (full-speed replay, looping a file).
    """

    def __init__(
        self,
        name: str,
        open_capture: Callable[[], CaptureLike],
        out: BoundedQueue,
        *,
        uri: str,
        clock: str,
        t0_monotonic_ns: int,
        stall_timeout_s: float,
        read_timeout_s: float,
        backoff: Backoff,
        budget: RestartBudget,
        healthy_after_s: float,
        loop: bool = False,
        stop_event: threading.Event | None = None,
        on_restart: Callable[[str, str], None] | None = None,
        on_item: Callable[[str, CaptureItem], None] | None = None,
    ) -> None:
        super().__init__(name=f"sensor-{name}", daemon=True)
        if clock not in ("wall", "media"):
            raise ValueError(f"clock must be wall or media, got {clock!r}")
        self.sensor = name
        self.open_capture = open_capture
        self.out = out
        self.uri = mask_credentials(uri)
        self.clock = clock
        self.t0_ns = int(t0_monotonic_ns)
        self.stall_timeout_s = stall_timeout_s
        self.read_timeout_ns = int(read_timeout_s * 1e9)
        self.backoff = backoff
        self.budget = budget
        self.healthy_after_s = healthy_after_s
        self.loop = loop
        self.stop_event = stop_event or threading.Event()
        self.on_restart = on_restart
        self.on_item = on_item
        self.epoch = 0
        self.abandoned = 0  # pipelines that would not stop (left to their own thread)
        self.restarts = 0
        self.items = 0
        self.last_error: str | None = None
        self.state = "starting"
        self.last_item_monotonic: float | None = None
        self._media_next_ns = 0  # clock "media": where the next epoch's PTS 0 goes
        self._cap: CaptureLike | None = None

    # -- helpers ------------------------------------------------------------------------------------------------
    def _post(self, obj: Any) -> bool:
        while not self.stop_event.is_set():
            if self.out.put(obj, timeout_s=0.2):
                return True
            if self.out.policy != "block":
                return False
            self.out.dropped -= 1  # a timed-out put on a blocking queue is a retry, not a drop
        return False

    def _offset_ns(self, cap: CaptureLike) -> int:
        if self.clock == "media":
            return self._media_next_ns
        mono_now = time.monotonic_ns()
        utc0 = cap.utc_ns_for(0)
        running_now = max(0, time.time_ns() - utc0) if utc0 is not None else 0
        return (mono_now - self.t0_ns) - running_now

    def _fail(self, reason: str) -> bool:
        """Count a failure; False when the restart budget is spent (the worker then ends)."""
        self.last_error = reason
        self.state = "down"
        self.restarts += 1
        within = self.budget.record()
        self._post(SensorEvent(self.sensor, "down", reason, self.epoch))
        if self.on_restart is not None:
            self.on_restart(self.sensor, reason)
        if not within:
            msg = (
                f"{self.sensor} sensor ({self.uri}): more than {self.budget.budget} restarts within "
                f"{self.budget.window_s:g} s; last error: {reason}"
            )
            log.error("%s", msg)
            self.state = "failed"
            self._post(SensorEvent(self.sensor, "fatal", msg, self.epoch))
            return False
        delay = self.backoff.next_delay_s()
        log.warning(
            "%s sensor (%s) down: %s; restart %d in %.2f s",
            self.sensor,
            self.uri,
            reason,
            self.restarts,
            delay,
            extra={
                "fields": {
                    "event": "sensor_restart",
                    "sensor": self.sensor,
                    "reason": reason,
                    "restart": self.restarts,
                    "delay_s": round(delay, 3),
                }
            },
        )
        self.stop_event.wait(delay)
        return True

    # -- the thread ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a bug must not die silently in a thread
            log.exception("%s sensor worker crashed", self.sensor)
            self._post(SensorEvent(self.sensor, "fatal", f"{self.sensor} sensor worker crashed: {e}", self.epoch))

    def _run(self) -> None:
        from edgeav.runtime.capture import ReadStatus

        while not self.stop_event.is_set():
            try:
                cap = self.open_capture()
                cap.start()
            except EdgeAVError as e:
                if not self._fail(f"cannot start: {e}"):
                    return
                continue
            self._cap = cap
            self.epoch += 1
            offset = self._offset_ns(cap)
            self.state = "up"
            up_since = time.monotonic()
            last_data = time.monotonic()
            last_end = offset
            log.info(
                "%s sensor up (epoch %d, %s)",
                self.sensor,
                self.epoch,
                self.uri,
                extra={"fields": {"event": "sensor_up", "sensor": self.sensor, "epoch": self.epoch}},
            )
            self._post(SensorEvent(self.sensor, "up", self.uri, self.epoch))
            reason: str | None = None
            eos = False
            try:
                while not self.stop_event.is_set():
                    status, item = cap.read(self.read_timeout_ns)
                    now = time.monotonic()
                    if status is ReadStatus.OK and getattr(item, "kind", None) == "end":
                        continue  # a stream-end marker: the EOS status that follows is what counts here
                    if status is ReadStatus.OK:
                        last_data = now
                        self.last_item_monotonic = now
                        shifted = dataclasses.replace(item, pts_ns=item.pts_ns + offset)
                        end = shifted.pts_ns + int(getattr(item, "duration_ns", 0))
                        last_end = max(last_end, end)
                        self.items += 1
                        if self.on_item is not None:
                            self.on_item(self.sensor, item)
                        if not self._post(SensorItem(self.sensor, self.epoch, shifted)):
                            continue
                        if self.backoff.failures and now - up_since >= self.healthy_after_s:
                            self.backoff.reset()
                    elif status is ReadStatus.TIMEOUT:
                        if now - last_data > self.stall_timeout_s:
                            reason = f"no data for {self.stall_timeout_s:g} s"
                            break
                    elif status is ReadStatus.EOS:
                        eos = True
                        break
                    else:
                        reason = f"pipeline error: {cap.error or 'capture failed'}"
                        break
            finally:
                self._close(cap)
                self._cap = None
            if self.stop_event.is_set():
                return
            self._media_next_ns = last_end + 1_000_000_000  # a 1 s gap between epochs on the media clock
            if eos:
                if not self.loop:
                    self.state = "eos"
                    log.info("%s sensor: end of stream", self.sensor)
                    self._post(SensorEvent(self.sensor, "eos", self.uri, self.epoch))
                    return
                log.info("%s sensor: end of stream, replaying from the start", self.sensor)
                continue
            if not self._fail(reason or "unknown"):
                return

    def _close(self, cap: CaptureLike) -> None:
        """Close a capture, but never hang on it: a source stuck in a blocking read (a hung camera driver, a pipe
        nobody writes to) can block the pipeline's state change to NULL until the read returns. After
        `CLOSE_TIMEOUT_S` the pipeline is left to finish on its own thread (counted) and the sensor restarts."""
        t = threading.Thread(target=cap.close, name=f"close-{self.sensor}", daemon=True)
        t.start()
        t.join(CLOSE_TIMEOUT_S)
        if t.is_alive():
            self.abandoned += 1
            log.warning(
                "%s sensor: its pipeline did not stop within %.1f s (a blocked source); left behind (%d so far)",
                self.sensor,
                CLOSE_TIMEOUT_S,
                self.abandoned,
                extra={"fields": {"event": "pipeline_abandoned", "sensor": self.sensor}},
            )

    def stop(self, timeout_s: float = 1.0) -> None:
        self.stop_event.set()
        self.join(timeout_s)
        if self.is_alive():
            log.warning("%s sensor thread did not stop within %.1f s", self.sensor, timeout_s)


def stream_sets(sensors: str, streams: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(sensor name, streams) per pipeline: split = camera and microphone apart; combined = one pipeline."""
    if sensors == "combined" or len(streams) <= 1:
        name = "av" if len(streams) > 1 else ("camera" if streams[0] == "video" else "microphone")
        return [(name, tuple(streams))]
    return [("camera" if s == "video" else "microphone", (s,)) for s in streams]


__all__ = [
    "Component",
    "ComponentStack",
    "Backoff",
    "RestartBudget",
    "SensorWorker",
    "SensorEvent",
    "SensorItem",
    "stream_sets",
    "SensorError",
]
