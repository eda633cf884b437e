"""Where one stage's work is reached from another: named here, in the core, as "module:function" strings.

A stage never names another stage's module (`tests/test_layout.py` fails on an import or a string that does): the
runtime reaches the development-only PyTorch backend, which lives in export because it runs torch, through
`import_provider("backend.pytorch")`. The core itself imports no stage; the import happens on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from edgeav.errors import UnknownNameError

PROVIDERS: dict[str, str] = {
    # a training checkpoint run by PyTorch behind the runtime's Backend interface (development only)
    "backend.pytorch": "edgeav.export.torch_backend:create_backend",
    # the TensorRT engine runner behind the same interface (the runtime's backend registry; export's post-build check)
    "backend.tensorrt": "edgeav.runtime.trt_runner:create_backend",
    # torch's intra-/inter-op thread counts of the process plan (edgeav.threads), set by the CLI
    "threads.torch": "edgeav.train.threads:apply_torch_threads",
}


def import_provider(key: str) -> Callable[..., Any]:
    """The function registered under `key`, imported now. ImportError (a missing package) propagates: the caller
    says what it needs in its own words."""
    if key not in PROVIDERS:
        raise UnknownNameError(f"unknown provider {key!r}; valid: {', '.join(sorted(PROVIDERS))}")
    module, function = PROVIDERS[key].split(":")
    return getattr(importlib.import_module(module), function)
