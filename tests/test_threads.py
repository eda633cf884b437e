"""Threads: the auto rule, the CLI's OpenMP environment before torch loads, explicit counts honoured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeav.onnx_session import free_cores
from edgeav.schema import ThreadsConfig, load_config
from edgeav.threads import openmp_environment, plan_threads

REPO = Path(__file__).resolve().parent.parent

# Runs `edgeav ARGS` in this process, then a torch workload with short pauses between small parallel operators (a
# training step's rhythm) and reports torch's threads and the process's CPU time. Spinning idle OpenMP threads burn
# CPU through every pause; sleeping ones do not.
_PROBE = r"""
import json, os, sys, time
from edgeav.cli import main
rc = main(sys.argv[1:])
import torch
a = torch.randn(96, 96)
cpu0 = time.process_time()
for _ in range(200):
    for _ in range(3):
        (a @ a).relu_()
    time.sleep(0.002)
print(json.dumps({"rc": rc, "intra": torch.get_num_threads(), "inter": torch.get_num_interop_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpu_s": time.process_time() - cpu0}))
"""


def _probe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")
    }
    e.update(env or {})
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=300, env=e, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["stderr"] = r.stderr
    return out


def test_auto_is_the_cores_free_at_start() -> None:
    assert free_cores(2, 0.0) == 2  # an idle machine
    assert free_cores(2, 1.0) == 2  # only this process runs
    assert free_cores(2, 2.0) == 1  # one other job: it keeps its core
    assert free_cores(2, 6.0) == 1  # overloaded: still one thread
    assert free_cores(8, 3.0) == 6
    assert free_cores(4, 1.4) == 4  # rounded, not truncated
    plan = plan_threads(ThreadsConfig(), cores_usable=2, load_1min=2.0, environ={})
    assert (plan.torch_intra, plan.torch_inter, plan.onnxruntime, plan.openmp_passive) == (1, 1, 1, True)
    assert plan.describe() == (
        "threads: torch 1 (intra) 1 (inter), onnxruntime 1, OpenMP passive (cores free); cores free 1 of 2"
    )
    # torchrun's ranks on one machine share the cores free
    assert (
        plan_threads(ThreadsConfig(), cores_usable=8, load_1min=0.0, environ={"LOCAL_WORLD_SIZE": "4"}).torch_intra == 2
    )
    # the user's OMP_NUM_THREADS is what auto takes; an explicit count beats both
    assert (
        plan_threads(ThreadsConfig(), cores_usable=2, load_1min=0.0, environ={"OMP_NUM_THREADS": "1"}).torch_intra == 1
    )
    assert (
        plan_threads(
            ThreadsConfig(intra_op=3), cores_usable=2, load_1min=0.0, environ={"OMP_NUM_THREADS": "1"}
        ).torch_intra
        == 3
    )


def test_default_leaves_the_libraries_alone_and_passive_keeps_the_users_policy() -> None:
    old = plan_threads(ThreadsConfig(intra_op="default"), cores_usable=2, load_1min=0.0, environ={})
    assert old.torch_intra is None and old.onnxruntime == 0 and openmp_environment(old, {}) == {}
    new = plan_threads(ThreadsConfig(), cores_usable=2, load_1min=0.0, environ={})
    assert openmp_environment(new, {}) == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    assert openmp_environment(new, {"OMP_WAIT_POLICY": "ACTIVE"}) == {"KMP_BLOCKTIME": "0"}


def test_config_field_is_typed() -> None:
    assert load_config(None, ["threads.intra_op=4"]).threads.intra_op == 4
    assert load_config(None, ["threads.intra_op=default"]).threads.intra_op == "default"
    with pytest.raises(Exception, match="threads.intra_op"):
        load_config(None, ["threads.intra_op=many"])
    with pytest.raises(Exception, match="threads.intra_op"):
        load_config(None, ["threads.intra_op=0"])


def test_cli_core_does_not_load_torch() -> None:
    # the OpenMP wait policy only counts if it is in the environment before torch loads libgomp
    r = subprocess.run(
        [sys.executable, "-c", "import sys, edgeav.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.stdout.strip() == "False", r.stderr


def test_cli_stops_openmp_spinning(tmp_path: Path) -> None:
    args = ["--debug", "eval", "missing.pt", "--data", ".", "--threads"]  # --debug: eval logs the plan at debug
    new = _probe(tmp_path, *args, "2")
    old = _probe(tmp_path, *args, "default")
    assert new["rc"] != 0 and "checkpoint" in new["stderr"]  # the command itself fails: no checkpoint
    assert new["wait_policy"] == "PASSIVE" and old["wait_policy"] is None
    assert "threads: torch 2 (intra) 1 (inter), onnxruntime 2, OpenMP passive" in new["stderr"]
    assert (new["intra"], new["inter"]) == (2, 1)
    # the same work; idle threads that spin through the pauses take several times the CPU
    assert new["cpu_s"] < 0.5 * old["cpu_s"], (new["cpu_s"], old["cpu_s"])


def test_explicit_threads_are_honoured(tmp_path: Path) -> None:
    recipe = str(REPO / "train" / "grid.yaml")
    got = _probe(
        tmp_path,
        "--debug",  # the data is missing: train fails before it starts, where it would log the plan at INFO
        "train",
        "--config",
        recipe,
        "--data",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "threads.intra_op=1",
        "--set",
        "threads.inter_op=2",
    )
    assert (got["intra"], got["inter"]) == (1, 2)
    assert "threads: torch 1 (intra) 2 (inter), onnxruntime 1, OpenMP passive (set)" in got["stderr"]
    auto = _probe(tmp_path, "--debug", "bench", "missing", env={"OMP_NUM_THREADS": "1"})
    assert auto["intra"] == 1 and "(OMP_NUM_THREADS)" in auto["stderr"]
    quiet = _probe(tmp_path, "bench", "missing", "--threads", "1")  # without --debug the error stays one line
    assert quiet["intra"] == 1 and len(quiet["stderr"].strip().splitlines()) == 1, quiet["stderr"]


def test_onnxruntime_sessions_take_the_process_count(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(REPO / "tests"))
    from _export_models import build_onnx

    model = build_onnx(tmp_path / "m.onnx")
    code = (
        "import sys; from edgeav.cli import main; main(sys.argv[1:]); from edgeav.onnx_session import "
        f"create_session; s = create_session({str(model)!r}); "
        "print(s.get_session_options().intra_op_num_threads)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "bench", "missing", "--threads", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.stdout.strip().splitlines()[-1] == "3", r.stderr[-2000:]
