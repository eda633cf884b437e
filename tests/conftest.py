"""Shared fixtures. `shared_data`: the real data folder (EDGEAV_DATA, else ../shared/data beside the repository);
tests that use it skip with the reason when it is absent. Mark them `@pytest.mark.data`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
