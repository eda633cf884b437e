"""Evidence for each confirmed detection, and retention so the SD card never fills.

Files: `<dir>/<YYYY-MM-DD>/<detection id>.wav|.flac` (the detection's aligned audio, from the first confirming
window's start to the confirming window's end, at the model's rate) and `<detection id>.jpg` (the confirming
window's middle frame, at the model's input size - exactly what the model saw) and, with `clip: true` and a model
of T > 1 frames per window, `<detection id>.mp4` (the confirming window's T frames at the model's frame rate,
missing frames black as the model got them). The paths go into the detection's record.

Choices (runtime stays light):
- audio: WAV 16-bit PCM through the stdlib `wave` module by default - no dependency; 5 s at 16 kHz is 160 kB.
  `audio_format: flac` (about half the size) needs the `soundfile` package and is refused at start without it.
- image: JPEG through GStreamer's `jpegenc` (gst-plugins-good), which the runtime needs anyway for capture - no
  Pillow on the unit. One small encoder pipeline (appsrc ! jpegenc ! appsink) is kept and reused.
- clip: H.264 in MP4 through GStreamer (appsrc ! videoconvert ! openh264enc ! h264parse ! mp4mux ! filesink;
  gstreamer1.0-plugins-bad, which scripts/setup.sh installs) - no PyAV on the unit. Not avenc_mpeg4: gst-libav
  1.22's encoder emits buffers without PTS, and mp4mux then writes a clip 40 ms long. One pipeline per clip
  (mp4mux finishes its file at end of stream); a detection is rare enough for that. H.264 wants even sizes: an
  odd last row / column is cropped.

Retention: before each write, and every `retention_interval_s`, evidence older than `max_age_days` is deleted
(age = unit uptime since the daemon wrote it, `edgeav.runtime.wallclock.OperatingClock`; never a wall-clock
comparison, which an NTP step would fool);
while the evidence file system has less than `min_free_percent` free, the oldest evidence goes first, but the
newest `keep_per_class` sets of each class stay. If that cannot free enough, evidence stops (counted, noted in the
record) - detections are always logged: the free-space floor keeps room for the log.

Durability: every file is written under a temporary name, fsynced, renamed and its folder fsynced (the encoders in
edgeav.runtime.encoders), so a name a committed row links is whole or absent. The daemon writes sets on its own
thread (`admit` + `plan` on the main loop, `write_files` on the evidence thread: edgeav.runtime.evidence_worker).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeav.atomic import atomic_write_bytes
from edgeav.errors import ConfigError, SensorError
from edgeav.runtime.encoders import ClipEncoder, JpegEncoder, clip_pipeline_description, write_flac, write_wav

if TYPE_CHECKING:
    from edgeav.runtime.wallclock import OperatingClock
    from edgeav.schema.daemon import EvidenceConfig

log = logging.getLogger(__name__)

RETENTION_HYSTERESIS = 0.02  # disk retention frees up to the floor plus this share


def disk_free_ratio(path: str | os.PathLike) -> float:
    """Free share (0..1) of the file system holding `path` (blocks available to this user)."""
    u = shutil.disk_usage(path)
    return u.free / u.total if u.total else 0.0


# -- the writer ------------------------------------------------------------------------------------------------------


@dataclass
class EvidenceResult:
    audio_path: str | None
    image_path: str | None
    note: str | None  # why something is missing (skipped: disk, failed: ..., no audio in window)
    outcome: str  # written | partial | skipped | failed | none | pending (planned, not yet written)
    clip_path: str | None = None  # the window's frames as MP4 (evidence.clip)


def _result(
    apath: Path | None, ipath: Path | None, cpath: Path | None, note: str | None, outcome: str
) -> EvidenceResult:
    """The result naming the files of a set (planned or written)."""
    return EvidenceResult(
        str(apath) if apath else None, str(ipath) if ipath else None, note, outcome, str(cpath) if cpath else None
    )


@dataclass(frozen=True)
class WindowContext:
    """What evidence is cut from: one processed window's (or a detection's span's) audio, the middle frame and all
    the frames of its window."""

    start_ns: int
    end_ns: int
    audio: np.ndarray | None  # (S,) float32
    frame: np.ndarray | None  # (H, W, 3) uint8
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8, zeros where a frame was missing


def stitch_audio(windows: Sequence[WindowContext], start_ns: int, end_ns: int, rate_hz: int) -> np.ndarray | None:
    """The audio in [start_ns, end_ns) assembled from overlapping windows (later windows win); None if none."""
    from edgeav.timebase import samples_for_ns

    n = samples_for_ns(end_ns - start_ns, rate_hz)
    if n <= 0:
        return None
    out = np.zeros(n, np.float32)
    any_audio = False
    for w in windows:
        if w.audio is None or w.end_ns <= start_ns or w.start_ns >= end_ns:
            continue
        a = (
            samples_for_ns(w.start_ns - start_ns, rate_hz)
            if w.start_ns >= start_ns
            else -samples_for_ns(start_ns - w.start_ns, rate_hz)
        )
        lo, hi = max(a, 0), min(a + w.audio.size, n)
        if hi > lo:
            out[lo:hi] = w.audio[lo - a : hi - a]
            any_audio = True
    return out if any_audio else None


EVIDENCE_PATH_KEYS = ("audio_path", "image_path", "clip_path")  # the files of one evidence set, as the log names them
EVIDENCE_SUFFIXES = (".wav", ".flac", ".jpg", ".mp4")
PENDING_NOTE = "pending: being written"  # a committed row whose files are still being encoded


class EvidenceStore:
    """Writes evidence sets and applies retention. `rows()` gives (id, label, utc_ns, audio_path, image_path
    [, clip_path]) of committed detections with evidence, oldest first; `unlink()` reports a deleted set back to
    the log. `frame_rate_hz`: the model's frame rate (T > 1), the rate of the clips."""

    def __init__(
        self,
        root: str | Path,
        cfg: EvidenceConfig,
        rate_hz: int,
        rows: Callable[[], Iterable],
        unlink: Callable[[str, str], None],
        free_ratio: Callable[[Path], float] = disk_free_ratio,
        on_deleted: Callable[[str], None] | None = None,
        frame_rate_hz: float | None = None,
        op_clock: OperatingClock | None = None,  # what evidence ages by (None = the wall clock)
    ) -> None:
        self.root = Path(root)
        self.frame_rate_hz = frame_rate_hz
        self.clip: ClipEncoder | None = None
        self.cfg = cfg
        self.rate_hz = int(rate_hz)
        self._rows = rows
        self._unlink = unlink
        self._free_ratio = free_ratio
        self.on_deleted = on_deleted
        self.jpeg: JpegEncoder | None = None
        self._last_retention = 0.0
        self.op_clock = op_clock
        self.disk_low = False
        self.counts = {"written": 0, "partial": 0, "skipped": 0, "failed": 0, "deleted_age": 0, "deleted_disk": 0}

    def start(self) -> EvidenceStore:
        if self.cfg.audio_format == "flac":
            try:
                import soundfile  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "daemon.evidence.audio_format=flac needs the soundfile package (pip install soundfile), or use wav"
                ) from None
        self.root.mkdir(parents=True, exist_ok=True)
        if self.cfg.image_format == "jpeg":
            self.jpeg = JpegEncoder(self.cfg.jpeg_quality)
        if getattr(self.cfg, "clip", False):
            if self.frame_rate_hz is None:
                log.warning("daemon.evidence.clip is on, but the model takes one frame per window: no clips")
            else:
                self.clip = ClipEncoder(self.frame_rate_hz, self.cfg.clip_bitrate_kbps)
        log.info(
            "evidence in %s (audio %s, image %s, clip %s, keep >= %.0f %% free, >= %d per class, max age %s days)",
            self.root,
            self.cfg.audio_format,
            self.cfg.image_format,
            f"mp4 at {self.frame_rate_hz:g} Hz" if self.clip is not None else "none",
            self.cfg.min_free_percent,
            self.cfg.keep_per_class,
            self.cfg.max_age_days,
        )
        return self

    def stop(self) -> None:
        if self.jpeg is not None:
            self.jpeg.close()
            self.jpeg = None

    def free_ratio(self) -> float:
        return self._free_ratio(self.root)

    # -- writing ---------------------------------------------------------------------------------------------------
    def write(
        self,
        detection_id: str,
        utc_ns: int,
        label: str,
        audio: np.ndarray | None,
        frame: np.ndarray | None,
        frames: np.ndarray | None = None,
    ) -> EvidenceResult:
        """One evidence set: audio (S,), the middle frame (H, W, 3) and, with clips on, the window's frames
        (T, H, W, 3). Everything is subject to the free-space floor; a failure removes what was written.
        `admit` + `write_files` in one call (the daemon runs the second on its evidence thread)."""
        skipped = self.admit()
        return skipped if skipped is not None else self.write_files(detection_id, utc_ns, audio, frame, frames)

    def admit(self) -> EvidenceResult | None:
        """The free-space floor, on the thread that owns the log (it may run retention): None = go ahead, else the
        `skipped` result."""
        floor = self.cfg.min_free_percent / 100.0
        if not self.disk_low and self.free_ratio() < floor:
            # entering the low state: make room now. While low, the periodic pass (retention_interval_s) tries
            # again - not every detection, which would turn each one into a transaction of its own.
            self.apply_retention(force=True)
        free = self.free_ratio()
        if free < floor:
            if not self.disk_low:
                log.warning(
                    "evidence paused: %.1f %% free on %s < %.0f %% (detections are still logged)",
                    free * 100,
                    self.root,
                    self.cfg.min_free_percent,
                    extra={"fields": {"event": "evidence_paused", "free_percent": round(free * 100, 2)}},
                )
            self.disk_low = True
            self.counts["skipped"] += 1
            return EvidenceResult(
                None, None, f"skipped: {free * 100:.1f} % free < {self.cfg.min_free_percent:g} %", "skipped"
            )
        if self.disk_low:
            log.info("evidence resumed: %.1f %% free on %s", free * 100, self.root)
            self.disk_low = False
        return None

    def _paths(
        self,
        detection_id: str,
        utc_ns: int,
        audio: np.ndarray | None,
        frame: np.ndarray | None,
        frames: np.ndarray | None,
    ) -> tuple[Path | None, Path | None, Path | None, list[str]]:
        """(audio, image, clip) paths the set gets (None = not written) and notes on what is missing."""
        day = _dt.datetime.fromtimestamp(utc_ns / 1e9, tz=_dt.UTC).strftime("%Y-%m-%d")
        folder = self.root / day
        apath = ipath = cpath = None
        notes: list[str] = []
        if self.cfg.audio_format != "none":
            if audio is None:
                notes.append("no audio in the detection's windows")
            else:
                apath = folder / f"{detection_id}.{self.cfg.audio_format}"
        if self.jpeg is not None:
            if frame is None:
                notes.append("no frame in the confirming window")
            else:
                ipath = folder / f"{detection_id}.jpg"
        if self.clip is not None:
            if frames is None:
                notes.append("no frames for a clip in the confirming window")
            else:
                cpath = folder / f"{detection_id}.mp4"
        return apath, ipath, cpath, notes

    def plan(
        self,
        detection_id: str,
        utc_ns: int,
        audio: np.ndarray | None,
        frame: np.ndarray | None,
        frames: np.ndarray | None = None,
    ) -> EvidenceResult:
        """The paths `write_files` will give this set (outcome `pending`, note `PENDING_NOTE`): the log links them
        at once; the write's result corrects the row later, and a start-up check marks files that never came."""
        apath, ipath, cpath, notes = self._paths(detection_id, utc_ns, audio, frame, frames)
        if apath is None and ipath is None and cpath is None:  # nothing to write: the final result already
            return EvidenceResult(None, None, "; ".join(notes) or None, "none")
        return _result(apath, ipath, cpath, PENDING_NOTE, "pending")

    def write_files(
        self,
        detection_id: str,
        utc_ns: int,
        audio: np.ndarray | None,
        frame: np.ndarray | None,
        frames: np.ndarray | None = None,
    ) -> EvidenceResult:
        """Encode and write one admitted set; every file durable and atomic (temp name, fsync, rename, fsync of the
        folder), so a file a committed row names is whole or absent, never truncated."""
        apath, ipath, cpath, notes = self._paths(detection_id, utc_ns, audio, frame, frames)
        written: list[Path] = []
        try:
            if apath is not None:
                apath.parent.mkdir(parents=True, exist_ok=True)
                written.append(apath)
                (write_flac if self.cfg.audio_format == "flac" else write_wav)(apath, audio, self.rate_hz)
            if ipath is not None:
                written.append(ipath)  # removed again if a later write fails
                atomic_write_bytes(ipath, self.jpeg.encode(frame))
            if cpath is not None:
                cpath.parent.mkdir(parents=True, exist_ok=True)
                written.append(cpath)
                self.clip.write(cpath, frames)
        except (OSError, SensorError) as e:
            for p in written:
                try:
                    p.unlink()
                except OSError:
                    pass
            self.counts["failed"] += 1
            log.warning("evidence for %s not written: %s", detection_id, e)
            return EvidenceResult(None, None, f"failed: {e}", "failed")
        outcome = "written" if not notes else ("partial" if written else "none")
        if outcome in self.counts:
            self.counts[outcome] += 1
        return _result(apath, ipath, cpath, "; ".join(notes) or None, outcome)

    # -- retention -------------------------------------------------------------------------------------------------
    def _delete(self, row: Any, reason: str) -> None:
        keys = row.keys()
        for p in (row[k] for k in EVIDENCE_PATH_KEYS if k in keys):
            if p:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("retention cannot delete %s: %s", p, e)
        self._unlink(row["id"], reason)
        self.counts[f"deleted_{'age' if reason.startswith('age') else 'disk'}"] += 1
        if self.on_deleted is not None:
            self.on_deleted("age" if reason.startswith("age") else "disk")

    def _age_ns(self, row: Any, now_ns: int | None) -> int | None:
        """How old a row's evidence is; None = unknown (kept). With an operating clock: op time now minus the op
        time the row was written at - monotonic uptime, carried across restarts and reboots, blind to wall-clock
        steps (an NTP sync hours after boot must not age pre-sync evidence by hours). Rows without an op time
        (written before schema 4) are aged by UTC only against a wall clock known to be right: `now_ns` given, or
        the kernel says the clock is synced; else kept. Without an operating clock: UTC against the wall clock."""
        op = row["written_op_ns"] if "written_op_ns" in row.keys() else None
        if self.op_clock is not None and op is not None:
            return self.op_clock.now_ns() - int(op)
        if now_ns is None and self.op_clock is not None and not self.op_clock.wall_synced():
            return None
        return (now_ns if now_ns is not None else time.time_ns()) - int(row["utc_ns"])

    def apply_retention(self, force: bool = False, now_ns: int | None = None) -> int:
        """Delete by age, then oldest-first while the disk is below the floor (keeping N per class). Returns the
        number of evidence sets deleted."""
        now = time.monotonic()
        if not force and now - self._last_retention < self.cfg.retention_interval_s:
            return 0
        self._last_retention = now
        # rows() may page through the log (an iterable read a page at a time): each pass reads it afresh and
        # keeps only counts and the ids deleted in this call, never every row
        gone: set[str] = set()
        deleted = 0
        if self.op_clock is not None:
            self.op_clock.persist()
        if self.cfg.max_age_days is not None:
            max_age_ns = int(self.cfg.max_age_days * 86_400e9)
            for r in self._rows():
                age = self._age_ns(r, now_ns)
                if age is not None and age > max_age_ns:
                    self._delete(r, f"age: older than {self.cfg.max_age_days:g} days")
                    gone.add(r["id"])
                    deleted += 1
        floor = self.cfg.min_free_percent / 100.0
        target = min(1.0, floor + RETENTION_HYSTERESIS)  # free a little more than the floor: not one set per write
        if self.free_ratio() < floor:
            per_class: dict[str, int] = {}
            for r in self._rows():
                if r["id"] not in gone:
                    per_class[r["label"]] = per_class.get(r["label"], 0) + 1
            for r in self._rows():  # oldest first
                if self.free_ratio() >= target:
                    break
                if r["id"] in gone or per_class[r["label"]] <= self.cfg.keep_per_class:
                    continue
                self._delete(r, f"disk: below {self.cfg.min_free_percent:g} % free")
                per_class[r["label"]] -= 1
                deleted += 1
        if deleted:
            log.info(
                "retention deleted %d evidence set(s); %.1f %% free",
                deleted,
                self.free_ratio() * 100,
                extra={"fields": {"event": "retention", "deleted": deleted}},
            )
        return deleted

    def sweep_orphans(self, known: Callable[[list[str]], set[str]]) -> int:
        """Delete evidence files whose detection never reached the log (a crash between file and commit)."""
        if not self.root.is_dir():
            return 0
        files = [p for p in self.root.glob("*/*") if p.suffix in EVIDENCE_SUFFIXES]
        ids = sorted({p.stem for p in files})
        have = known(ids)
        n = 0
        for p in files:
            if p.stem not in have:
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
        if n:
            log.info("removed %d orphaned evidence file(s)", n)
        return n


__all__ = [
    "EvidenceStore",
    "EvidenceResult",
    "WindowContext",
    "JpegEncoder",
    "ClipEncoder",
    "clip_pipeline_description",
    "disk_free_ratio",
    "stitch_audio",
    "write_wav",
    "write_flac",
]
