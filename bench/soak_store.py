"""Storage soak (`bench/soak.py --hours 24`): hours of the field daemon's storage side in simulated time, at full
speed, with the real parts - `DetectionStore` (SQLite WAL, synchronous=FULL, batches of 64), its outbox published
by `MqttPublisher` to a real mosquitto on loopback (QoS 2; without mosquitto the rows are acknowledged at once) and
`StoreUpkeep` pruning acknowledged outbox rows (and, with --keep-days, archiving then deleting old detections)
every simulated 10 minutes on the simulated wall clock.

Detections arrive at --detections-per-hour of simulated time; after each batch of 64 the simulation waits until
the publisher has taken the outbox back to its in-flight window (in the field it is far faster than detections
arrive). The broker's acknowledgement is stamped with the real clock, which the simulated one outruns: at each prune
every acknowledged row is older than `outbox_keep_days`, so the outbox holds what one prune interval acknowledged
(plus what is in flight) rather than `outbox_keep_days` of rows. Every simulated 15 minutes a sample takes this
process's resident memory and open file descriptors (/proc/self), the log's size (the database file after a
passive WAL checkpoint; the WAL's size is recorded beside it), its rows and the
outbox's rows. Pass: resident memory grows at most 5 % after the warm-up (median of the first vs. the last quarter
of the samples after it), the fds of the last third are no higher than the first third's (+2), the outbox rows of
the last quarter are no more than those of the second (+10 %: bounded, not growing), and the log's bytes per 1,000
detections at the end are within 15 % of those at half time (linear). Evidence files are not written here (they
are bounded by evidence retention, measured by the daemon soak).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HOUR_NS = 3600 * 10**9
LABELS = ("crow", "finch", "owl", "wren", "robin")


def _self_figures() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith(("VmRSS:", "Threads:")):
                k, v = ln.split(":", 1)
                out[k] = int(v.split()[0])
    return {"rss_kb": out["VmRSS"], "threads": out["Threads"], "fds": len(os.listdir("/proc/self/fd"))}


def _start_broker(folder: Path) -> tuple[subprocess.Popen | None, int]:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        return None, 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\npersistence false\nallow_anonymous true\nuser {getpass.getuser()}\n"
        "max_inflight_messages 100\nmax_queued_messages 100000\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not listen")


def _median_of(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def store_soak(
    hours: float,
    per_hour: int,
    out: Path,
    keep_days: float | None = None,
    outbox_keep_days: float = 1 / 24,
    warmup_fraction: float = 0.1,
    max_rss_growth_pct: float = 5.0,
) -> int:
    from edgeav.runtime.growth import StoreUpkeep
    from edgeav.runtime.mqtt import MqttPublisher
    from edgeav.runtime.postprocess import Detection
    from edgeav.runtime.store import DetectionStore
    from edgeav.schema.daemon import MqttConfig, StoreConfig

    rng = random.Random(0)
    n_total = int(hours * per_hour)
    step_ns = HOUR_NS // per_hour
    t_sim0 = time.time_ns()  # simulated time starts now and runs ahead: acknowledgements (real time) are never later
    sim = SimpleNamespace(now_ns=t_sim0)
    with tempfile.TemporaryDirectory(prefix="edgeav-soak-store-") as tmp:
        t = Path(tmp)
        broker, port = _start_broker(t)
        db = t / "det.db"
        scfg = StoreConfig(keep_days=keep_days, outbox_keep_days=outbox_keep_days)
        store = DetectionStore(
            db,
            synchronous=scfg.synchronous,
            batch_max=scfg.batch_max_detections,
            batch_interval_s=3600.0,
            max_pending=scfg.max_pending_detections,
        )
        upkeep = StoreUpkeep(store, scfg, wall_ns=lambda: sim.now_ns)
        pub = None
        topic = "edgeav/soak/detection"
        if broker is not None:
            mcfg = MqttConfig(enabled=True, port=port, unit_name="soak", client_id="edgeav-soak", inflight_max=100)
            pub = MqttPublisher(mcfg, db, outbox_added=lambda: store.outbox_added).start()
            topic = pub.topics["detection"]
            if not pub.connected.wait(10):
                raise RuntimeError("the publisher did not connect to mosquitto")
        samples: list[dict] = []
        t0 = time.monotonic()
        next_prune, next_sample = 600 * 10**9, 900 * 10**9
        paced_s = 0.0
        try:
            for i in range(n_total):
                sim.now_ns += step_ns
                s_ns = (i % 1000) * 10**8
                label = LABELS[rng.randrange(len(LABELS))]
                det = Detection(
                    label=label,
                    class_index=LABELS.index(label),
                    start_ns=s_ns,
                    end_ns=s_ns + 10**9,
                    start_utc=None,
                    end_utc=None,
                    confidence=round(rng.uniform(0.5, 1.0), 4),
                    audio_confidence=round(rng.uniform(0.3, 1.0), 4),
                    image_confidence=None,
                    modalities=("audio",),
                    model_sha256="ab" * 32,
                    hits=2,
                )
                store.add(det, utc_ns=sim.now_ns, source="file:///soak.mkv", run_id="soak", outbox_topics=[topic])
                store.maybe_flush()
                if pub is None and store.commits and store.pending == 0:
                    store.outbox_mark_sent(seq for seq, *_ in store.outbox_pending(limit=1000))
                elif pub is not None and i % 64 == 63:
                    # the field rate (a few a second) is far below the publisher's: here, at full speed, the
                    # simulation waits for it every batch so simulated time stays true for the outbox too
                    w0 = time.monotonic()
                    while pub.pending() > mcfg.inflight_max and time.monotonic() - w0 < 30:
                        time.sleep(0.005)
                    paced_s += time.monotonic() - w0
                elapsed = sim.now_ns - t_sim0
                if elapsed >= next_prune:
                    next_prune += 600 * 10**9
                    upkeep.prune(now_ns=sim.now_ns)
                if elapsed >= next_sample or i == n_total - 1:
                    next_sample += 900 * 10**9
                    store.flush()
                    store.con.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the log's size, not how full its WAL is
                    size = db.stat().st_size
                    wal = db.with_name(db.name + "-wal")
                    outbox = store.con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                    samples.append(
                        {
                            "sim_h": round(elapsed / HOUR_NS, 3),
                            "t_s": round(time.monotonic() - t0, 2),
                            **_self_figures(),
                            "detections": i + 1,
                            "rows": store.count(),
                            "db_bytes": size,
                            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
                            "outbox_rows": outbox,
                            "outbox_pending": pub.pending() if pub else 0,
                        }
                    )
            store.flush()
            if pub is not None:  # let the broker take what is left (counted, not part of the pass figures)
                deadline = time.monotonic() + 30
                while pub.pending() and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            if pub is not None:
                pub.stop(timeout_s=2.0)
            rows_end = store.count()
            store.close()
            if broker is not None:
                broker.send_signal(signal.SIGTERM)
                broker.wait(10)
        wall = time.monotonic() - t0
        archive = db.with_name(db.name + ".archive")
        archive_bytes = sum(p.stat().st_size for p in archive.glob("*")) if archive.is_dir() else 0
    warm = [s for s in samples if s["sim_h"] >= warmup_fraction * hours]
    q = max(3, len(warm) // 4)
    rss_warm, rss_end = _median_of(warm[:q], "rss_kb"), _median_of(warm[-q:], "rss_kb")
    growth = 100.0 * (rss_end - rss_warm) / rss_warm
    third = max(1, len(warm) // 3)
    fds = [s["fds"] for s in warm]
    half = samples[len(samples) // 2]
    per_k_half = half["db_bytes"] / (half["rows"] / 1000)
    per_k_end = samples[-1]["db_bytes"] / (samples[-1]["rows"] / 1000)
    ob_q2 = max(s["outbox_rows"] for s in warm[q : 2 * q])
    ob_q4 = max(s["outbox_rows"] for s in warm[-q:])
    result = {
        "bench": "soak_store",
        "simulated_h": hours,
        "detections_per_hour": per_hour,
        "detections": n_total,
        "rows_end": rows_end,
        "keep_days": keep_days,
        "outbox_keep_days": outbox_keep_days,
        "broker": "mosquitto (QoS 2)" if broker is not None else "none (acknowledged at once)",
        "mqtt_sent": pub.sent if pub is not None else None,
        "wall_s": round(wall, 1),
        "waited_for_publisher_s": round(paced_s, 1),
        "rss_warm_mb": round(rss_warm / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_growth_pct": round(growth, 2),
        "fds_min": min(fds),
        "fds_max": max(fds),
        "fds_first_third_max": max(fds[:third]),
        "fds_last_third_max": max(fds[-third:]),
        "db_mb_end": round(samples[-1]["db_bytes"] / 2**20, 2),
        "db_kb_per_1000_half": round(per_k_half / 1024, 1),
        "db_kb_per_1000_end": round(per_k_end / 1024, 1),
        "archive_mb": round(archive_bytes / 2**20, 2),
        "outbox_rows_max_q2": ob_q2,
        "outbox_rows_max_q4": ob_q4,
        "outbox_rows_max": max(s["outbox_rows"] for s in samples),
        "pruned": upkeep.pruned,
        "wal_mb_max": round(max(s["wal_bytes"] for s in samples) / 2**20, 2),
        "pass_rss": growth <= max_rss_growth_pct,
        "pass_fds": max(fds[-third:]) <= max(fds[:third]) + 2,
        "pass_outbox": ob_q4 <= 1.1 * ob_q2 + 100,
        "pass_db_linear": keep_days is not None or abs(per_k_end - per_k_half) <= 0.15 * per_k_half,
        "load_avg": os.getloadavg(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "samples": samples,
    }
    result["pass"] = all(result[k] for k in ("pass_rss", "pass_fds", "pass_outbox", "pass_db_linear"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"soak_store: {hours:g} h simulated in {wall / 60:.1f} min, {n_total} detections ({per_hour}/h), "
        f"RSS {result['rss_warm_mb']} -> {result['rss_end_mb']} MB after warm-up ({growth:+.2f} %), "
        f"fds {min(fds)}..{max(fds)}, log {result['db_mb_end']} MB = {result['db_kb_per_1000_end']} kB per 1,000 "
        f"detections (half time {result['db_kb_per_1000_half']}), outbox <= {result['outbox_rows_max']} rows "
        f"(pruned {upkeep.pruned['outbox']}): {'PASS' if result['pass'] else 'FAIL'} -> {out}"
    )
    return 0 if result["pass"] else 1


__all__ = ["store_soak"]
