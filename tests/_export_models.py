"""A tiny fused audio+image model for export tests: a fixed-kernel STFT/mel/log front end named `frontend`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

WINDOW_SAMPLES = 1600
IMAGE_HW = 32
N_CLASSES = 3
LABELS = ["crow", "finch", "owl"]


def build_onnx(path: Path, seed: int = 0, image_hw: int = IMAGE_HW) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Frontend(nn.Module):  # STFT as Conv1d with fixed kernels, power, mel MatMul, log
        def __init__(self) -> None:
            super().__init__()
            n_fft, n_bins, n_mels = 64, 33, 8
            t = torch.arange(n_fft, dtype=torch.float32)
            k = torch.arange(n_bins, dtype=torch.float32)[:, None]
            win = torch.hann_window(n_fft)
            kern = torch.cat(
                [torch.cos(2 * torch.pi * k * t / n_fft) * win, -torch.sin(2 * torch.pi * k * t / n_fft) * win]
            )
            self.stft = nn.Conv1d(1, 2 * n_bins, n_fft, stride=32, bias=False)
            self.stft.weight.data = kern[:, None, :]
            self.stft.weight.requires_grad_(False)
            self.register_buffer("mel", torch.rand(n_bins, n_mels))
            self.n_bins = n_bins

        def forward(self, audio: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, 1, F, M)
            spec = self.stft(audio[:, None, :])  # (B, 2K, F)
            power = spec[:, : self.n_bins] ** 2 + spec[:, self.n_bins :] ** 2  # (B, K, F)
            mel = torch.matmul(power.transpose(1, 2), self.mel)  # (B, F, M)
            return torch.log(mel + 1e-6)[:, None]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = Frontend()
            self.audio = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, N_CLASSES)
            )
            self.image = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(16, N_CLASSES),
            )

        def forward(self, audio, image, mask):  # (B, T) f32, (B, 3, H, W) u8, (B, 2) f32
            la = self.audio(self.frontend(audio))
            li = self.image(image.float() / 255.0 - 0.5)
            logits = la * mask[:, :1] + li * mask[:, 1:]
            return logits, la, li

    net = Net().eval()
    ex = (
        torch.randn(1, WINDOW_SAMPLES),
        torch.randint(0, 255, (1, 3, image_hw, image_hw), dtype=torch.uint8),
        torch.ones(1, 2),
    )
    torch.onnx.export(
        net,
        ex,
        str(path),
        input_names=["audio", "image", "mask"],
        output_names=["logits", "logits_audio", "logits_image"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={k: {0: "batch"} for k in ("audio", "image", "mask", "logits", "logits_audio", "logits_image")},
    )
    return path


def export_raw_onnx(model: Any, inputs: tuple, path: Path, dynamic_batch: bool = False) -> Path:
    """torch's TorchScript exporter (opset 17, no grad) on an edgeav model's ExportWrapper with the example `inputs`
    (audio, image, mask), nothing more: the graph as torch names it, without the renaming, simplifying and checks of
    edgeav.export.onnx_export.export_onnx. `dynamic_batch`: axis 0 of every input and output is "batch"."""
    import torch

    from edgeav.train.models import INPUT_NAMES, OUTPUT_NAMES, ExportWrapper

    names = (*INPUT_NAMES, *OUTPUT_NAMES)
    with torch.no_grad():
        torch.onnx.export(
            ExportWrapper(model),
            inputs,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=17,
            dynamo=False,
            dynamic_axes={n: {0: "batch"} for n in names} if dynamic_batch else None,
        )
    return path


def feeds(n: int, seed: int = 1, batch: int = 2, image_hw: int = IMAGE_HW) -> list[dict[str, np.ndarray]]:
    """Real-ish feeds: tones plus noise, smooth images, both modalities present."""
    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(WINDOW_SAMPLES) / 16000.0
    for _ in range(n):
        f0 = rng.uniform(300, 3000, size=(batch, 1))
        audio = (0.5 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal((batch, WINDOW_SAMPLES))).astype(
            np.float32
        )
        base = rng.integers(0, 255, size=(batch, 3, 1, 1))
        grad = np.linspace(0, 60, image_hw)[None, None, None, :]
        image = np.clip(base + grad + rng.normal(0, 10, (batch, 3, image_hw, image_hw)), 0, 255).astype(np.uint8)
        out.append({"audio": audio, "image": image, "mask": np.ones((batch, 2), np.float32)})
    return out


def export_args(checkpoint: Path, calib_data: Path, out: Path, **kw: object) -> argparse.Namespace:
    """The arguments `edgeav export` hands run_export: an fp32 cpu bundle of `checkpoint` at `out` (calibration
    and test windows from `calib_data`) with the default gates; `kw` replaces any of them."""
    args = dict(
        checkpoint=str(checkpoint),
        out=str(out),
        int8=False,
        calib_data=str(calib_data),
        calib_windows=300,
        fp16=False,
        device="cpu",
        engine=False,
        max_drop=1.0,
        max_class_drop=5.0,
        dynamic_batch=False,
        json=True,
    )
    args.update(kw)
    return argparse.Namespace(**args)


# ------------------------------------------------------------------------------ a real (tiny) edgeav checkpoint

TINY_ARCH = {
    "name": "export-test-tiny",
    "audio_backbone": "audio_cnn",
    "image_backbone": "mobilenetv3_small",
    "head": "concat",
    "dropout": 0.0,
}


def make_synthetic_data(root: Path, n_classes: int = 3, per_class: int = 8) -> Path:
    """The SYNTHETIC paired data set of edgeav.train.synthetic (tones + coloured shapes), 2 s recordings, 64 px."""
    from edgeav.train.synthetic import make_paired_set

    return make_paired_set(root, n_classes=n_classes, per_class=per_class, seconds=2.0, size_px=64, seed=0)


def train_checkpoint(
    out: Path,
    data_root: Path,
    data: dict | None = None,
    arch: dict | None = None,
    steps: int = 40,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    cache_dir: Path | None = None,
    roi: tuple[float, float, float, float] | None = None,
) -> Path:
    """Train `arch` (default: TINY_ARCH with a 1 s / 32 px contract) for `steps` Adam steps on the train split of
    `data_root` and write a self-describing checkpoint (its train_config carries the data: section). The contract
    follows `data`: frames_per_window T > 1 gives a clip contract (T frames at data.frame_rate_hz, layout NTCHW);
    `roi` is the image region of interest the model crops."""
    import torch

    from edgeav.contract import AudioContract, ImageContract, InputContract
    from edgeav.schema.data import DataConfig
    from edgeav.train.data import load_dataset
    from edgeav.train.data.torch_dataset import TorchAVDataset
    from edgeav.train.models import build_model, save_checkpoint

    data_cfg = DataConfig.model_validate(
        {
            "window_s": 1.0,
            "hop_s": 0.5,
            "image_size_px": 32,
            "val_fraction": 0.25,
            "cache_dir": str(cache_dir) if cache_dir else None,
            **(data or {}),
        }
    )
    ds = load_dataset(data_cfg, data_root)
    clip = data_cfg.frames_per_window > 1  # T frames per window: the contract takes (B, T, 3, H, W)
    contract = InputContract(
        audio=AudioContract(sample_rate_hz=data_cfg.sample_rate_hz, window_s=data_cfg.window_s),
        image=ImageContract(
            height_px=data_cfg.image_size_px,
            width_px=data_cfg.image_size_px,
            n_frames=data_cfg.frames_per_window,
            frame_rate_hz=data_cfg.frame_rate_hz if clip else None,
            roi=roi,
        ),
    )
    arch_d = dict(arch or TINY_ARCH)
    arch_d["contract"] = contract.model_dump(mode="json")
    torch.manual_seed(seed)
    model = build_model(arch_d, ds.classes, pretrained=False)
    tds = TorchAVDataset(ds, "train")
    items = [tds[i] for i in range(len(tds))]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(items), (min(batch, len(items)),), generator=g).tolist()
        audio = torch.stack([items[i]["audio"] for i in idx])
        image = torch.stack([items[i]["image"] for i in idx])
        mask = torch.stack([items[i]["mask"] for i in idx])
        target = torch.tensor([items[i]["label"] for i in idx])
        outputs = model(audio, image, mask)
        loss = sum(torch.nn.functional.cross_entropy(o, target) for o in outputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    full = {"data": data_cfg.model_dump(mode="json")}
    return save_checkpoint(out, model, ds.classes, arch_d, contract, full, {"note": f"{steps} steps, test model"})
