"""A tiny fused audio+image model for export tests: a fixed-kernel STFT/mel/log front end named `frontend`."""

from __future__ import annotations

from pathlib import Path

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
            kern = torch.cat([torch.cos(2 * torch.pi * k * t / n_fft) * win, -torch.sin(2 * torch.pi * k * t / n_fft) * win])
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
            self.audio = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Linear(8, N_CLASSES))
            self.image = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, N_CLASSES))

        def forward(self, audio, image, mask):  # (B, T) f32, (B, 3, H, W) u8, (B, 2) f32
            la = self.audio(self.frontend(audio))
            li = self.image(image.float() / 255.0 - 0.5)
            logits = la * mask[:, :1] + li * mask[:, 1:]
            return logits, la, li

    net = Net().eval()
    ex = (torch.randn(1, WINDOW_SAMPLES), torch.randint(0, 255, (1, 3, image_hw, image_hw), dtype=torch.uint8),
          torch.ones(1, 2))
    torch.onnx.export(net, ex, str(path), input_names=["audio", "image", "mask"],
                      output_names=["logits", "logits_audio", "logits_image"], opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "batch"} for k in ("audio", "image", "mask", "logits", "logits_audio", "logits_image")})
    return path


def feeds(n: int, seed: int = 1, batch: int = 2, image_hw: int = IMAGE_HW) -> list[dict[str, np.ndarray]]:
    """Real-ish feeds: tones plus noise, smooth images, both modalities present."""
    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(WINDOW_SAMPLES) / 16000.0
    for _ in range(n):
        f0 = rng.uniform(300, 3000, size=(batch, 1))
        audio = (0.5 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal((batch, WINDOW_SAMPLES))).astype(np.float32)
        base = rng.integers(0, 255, size=(batch, 3, 1, 1))
        grad = np.linspace(0, 60, image_hw)[None, None, None, :]
        image = np.clip(base + grad + rng.normal(0, 10, (batch, 3, image_hw, image_hw)), 0, 255).astype(np.uint8)
        out.append({"audio": audio, "image": image, "mask": np.ones((batch, 2), np.float32)})
    return out
