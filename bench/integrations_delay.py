"""How long the daemon's main loop waits on its integrations per detection while every target is down.

    .venv/bin/python bench/integrations_delay.py [--detections 2000] [--rate-hz 100] [--out bench/results/integrations_delay.json]

The real parts, in this process: the detection log (DetectionStore, an outbox row per detection), MqttPublisher
with Home Assistant discovery pointed at a port where no broker listens (paho keeps reconnecting in its thread),
and a Notifier (Apprise) with two dead targets: a port that refuses connections and a server that accepts and never
answers (each send waits for the read timeout). Detections arrive at --rate-hz; for each, the time of exactly what
`Daemon._process` adds for the integrations after logging it (`_after_detection`: Home Assistant's counters and the
notification queue) is taken with perf_counter, and, beside it, the log's own `store.add`. Target: the integrations
never delay a detection by more than 1 ms (max). Writes JSON and one line.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_common import free_port, machine, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detections", type=int, default=2000)
    p.add_argument("--rate-hz", type=float, default=100.0)
    p.add_argument("--out", default=None, help="JSON result (default bench/results/integrations_delay.json)")
    args = p.parse_args(argv)

    from edgeav.runtime.daemon_integrations import DaemonIntegrations
    from edgeav.runtime.homeassistant import HomeAssistant
    from edgeav.runtime.mqtt import MqttPublisher, topics
    from edgeav.runtime.notify import Notifier
    from edgeav.runtime.postprocess import Detection
    from edgeav.runtime.store import DetectionStore, new_detection_id
    from edgeav.schema.daemon import MqttConfig
    from edgeav.schema.integrations import NotifyConfig

    labels = ["robin", "wren", "crow"]
    # a server that accepts connections and never answers: a notification target that hangs
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(1024)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(hang.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "det.db"
        store = DetectionStore(db, batch_interval_s=0.2)
        mcfg = MqttConfig(
            enabled=True, port=free_port(), unit_name="bench", homeassistant=True, reconnect_min_s=1, reconnect_max_s=1
        )
        tp = topics(mcfg)
        ha = HomeAssistant(mcfg, tp, "bench", labels, db, health=lambda: "ok")
        mqtt = MqttPublisher(mcfg, db, outbox_added=lambda: store.outbox_added, homeassistant=ha).start()
        ncfg = NotifyConfig(
            enabled=True,
            urls=[f"json://127.0.0.1:{free_port()}/refused", f"json://127.0.0.1:{hang.getsockname()[1]}/hangs"],
            timeout_s=2.0,
            retries=2,
            retry_backoff_s=0.5,
        )
        notifier = Notifier(ncfg, "bench", labels).start()
        host = type("Host", (DaemonIntegrations,), {})()
        host.homeassistant, host.notifier = ha, notifier
        integ_us: list[float] = []
        store_us: list[float] = []
        period = 1.0 / args.rate_hz
        t_next = time.perf_counter()
        for i in range(args.detections):
            label = labels[i % 3]
            det = Detection(label, i % 3, i * 10**8, (i + 30) * 10**8, None, None, 0.9, 0.9, 0.9, ("audio",), None, 1)
            utc = time.time_ns()
            did = new_detection_id(utc)
            t0 = time.perf_counter()
            store.add(det, detection_id=did, utc_ns=utc, outbox_topics=[tp["detection"]])
            t1 = time.perf_counter()
            host._after_detection(det, did, utc)
            t2 = time.perf_counter()
            store_us.append((t1 - t0) * 1e6)
            integ_us.append((t2 - t1) * 1e6)
            store.maybe_flush()
            t_next += period
            time.sleep(max(0.0, t_next - time.perf_counter()))
        counts = dict(notifier.counts)
        notifier.stop(timeout_s=0.5)
        mqtt.stop(timeout_s=0.2)
        store.close()
    integ_us.sort()
    store_us.sort()

    def q(xs: list[float], f: float) -> float:
        return round(xs[min(len(xs) - 1, int(f * len(xs)))], 2)

    result = {
        "detections": args.detections,
        "rate_hz": args.rate_hz,
        "broker": "down (no listener)",
        "notify_targets": ["refuses connections", "accepts and never answers"],
        "integrations_us": {
            "p50": q(integ_us, 0.5),
            "p99": q(integ_us, 0.99),
            "max": round(integ_us[-1], 2),
            "mean": round(statistics.fmean(integ_us), 2),
        },
        "store_add_us": {"p50": q(store_us, 0.5), "p99": q(store_us, 0.99), "max": round(store_us[-1], 2)},
        "notifier_counts": counts,
        "mqtt_connected": mqtt.connected.is_set(),
        "machine": machine(),
    }
    result["pass"] = integ_us[-1] <= 1000.0
    iu = result["integrations_us"]
    write_result(
        "integrations_delay",
        result,
        f"integrations_delay: {args.detections} detections at {args.rate_hz:g}/s, broker down, both notification "
        f"targets down: main loop +{iu['p50']} us p50, {iu['p99']} us p99, {iu['max']} us max per detection "
        f"(store.add itself {result['store_add_us']['p50']} us p50); notifications {counts}: "
        f"{'PASS' if result['pass'] else 'FAIL'} (<= 1 ms)",
        args.out,
    )
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
