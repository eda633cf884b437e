"""`edgeav analyze` throughput and memory on this machine (issue 17's targets):

- audio archive (FLAC at 16, 32 and 48 kHz cut from the real soundscapes): x real time per core at 1 and 2 workers
  and the scaling from 1 to 2 (targets >= 300x per core at 2 workers, scaling >= 1.7x), with the quick start's
  bundle and, shorter, the birds bundle;
- video with sound (the 160 GRID clips): x real time per core at 2 workers (target >= 40x);
- Ray on this machine (a local cluster of 2 CPUs started here) vs --engine local on a 2-hour archive: overhead in
  wall time (target <= 20 %);
- a 10-hour WAV analyzed by one worker: its peak RSS (VmHWM, target < 500 MB).

    .venv/bin/python bench/analyze.py [--bundle runs/quickstart/bundle] [--birds-bundle runs/birds_final_int8]
                                      [--archive-h 2] [--birds-h 0.25] [--long-h 10] [--skip-ray] [--skip-long]

Writes bench/results/analyze.json and prints one line. Media are built in a temporary folder and removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from runtime_common import DATA, machine, proc_status_kb, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [DATA / "streams" / "birdnet_soundscape_120s.flac", DATA / "streams" / "opensoundscape_1min.wav"]


def _load(path: Path, rate: int) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
    return np.concatenate(parts)


def make_archive(folder: Path, hours: float, file_min: float = 10.0) -> float:
    """FLAC files of `file_min` minutes at 16/32/48 kHz, the soundscapes looped; returns seconds of media."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    n_files = max(1, int(round(hours * 60 / file_min)))
    rates = (16_000, 32_000, 48_000)
    base = {r: np.concatenate([_load(s, r) for s in SOURCES]) for r in rates}
    for i in range(n_files):
        r = rates[i % 3]
        n = int(file_min * 60 * r)
        x = np.resize(np.roll(base[r], i * 977), n)
        sf.write(str(folder / f"2024050{1 + i % 9}_{i:06d}.flac"), x, r, subtype="PCM_16")
    return n_files * file_min * 60


def make_long_wav(path: Path, hours: float, rate: int = 16_000) -> float:
    import soundfile as sf

    base = _load(SOURCES[0], rate)
    total = int(hours * 3600 * rate)
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16") as f:
        done = 0
        while done < total:
            block = base[: min(len(base), total - done)]
            f.write(block)
            done += len(block)
    return total / rate


def analyze(bundle: str, inputs: list[Path], out: Path, workers: int, **kw: Any) -> dict[str, Any]:
    from edgeav.runtime.analyze.run import run_analyze

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    # one ONNX Runtime thread per worker: N workers use N cores, so "per core" is media / wall / N
    s = run_analyze(
        bundle, [str(p) for p in inputs], out, workers=workers, min_confidence=0.5, threads_per_worker=1, **kw
    )
    wall = time.perf_counter() - t0  # whole call: start-up of the workers included
    media = s["totals"]["media_s"]
    return {
        "workers": workers,
        "files": s["totals"]["files"],
        "failed": s["totals"]["files_failed"],
        "media_h": round(media / 3600, 3),
        "wall_s": round(wall, 2),
        "x_realtime": round(media / wall, 1),
        "x_realtime_per_core": round(media / wall / workers, 1),
    }


