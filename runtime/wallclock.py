"""Wall-clock time for detections, and an operating clock for ageing evidence - both safe against clock steps.

A unit without a real-time clock (the Raspberry Pi 5 profile) boots with a wrong wall clock (1970, or the time
fake-hwclock saved at the last shutdown) and NTP steps it hours or years later. So:

- `WallClock.sample()` is called once per window: it re-reads the wall clock and the monotonic clock together and
  maps capture times (monotonic ns) to UTC with the offset read *now* - `utc = time_ns - (monotonic_now -
  capture_monotonic)` - never with an offset read once at start. A change of that offset by more than
  `step_threshold_ns` (1 s) between two samples is a clock step: logged as event `clock_step` and counted.
  `state` is the kernel's NTP state at the sample, `synced` or `unsynced`; each detection records it, so a reader
  knows which UTC times to trust.
- `OperatingClock` measures the age of evidence without the wall clock: nanoseconds the unit has been up since
  the daemon first ran on this detection log (monotonic time, carried across daemon restarts and reboots by a
  small state file beside the log, `<db>.opclock.json`, keyed by the kernel's boot id). See its docstring.

The kernel's sync state comes from adjtimex(2) with modes=0 (a read, no privilege, no subprocess): it returns
TIME_ERROR while STA_UNSYNC is set, i.e. until an NTP client (systemd-timesyncd, chrony) disciplines the clock.
Tests inject a `TimeSource` (monotonic_ns, time_ns, sync_state) that steps the wall clock by hours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SYNCED = "synced"
UNSYNCED = "unsynced"
TIME_ERROR = 5  # adjtimex(2) return value while the clock is not synchronised (STA_UNSYNC)
STEP_THRESHOLD_NS = 1_000_000_000  # a change of (wall - monotonic) beyond this between two samples is a step
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


class TimeSource(Protocol):
    """What the daemon reads time from; the system's by default, injected in tests."""

    def monotonic_ns(self) -> int: ...
    def time_ns(self) -> int: ...
    def sync_state(self) -> str: ...  # SYNCED | UNSYNCED
    def boot_id(self) -> str: ...


_LIBC = None


