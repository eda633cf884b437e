"""The coordinator of `edgeav analyze`: plan the files, skip what a resumed run already finished, hand the rest to an
engine (worker processes here, Ray actors in ray_engine.py), write each file's result atomically as it arrives, and
the tables once all are done.

Crash safety: a file's result is `results/<key>.json`, written whole (temporary file + rename, fsynced) before its
line is appended (and fsynced) to `journal.jsonl`; `--resume` trusts a journal line only when its result file is
there and the input's size and mtime are unchanged, and ignores a torn last line. A run killed at any moment and
resumed therefore analyzes each file to the end exactly once in the written output, and, since a file's result does
not depend on which worker or engine ran it, the output is byte-identical to an uninterrupted run's. `run.json` holds
the bundle's sha256 and the settings that shape results; a resume with other ones is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from edgeav.atomic import TEMP_SUFFIX, atomic_write_bytes
from edgeav.errors import ConfigError, DataError
from edgeav.manifest import sha256_file

from .deploy import DEPLOYMENT_FILE, plan_deployment
from .media import media_kind
from .outputs import write_outputs

log = logging.getLogger(__name__)

RUN_FORMAT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def unit_key(path: str) -> str:
    """A stable file name for a unit's results: its name, made safe, and a hash of its full path."""
    stem = _UNSAFE.sub("_", Path(path).name)[:80]
    return f"{stem}-{hashlib.sha1(path.encode('utf-8')).hexdigest()[:10]}"


