"""Shared fixtures. `shared_data`: the real data folder (EDGEAV_DATA, else ../shared/data beside the repository);
tests that use it skip with the reason when it is absent. Mark them `@pytest.mark.data`.

EDGEAV_REQUIRE_ALL=1 (what .ci/run sets): a test module or test that would be skipped because a Python module is
missing (`pytest.importorskip`, or a skip whose reason is an ImportError's "No module named ...") fails instead, so
that CI cannot pass with the GStreamer, daemon or export tests skipped for a missing gi, torch, onnxruntime or paho.
Skips for absent data (../shared/data), hardware (GPU, root for a tmpfs) or tools stay skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ALL_ENV = "EDGEAV_REQUIRE_ALL"
MISSING_MODULE_MARKS = ("No module named", "could not import")  # ImportError's words, importorskip's default reason


def require_all() -> bool:
    return os.environ.get(REQUIRE_ALL_ENV, "") not in ("", "0")


def _strict_importorskip(modname: str, *args: object, **kwargs: object) -> object:
    """pytest.importorskip that fails (a collection error at module level) when the module is missing."""
    try:
        return _importorskip(modname, *args, **kwargs)
    except pytest.skip.Exception as e:
        pytest.fail(
            f"{REQUIRE_ALL_ENV}=1: required module {modname!r} is missing ({e.msg}); install it "
            "(bash scripts/setup.sh) instead of skipping these tests",
            pytrace=False,
        )


_importorskip = pytest.importorskip
if require_all():  # conftest is imported before any test module: their module-level importorskip calls see this
    pytest.importorskip = _strict_importorskip  # type: ignore[assignment]


def _skip_reason(longrepr: object) -> str:
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def _is_missing_module(longrepr: object) -> bool:
    return any(m in _skip_reason(longrepr) for m in MISSING_MODULE_MARKS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Under EDGEAV_REQUIRE_ALL=1 a skip for a missing module (however it was raised) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if require_all() and report.skipped and not hasattr(report, "wasxfail") and _is_missing_module(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_ALL_ENV}=1: skipped for a missing module: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    report = outcome.get_result()
    if require_all() and report.skipped and _is_missing_module(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_ALL_ENV}=1: module skipped for a missing module: {_skip_reason(report.longrepr)}"


def shared_data_path() -> Path | None:
    env = os.environ.get("EDGEAV_DATA")
    p = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    p = shared_data_path()
    if p is None:
        pytest.skip("real data not found: set EDGEAV_DATA or put it at ../shared/data beside the repository")
    return p


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> object:
    """A test that runs `edgeav train/eval/bench` in this process applies the thread plan (edgeav.threads) to torch;
    put torch's intra-op count back afterwards, so later tests compute as they would alone."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