def peak_child_rss_mb(run: Any) -> tuple[Any, float]:
    """Run `run()` while sampling the VmHWM of this process's worker processes; (its result, max MB)."""
    import multiprocessing

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for child in multiprocessing.active_children():  # the ProcessPoolExecutor's workers
                try:
                    peak[0] = max(peak[0], proc_status_kb("VmHWM", child.pid))
                except (OSError, KeyError):  # gone (or a zombie, no VmHWM) between listing and reading
                    continue
            stop.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        res = run()
    finally:
        stop.set()
        t.join()
    return res, peak[0] / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(ROOT / "runs/quickstart/bundle"))
    p.add_argument("--birds-bundle", default=str(ROOT / "runs/birds_final_int8"))
    p.add_argument("--archive-h", type=float, default=2.0, help="hours of the audio archive")
    p.add_argument("--birds-h", type=float, default=0.25, help="hours of audio for the birds bundle")
    p.add_argument("--long-h", type=float, default=10.0, help="hours of the long file")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-long", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if not SOURCES[0].is_file():
        print(f"skipped: {SOURCES[0]} absent (set EDGEAV_DATA)")
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    res: dict[str, Any] = {"machine": machine(), "bundle": args.bundle}
    tmp = Path(tempfile.mkdtemp(prefix="edgeav_bench_analyze_"))
    try:
        archive = tmp / "archive"
        res["archive_media_h"] = round(make_archive(archive, args.archive_h) / 3600, 3)
        analyze(args.bundle, [sorted(archive.iterdir())[0]], tmp / "o0", 1)  # warm-up: page cache, imports
        a1 = analyze(args.bundle, [archive], tmp / "o1", 1)
        a2 = analyze(args.bundle, [archive], tmp / "o2", 2)
        res["audio"] = {"w1": a1, "w2": a2, "scaling_1_to_2": round(a2["x_realtime"] / a1["x_realtime"], 2)}
        grid = DATA / "grid" / "clips"
        if grid.is_dir():
            res["video_grid"] = analyze(args.bundle, [grid], tmp / "ov", 2)
        if Path(args.birds_bundle).is_dir():
            birds = tmp / "birds"
            make_archive(birds, args.birds_h, file_min=5.0)
            res["audio_birds"] = analyze(args.birds_bundle, [birds], tmp / "ob", 2)
        if not args.skip_ray:
            ray_bin = str(Path(sys.executable).with_name("ray"))
            env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
            rtmp = Path("/tmp") / f"rayb{os.getpid()}"
            subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--include-dashboard", "false",
                            "--node-ip-address", "127.0.0.1", "--port", "6391", "--temp-dir", str(rtmp),
                            "--disable-usage-stats"], check=True, capture_output=True, env=env)  # fmt: skip
            try:
                r = analyze(args.bundle, [archive], tmp / "or", 2, engine="ray", address="127.0.0.1:6391")
                local = a2
                res["ray"] = {
                    "ray": r,
                    "local": local,
                    "overhead_pct": round(100 * (r["wall_s"] - local["wall_s"]) / local["wall_s"], 1),
                }
            finally:
                import ray

                if ray.is_initialized():
                    ray.shutdown()
                subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env)
                shutil.rmtree(rtmp, ignore_errors=True)
        if not args.skip_long:
            long = tmp / "long" / "20240501_000000.wav"
            long.parent.mkdir()
            media = make_long_wav(long, args.long_h)
            lr, peak = peak_child_rss_mb(lambda: analyze(args.bundle, [long], tmp / "ol", 1))
            res["long_file"] = {**lr, "file_gb": round(long.stat().st_size / 1e9, 2), "peak_worker_rss_mb": round(peak)}
            res["long_file"]["media_h"] = round(media / 3600, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a = res["audio"]
    parts = [
        f"audio {a['w2']['x_realtime_per_core']:.0f}x rt/core at 2 workers ({a['w1']['x_realtime_per_core']:.0f}x at 1,"
        f" scaling {a['scaling_1_to_2']:.2f}x)"
    ]
    if "video_grid" in res:
        parts.append(f"GRID video {res['video_grid']['x_realtime_per_core']:.0f}x rt/core")
    if "audio_birds" in res:
        parts.append(f"birds bundle {res['audio_birds']['x_realtime_per_core']:.0f}x rt/core")
    if "ray" in res:
        parts.append(f"ray overhead {res['ray']['overhead_pct']:+.0f}%")
    if "long_file" in res:
        parts.append(
            f"{res['long_file']['media_h']:.0f} h file: worker RSS {res['long_file']['peak_worker_rss_mb']} MB"
        )
    write_result("analyze", res, "analyze: " + "; ".join(parts), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
