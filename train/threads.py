"""torch's share of the process thread plan (`edgeav.threads`): its intra-/inter-op thread counts. The core plans
and sets the OpenMP environment before torch loads; the CLI calls `apply_torch_threads` right after."""

from __future__ import annotations

import logging

from edgeav.threads import ThreadPlan

log = logging.getLogger(__name__)


def apply_torch_threads(plan: ThreadPlan) -> None:
    """torch's intra-/inter-op thread counts from the process plan (nothing when the plan leaves torch to its
    defaults, or where torch is not installed: a field unit runs ONNX Runtime only)."""
    if plan.torch_intra is None:
        return
    try:
        import torch
    except ImportError:  # a field unit runs ONNX Runtime only
        return
    torch.set_num_threads(int(plan.torch_intra or 1))
    if plan.torch_inter is not None and torch.get_num_interop_threads() != plan.torch_inter:
        try:
            torch.set_num_interop_threads(int(plan.torch_inter))
        except RuntimeError:  # settable once, before any inter-op work: a second command in the same process
            log.warning(
                "threads: torch's inter-op pool was already started with %d threads; it keeps them",
                torch.get_num_interop_threads(),
            )
