"""Random-weight models of the real architecture for runtime tests. torch is imported inside the functions only:
the runtime under test never sees it (it runs the ONNX file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgeav.contract import AudioContract, ImageContract, InputContract

GRID_LABELS = ("bin", "lay", "place", "set")


def grid_contract(window_s: float = 3.0, image_px: int = 64) -> InputContract:
    """The GRID model's contract (16 kHz, 3 s windows) with a small image side to keep tests fast."""
    return InputContract(
        audio=AudioContract(sample_rate_hz=16000, window_s=window_s),
        image=ImageContract(height_px=image_px, width_px=image_px),
    )


def export_random_model(
    path: Path,
    labels: Sequence[str] = GRID_LABELS,
    contract: InputContract | None = None,
    name: str = "edgeav-small",
    seed: int = 0,
) -> tuple[Path, InputContract]:
    """`create_model(name, labels)` with random weights, wrapped by ExportWrapper, exported with the legacy
    (TorchScript) exporter at opset 17 with a dynamic batch axis. Returns (path, contract)."""
    import warnings

    import torch

    from edgeav.train.models import ExportWrapper, create_model

    contract = contract or grid_contract()
    torch.manual_seed(seed)
    model = create_model(name, list(labels), contract=contract, pretrained=False).eval()
    shapes = contract.shapes(1)
    example = (
        torch.randn(shapes["audio"]) * 0.1,
        torch.randint(0, 256, shapes["image"], dtype=torch.uint8),
        torch.ones(shapes["mask"]),
    )
    names = ("logits", "logits_audio", "logits_image")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        torch.onnx.export(
            ExportWrapper(model).eval(),
            example,
            str(path),
            input_names=["audio", "image", "mask"],
            output_names=list(names),
            opset_version=17,
            dynamo=False,
            dynamic_axes={k: {0: "batch"} for k in ("audio", "image", "mask", *names)},
        )
    return Path(path), contract
