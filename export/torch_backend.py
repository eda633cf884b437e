"""PyTorch as an inference backend, for development only (a field unit has no torch): it runs a training
checkpoint behind the runtime's `Backend` interface, so a replay or a cross-backend comparison can use the very
model that training wrote. The runtime reaches it by name (`create_backend("pytorch", ...)`) through a lazy import;
it lives here because the export stage may import `edgeav.train` (the runtime reaches it through the core's
`edgeav.providers`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeav.backend import OUTPUT_NAMES, Backend
from edgeav.contract import InputContract
from edgeav.errors import ModelError


class TorchBackend(Backend):
    """A checkpoint (`.pt` from `edgeav train`) on the CPU (or `device="cuda"`), no_grad, eval mode."""

    name = "pytorch"

    def __init__(
        self,
        model_path: str | Path,
        contract: InputContract | None = None,
        device: str = "cpu",
        threads: int = 0,
        **_: Any,
    ) -> None:
        import torch

        from edgeav.train.models import load_checkpoint

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: checkpoint not found")
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._device = torch.device(device)
        self._model, info = load_checkpoint(self.model_path, map_location=self._device)
        own = info.manifest.contract
        if contract is not None and contract != own:
            raise ModelError(f"{self.model_path}: the checkpoint's input contract differs from the one given")
        self._contract = own
        self.labels = list(info.manifest.labels)

    @property
    def input_contract(self) -> InputContract:
        return self._contract

    @property
    def max_batch(self) -> int | None:
        return None

    def infer(self, audio: np.ndarray, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        self.check_inputs(audio, image, mask)
        t = self._torch
        with t.no_grad():
            out = self._model(
                t.from_numpy(np.ascontiguousarray(audio)).to(self._device),
                t.from_numpy(np.ascontiguousarray(image)).to(self._device),
                t.from_numpy(np.ascontiguousarray(mask)).to(self._device),
            )
        return {k: v.detach().float().cpu().numpy() for k, v in zip(OUTPUT_NAMES, out)}  # each (B, C)

    def close(self) -> None:
        self._model = None


def create_backend(model_path: str | Path, contract: InputContract | None = None, **options: Any) -> Backend:
    return TorchBackend(model_path, contract, **options)


__all__ = ["TorchBackend", "create_backend"]
