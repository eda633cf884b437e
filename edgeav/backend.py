"""The runner interface every inference engine stands behind: ONNX Runtime and TensorRT on the field unit
(edgeav.runtime.backends, edgeav.runtime.trt_runner) and PyTorch in development (edgeav.export.torch_backend).

It lives in the core so that the runtime and the export stage implement and call it without importing each other.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from edgeav.contract import InputContract
from edgeav.errors import ModelError

OUTPUT_NAMES = ("logits", "logits_audio", "logits_image")


class Backend(abc.ABC):
    """What the runtime needs of an inference engine."""

    name: str = "?"

    @property
    @abc.abstractmethod
    def input_contract(self) -> InputContract: ...

    @abc.abstractmethod
    def infer(self, audio: np.ndarray, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """audio (B, S) float32, image (B, [T,] 3, H, W) uint8, mask (B, 2) float32 -> the three (B, C) logits."""

    @property
    def max_batch(self) -> int | None:
        """Most windows one `infer` call takes; None = any (dynamic batch axis). The safe default is 1."""
        return 1

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`infer` on feeds by input name (`edgeav.onnx_session.Runner`, what export's parity and gate call)."""
        missing = [n for n in self.input_contract.input_names if n not in feeds]
        if missing:
            raise ModelError(f"{self.name}: feeds lack input(s) {missing}; they have {sorted(feeds)}")
        return self.infer(*(feeds[n] for n in self.input_contract.input_names))

    def close(self) -> None:  # noqa: B027 - optional
        """Release the session / engine."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_inputs(self, audio: np.ndarray, image: np.ndarray, mask: np.ndarray) -> None:
        """Raise ModelError unless the arrays match the contract (dtype and shape)."""
        shapes = self.input_contract.shapes(batch=audio.shape[0] if audio.ndim else 1)
        for name, arr, dtype in (("audio", audio, np.float32), ("image", image, np.uint8), ("mask", mask, np.float32)):
            if arr.dtype != dtype or tuple(arr.shape) != shapes[name]:
                raise ModelError(
                    f"{self.name}: input {name!r} is {arr.dtype}{tuple(arr.shape)}, the contract says "
                    f"{np.dtype(dtype)}{shapes[name]}"
                )