def plan_units(inputs: list[str], window_s: float) -> list[dict[str, Any]]:
    """Units for the inputs (files; folders recursively; deployment folders paired by time), one per file, by path."""
    units: dict[str, dict[str, Any]] = {}

    def add(u: dict[str, Any]) -> None:
        units.setdefault(u["path"], u)

    for raw in inputs:
        p = Path(raw).resolve()
        if not p.exists():
            raise DataError(f"{raw}: no such file or folder")
        if p.is_file():
            kind = media_kind(p)
            if kind is None:
                raise DataError(f"{raw}: not an audio, video or photo file (by its extension)")
            add({"path": str(p), "kind": kind})
            continue
        for folder, dirs, names in os.walk(p):
            dirs.sort()
            here = Path(folder)
            if DEPLOYMENT_FILE in names:
                dirs.clear()  # the deployment's devices own everything below
                planned, unpaired = plan_deployment(here, window_s)
                for u in planned:
                    add(u)
                for f in unpaired:
                    add({"path": str(f.resolve()), "kind": media_kind(f)})
                continue
            for name in sorted(names):
                kind = media_kind(here / name)
                if kind is not None:
                    add({"path": str((here / name).resolve()), "kind": kind})
    out = []
    for path in sorted(units):
        u = units[path]
        u["key"] = unit_key(path)
        out.append(u)
    if not out:
        raise DataError(f"no audio, video or photo files in {', '.join(inputs)}")
    return out


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """The last entry per key; a torn (partly written) last line is ignored."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        entries[e["key"]] = e
    return entries


class Progress:
    """One log line at most every `every_s`: files, hours of media done, x real time."""

    def __init__(self, total_files: int, cores: int, every_s: float = 2.0) -> None:
        self.total, self.cores, self.every_s = total_files, cores, every_s
        self.files = self.errors = 0
        self.media_s = 0.0
        self.t0 = self.last = time.monotonic()

    def line(self) -> str:
        wall = max(time.monotonic() - self.t0, 1e-9)
        return (
            f"analyze: {self.files}/{self.total} files, {self.media_s / 3600:.2f} h media, "
            f"{self.media_s / wall:.0f}x real time ({self.media_s / wall / self.cores:.0f}x per core), "
            f"{self.errors} failed"
        )

    def update(self, result: dict[str, Any]) -> None:
        self.files += 1
        self.errors += result["status"] != "ok"
        self.media_s += result["media_s"]
        now = time.monotonic()
        if now - self.last >= self.every_s or self.files == self.total:
            self.last = now
            log.info("%s", self.line())


# -- the local engine ---------------------------------------------------------------------------------------------
_worker = None


def _init_worker(analyzer_kwargs: dict[str, Any]) -> None:
    global _worker
    from .worker import Analyzer

    _worker = Analyzer(**analyzer_kwargs)


def _work(unit: dict[str, Any]) -> dict[str, Any]:
    assert _worker is not None
    return _worker.analyze(unit)


def run_local(units: list[dict[str, Any]], analyzer_kwargs: dict[str, Any], workers: int) -> Iterator[dict[str, Any]]:
    """Worker processes (spawned: no ONNX Runtime state is forked), each with one session; results as they finish."""
    import multiprocessing as mp

    todo = iter(units)
    with ProcessPoolExecutor(workers, mp.get_context("spawn"), _init_worker, (analyzer_kwargs,)) as pool:
        running = set()
        for u in todo:
            running.add(pool.submit(_work, u))
            if len(running) >= 2 * workers:
                break
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
                nxt = next(todo, None)
                if nxt is not None:
                    running.add(pool.submit(_work, nxt))


# -- the run ------------------------------------------------------------------------------------------------------
def _settings(bundle: str, role: str | None, min_confidence: float, batch_windows: int) -> dict[str, Any]:
    from edgeav.bundle import verify_bundle
    from edgeav.runtime.cli import pick_model_role

    info = verify_bundle(bundle)
    role = pick_model_role(info, "onnxruntime", role)
    return {
        "format": RUN_FORMAT,
        "bundle": str(Path(bundle).resolve()),
        "bundle_manifest_sha256": sha256_file(Path(bundle) / "manifest.json"),
        "model_role": role,
        "model_sha256": info.sha256[role],  # checked by verify_bundle
        "labels": info.labels,
        "window_s": info.manifest.contract.audio.window_s,
        "min_confidence": min_confidence,
        "batch_windows": batch_windows,
        "low_freq_hz": info.manifest.contract.audio.fmin_hz,
        "high_freq_hz": info.manifest.contract.audio.fmax_hz,
    }


def run_analyze(
    bundle: str,
    inputs: list[str],
    out: str | Path,
    formats: tuple[str, ...] = ("csv",),
    workers: int = 1,
    min_confidence: float = 0.5,
    resume: bool = False,
    engine: str = "local",
    address: str | None = None,
    batch_windows: int = 16,
    role: str | None = None,
    threads_per_worker: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Analyze `inputs` into `out`; returns the summary with the run's figures under "run"."""
    out = Path(out)
    run_path = out / "run.json"
    if run_path.is_file() and not resume:
        raise ConfigError(f"{out} already holds a run: add --resume to continue it, or choose another --out")
    missing = [raw for raw in inputs if not Path(raw).exists()]
    if missing:
        raise DataError(f"{missing[0]}: no such file or folder")
    settings = _settings(bundle, role, min_confidence, batch_windows)
    units = plan_units(inputs, settings["window_s"])
    if run_path.is_file():
        before = json.loads(run_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ConfigError(
                f"{out}: --resume with other settings than the run's ({', '.join(changed)}); use a new --out"
            )
    else:
        atomic_write_bytes(run_path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())
    journal_path = out / "journal.jsonl"
    done = read_journal(journal_path) if resume else {}
    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for tmp in [*out.glob(f".*{TEMP_SUFFIX}"), *results_dir.glob(f".*{TEMP_SUFFIX}")]:
        tmp.unlink(missing_ok=True)  # a write a killed run left half done

    def finished(u: dict[str, Any]) -> bool:
        e = done.get(u["key"])
        if e is None or e["status"] != "ok" or not (results_dir / f"{u['key']}.json").is_file():
            return False
        try:
            st = os.stat(u["path"])
        except OSError:
            return False
        return e["size"] == st.st_size and e["mtime_ns"] == st.st_mtime_ns

    todo = [u for u in units if not finished(u)]
    skipped = len(units) - len(todo)
    if skipped:
        log.info("analyze: --resume: %d of %d files already done", skipped, len(units))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, int(workers))
    threads = threads_per_worker or max(1, cores // workers)
    kwargs = {"bundle": bundle, "threads": threads, "batch_windows": batch_windows, "min_confidence": min_confidence}
    kwargs["role"] = settings["model_role"]
    log.info("analyze: %d files to do, engine %s, %d workers x %d threads", len(todo), engine, workers, threads)
    used_cores = workers if engine == "ray" else min(workers * threads, cores)
    progress = Progress(len(todo), used_cores)
    t0 = time.perf_counter()
    media_s = 0.0
    if todo:
        if engine == "ray":
            from .ray_engine import run_ray

            stream = run_ray(todo, kwargs, workers, address)
        elif engine == "local":
            stream = run_local(todo, kwargs, workers)
        else:
            raise ConfigError(f"unknown engine {engine!r}; valid: local, ray")
        with journal_path.open("a", encoding="utf-8") as journal:
            for res in stream:
                res.pop("wall_s", None)
                data = (json.dumps(res, sort_keys=True) + "\n").encode("utf-8")
                atomic_write_bytes(results_dir / f"{res['key']}.json", data)
                f = res.get("file") or {}
                entry = {
                    "key": res["key"],
                    "path": res["path"],
                    "status": res["status"],
                    "error": res["error"],
                    "size": f.get("size"),
                    "mtime_ns": f.get("mtime_ns"),
                    "sha256": f.get("sha256"),
                }
                journal.write(json.dumps(entry, sort_keys=True) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                media_s += res["media_s"]
                progress.update(res)
                if on_result is not None:
                    on_result(res)
    wall_s = time.perf_counter() - t0

    def results() -> Iterator[dict[str, Any]]:
        for u in units:
            yield json.loads((results_dir / f"{u['key']}.json").read_text(encoding="utf-8"))

    summary = write_outputs(out, results(), formats, settings["low_freq_hz"], settings["high_freq_hz"])
    entries = read_journal(journal_path)
    manifest = {
        **settings,
        "files": [
            {k: entries[u["key"]][k] for k in ("key", "path", "status", "size", "mtime_ns", "sha256")} for u in units
        ],
    }
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    summary["run"] = {
        "engine": engine,
        "workers": workers,
        "threads_per_worker": threads,
        "files_done_now": len(todo),
        "files_skipped": skipped,
        "media_s_now": round(media_s, 3),
        "wall_s": round(wall_s, 3),
        "x_realtime": round(media_s / wall_s, 1) if wall_s > 0 and media_s else None,
        "x_realtime_per_core": round(media_s / wall_s / used_cores, 1) if wall_s > 0 and media_s else None,
    }
    return summary


__all__ = ["Progress", "plan_units", "read_journal", "run_analyze", "run_local", "unit_key"]