def kernel_sync_state() -> str:
    """`synced` when the kernel says an NTP client disciplines the clock (adjtimex: not TIME_ERROR), else `unsynced`.
    OSError when adjtimex cannot be called (not Linux): the daemon then refuses to guess."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        if name is None:
            raise OSError("no C library to call adjtimex(2) in")
        _LIBC = ctypes.CDLL(name, use_errno=True)
        if not hasattr(_LIBC, "adjtimex"):
            raise OSError("the C library has no adjtimex(2) (not Linux)")
    buf = ctypes.create_string_buffer(512)  # struct timex (208 bytes on 64-bit), zeroed: modes = 0 -> read only
    ret = _LIBC.adjtimex(buf)
    if ret < 0:
        raise OSError(ctypes.get_errno(), "adjtimex(2) failed")
    return UNSYNCED if ret == TIME_ERROR else SYNCED


class SystemTime:
    """The real clocks: CLOCK_MONOTONIC (GStreamer's system clock too), CLOCK_REALTIME, adjtimex, the boot id."""

    def __init__(self, sync_reader: Callable[[], str] = kernel_sync_state) -> None:
        self._sync_reader = sync_reader

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def time_ns(self) -> int:
        return time.time_ns()

    def sync_state(self) -> str:
        return self._sync_reader()

    def boot_id(self) -> str:
        try:
            return Path(BOOT_ID_PATH).read_text().strip()
        except OSError:
            return "unknown"  # no /proc: every start counts as a new boot (ages then only grow more slowly)


class WallClock:
    """Monotonic capture time -> UTC with the wall clock read at every `sample()`; steps logged and counted."""

    def __init__(self, source: TimeSource | None = None, step_threshold_ns: int = STEP_THRESHOLD_NS) -> None:
        self.source = source or SystemTime()
        self.step_threshold_ns = int(step_threshold_ns)
        self.offset_ns: int | None = None  # wall - monotonic at the last sample
        self.state = UNSYNCED
        self.steps = 0
        self.sample()

    def sample(self) -> int:
        """Re-read both clocks and the sync state (once per window). Returns the step in ns (0 = none)."""
        src = self.source
        mono0 = src.monotonic_ns()
        wall = src.time_ns()
        mono = (mono0 + src.monotonic_ns()) // 2  # the wall reading lies between the two monotonic ones
        state = src.sync_state()
        if state not in (SYNCED, UNSYNCED):
            raise ValueError(f"sync_state() gave {state!r}; valid: {SYNCED}, {UNSYNCED}")
        offset = wall - mono
        step = 0 if self.offset_ns is None else offset - self.offset_ns
        if abs(step) > self.step_threshold_ns:
            self.steps += 1
            log.warning(
                "wall clock stepped by %+.3f s (%s -> %s); detection times follow the new clock",
                step / 1e9,
                self.state,
                state,
                extra={
                    "fields": {
                        "event": "clock_step",
                        "step_ns": step,
                        "steps": self.steps,
                        "clock_before": self.state,
                        "clock": state,
                    }
                },
            )
        else:
            step = 0
        if state != self.state and self.offset_ns is not None:
            log.info("wall clock now %s", state, extra={"fields": {"event": "clock_state", "clock": state}})
        self.offset_ns, self.state = offset, state
        return step

    def utc_ns_for(self, monotonic_ns: int) -> int:
        """UTC of a capture time on the monotonic clock, with the wall clock of the last sample."""
        assert self.offset_ns is not None
        return int(monotonic_ns) + self.offset_ns

    def now_utc_ns(self) -> int:
        return self.source.time_ns()


class OperatingClock:
    """Nanoseconds of unit uptime since the daemon first ran on this detection log: the clock evidence ages by.

    Why not the wall clock: UTC written before an NTP sync is wrong (hours, or decades on a unit without an RTC);
    comparing it with the corrected clock deletes fresh evidence as "too old". Why not the file mtime: it is that
    same wrong wall clock. Monotonic time is right but restarts at 0 on every boot, so it is carried:

      op_now = base_ns + (monotonic_now - monotonic_at_base)

    The state file holds {boot_id, base_ns, base_monotonic_ns, seen_ns}. Same boot id at start (a daemon restart):
    the same base, so op time runs on exactly as if the daemon had never stopped. A new boot id (a reboot; the
    monotonic clock restarted): op time resumes from `seen_ns`, the last op time persisted (`persist()`, called by
    every retention pass). The downtime, and at most one persist interval before a power cut, are not
    counted: evidence is aged by time the unit was up, which is never more than its true age - an age limit keeps
    files a little longer across reboots, never deletes them early. Each evidence row records the op time it was
    written at; age = op_now - that.
    """

    def __init__(self, state_path: str | os.PathLike, source: TimeSource | None = None) -> None:
        self.path = Path(state_path)  # beside the detection log (whose rows hold op times), not among the evidence
        self.source = source or SystemTime()
        boot = self.source.boot_id()
        mono = self.source.monotonic_ns()
        st = self._load()
        if st is not None and st["boot_id"] == boot and st["base_monotonic_ns"] <= mono:
            self.base_ns, self.base_mono_ns = int(st["base_ns"]), int(st["base_monotonic_ns"])
        else:
            resumed = int(st["seen_ns"]) if st is not None else 0
            self.base_ns, self.base_mono_ns = resumed, mono
            if st is not None:
                log.info("operating clock: new boot, evidence ages resume at %.1f h of uptime", resumed / 3.6e12)
        self.boot = boot
        self.persist()

    def _load(self) -> dict | None:
        try:
            st = json.loads(self.path.read_text())
            return {k: st[k] for k in ("boot_id", "base_ns", "base_monotonic_ns", "seen_ns")}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:  # a torn or foreign file: ages restart, said loudly
            log.warning("operating clock state %s unreadable (%s): evidence ages restart from 0", self.path, e)
            return None

    def now_ns(self) -> int:
        return self.base_ns + (self.source.monotonic_ns() - self.base_mono_ns)

    def wall_synced(self) -> bool:
        return self.source.sync_state() == SYNCED

    def persist(self) -> bool:
        """Write the state (atomically). False (logged) when it cannot be written, e.g. a full disk: op time then
        loses at most the uptime since the last good persist at the next reboot - never deletes early."""
        from edgeav.atomic import atomic_write_bytes

        st = {
            "boot_id": self.boot,
            "base_ns": self.base_ns,
            "base_monotonic_ns": self.base_mono_ns,
            "seen_ns": self.now_ns(),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(st).encode())
            return True
        except OSError as e:
            log.warning("cannot persist the operating clock to %s: %s", self.path, e)
            return False


def op_clock_path(db_path: str | os.PathLike) -> Path:
    """Where the operating clock of a detection log keeps its state: `<db>.opclock.json`."""
    p = Path(db_path)
    return p.with_name(p.name + ".opclock.json")


__all__ = [
    "op_clock_path",
    "WallClock",
    "OperatingClock",
    "SystemTime",
    "TimeSource",
    "kernel_sync_state",
    "SYNCED",
    "UNSYNCED",
    "STEP_THRESHOLD_NS",
]
