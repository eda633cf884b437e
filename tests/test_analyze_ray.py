"""`edgeav analyze --engine ray` on a real Ray cluster the test starts on loopback (a head with no CPUs for work and
two worker nodes of one CPU each): the same output as --engine local, also when a worker process is killed mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the test bundle's model is built with torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ray")

from _daemon_fixtures import free_port, make_bundle, scaled, wait_until  # noqa: E402
from _data_fixtures import write_wav  # noqa: E402

from edgeav.runtime.analyze.run import run_analyze  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def _ray(*args: str, env: dict) -> None:
    subprocess.run([RAY, *args], check=True, capture_output=True, timeout=scaled(180), env=env)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = Path("/tmp") / f"rayt{os.getpid()}"  # Ray's socket paths must stay short
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--disable-usage-stats", "--object-store-memory", str(80 * 1024 * 1024)]
    _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "0",
         "--include-dashboard", "false", "--temp-dir", str(tmp), *common, env=env)  # fmt: skip
    try:
        for _ in range(2):
            _ray("start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", *common, env=env)
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=scaled(120), env=env)
        shutil.rmtree(tmp, ignore_errors=True)


def _tree(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "journal.jsonl"
    }


def _actor_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"_RayAnalyzer" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_ray_matches_local_and_survives_a_killed_worker(cluster, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    root = tmp_path / "in"  # a path every node sees (one machine here)
    for i in range(8):
        write_wav(root / f"r{i}.wav", 6.0, rate_hz=16_000, freq_hz=200 + 150 * i)
    kw = {"formats": ("csv", "raven", "audacity", "json"), "min_confidence": 0.0, "workers": 2}
    local = run_analyze(str(bundle), [str(root)], tmp_path / "local", **kw)
    assert local["totals"]["files"] == 8

    killed: list[int] = []
    kill_done = threading.Event()

    def kill_one(res: dict) -> None:  # on the first result: kill -9 an actor's process while it works
        if not killed:
            pids = _actor_pids()
            assert pids, "no Ray actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            kill_done.set()

    remote = run_analyze(
        str(bundle), [str(root)], tmp_path / "ray", engine="ray", address=cluster, on_result=kill_one, **kw
    )
    assert killed and kill_done.is_set()
    wait_until("the killed actor process to be gone", lambda: killed[0] not in _actor_pids(), 30)
    assert remote["totals"] == local["totals"] and remote["run"]["engine"] == "ray"
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local")
