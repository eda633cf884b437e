"""Phase II's data path: the frozen unimodal features of every example, computed once, and the batches an epoch of
the fusion head trains and validates on (mixup acts on the cached features)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeav.errors import DataError
from edgeav.schema.train import MixupConfig, TrainConfig
from edgeav.train.augment import mixup_tensors
from edgeav.train.data.torch_dataset import model_image
from edgeav.train.seeds import STREAM_PHASE2_NOISE, epoch_seed
from edgeav.train.task import audio_map, image_map

log = logging.getLogger(__name__)

# (inputs of PhaseNet on the device, soft target (B, C), mask (B, 2), label (B,) on the CPU)
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, torch.Tensor]


class Phase2Cache:
    """Frozen unimodal features of every example of one split, computed once.

    Audio: map (Na, Da, f, t) and embedding (Na, Da) per audio sample - and, with field noise and
    `noise_variants` V > 0, the same for V noisy copies of each window (stacked: copy c of sample i at c * Na + i,
    each epoch an example takes a noisy copy with the noise's probability); visual: map (Nv, Di, h, w) and embedding
    (Nv, Di) per visual sample (a photo, or the middle frame of a video window). `epoch_items(epoch)` pairs them as
    the data set pairs its samples for that epoch (species-paired data is re-paired every epoch)."""

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        split: str,
        seed: int,
        device: torch.device,
        batch_size: int = 32,
        noise: Any = None,
        noise_variants: int = 0,
    ) -> None:
        self.data, self.split, self.seed = data, split, seed
        self.noise = noise if noise is not None and noise.bank is not None and noise_variants > 0 else None
        self.variants = 1 + (noise_variants if self.noise is not None else 0)  # clean + noisy copies per window
        samples = data.samples(split)
        audio_samples = [s for s in samples if s.audio is not None]
        visual_samples = [s for s in samples if s.image is not None or s.video is not None]
        self.audio_ids = {s.id: i for i, s in enumerate(audio_samples)}
        self.visual_ids = {s.id: i for i, s in enumerate(visual_samples)}
        model.eval()
        with torch.no_grad():
            runs = [
                self._run(
                    audio_samples,
                    batch_size,
                    device,
                    self._audio_loader(v),
                    lambda x: audio_map(model, x),
                    model.audio_backbone,
                )
                for v in range(self.variants)
            ]
            self.a_map, self.a_emb, self.a_ok = (torch.cat([r[k] for r in runs]) for k in range(3))  # (V*Na, ...)
            self.v_map, self.v_emb, self.v_ok = self._run(
                visual_samples,
                batch_size,
                device,
                self._load_visual,
                lambda x: image_map(model, x),
                model.image_backbone,
            )
        self.n_audio = len(audio_samples)
        log.info(
            "phase II cache (%s): %d audio (x%d: clean + %d noisy), %d visual examples",
            split,
            len(audio_samples),
            self.variants,
            self.variants - 1,
            len(visual_samples),
        )

    def _audio_loader(self, variant: int) -> Callable:
        """Variant 0: the clean window; variant v > 0: the window with the run's field noise mixed in, each window
        at its own SNR and noise segment, drawn from (seed, v) - the same copies on every rank and every resume."""
        if variant == 0:
            return lambda s: self.data.load_audio(s.audio)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, variant, 0, STREAM_PHASE2_NOISE))
        mix = type(self.noise)(self.noise.cfg.model_copy(update={"prob": 1.0}), self.noise.bank)  # always noisy

        def load(s: Any) -> np.ndarray | None:
            a = self.data.load_audio(s.audio)
            if a is None:
                return None
            mixed = mix(torch.from_numpy(np.array(a, dtype=np.float32))[None], gen)
            return mixed[0].numpy()

        return load

    def _load_visual(self, s: Any) -> np.ndarray | None:
        if s.image is not None:
            photo = self.data.load_image(s.image)
            return None if photo is None else model_image(photo, self.data.cfg.frames_per_window)
        frames = self.data.load_frames(s.video)
        return None if frames is None else model_image(frames, self.data.cfg.frames_per_window)  # as TorchAVDataset

    @staticmethod
    def _run(
        samples: list, batch_size: int, device: torch.device, load: Callable, fmap: Callable, backbone: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps, embs, oks = [], [], []
        for j in range(0, len(samples), batch_size):
            arrays = [load(s) for s in samples[j : j + batch_size]]
            ok = torch.tensor([a is not None for a in arrays])
            ref = next((a for a in arrays if a is not None), None)
            if ref is None:
                raise DataError(f"phase II cache: no file of {len(arrays)} could be loaded")
            x = torch.from_numpy(np.stack([np.asarray(a if a is not None else np.zeros_like(ref)) for a in arrays]))
            m = fmap(x.to(device)).float()  # (b, D, h, w)
            maps.append(m.cpu())
            embs.append(backbone.forward_head(m).float().cpu())  # (b, D)
            oks.append(ok)
        if not maps:
            return torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        return torch.cat(maps), torch.cat(embs), torch.cat(oks)

    def epoch_items(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(audio index (N,), visual index (N,), label (N,)); -1 where the example lacks that modality."""
        ai, vi, y = [], [], []
        rng = np.random.default_rng([self.seed, int(epoch), 7])  # which copy (clean or noisy) each example takes
        p_noisy = self.noise.cfg.prob if self.noise is not None else 0.0
        for a, v in self.data.pairs(self.split, epoch, self.seed):
            copy = int(rng.integers(1, self.variants)) if self.variants > 1 and rng.random() < p_noisy else 0
            ai.append(copy * self.n_audio + self.audio_ids[a.id] if a is not None and a.id in self.audio_ids else -1)
            vi.append(self.visual_ids[v.id] if v is not None and v.id in self.visual_ids else -1)
            y.append((a or v).label)
        return torch.tensor(ai), torch.tensor(vi), torch.tensor(y)

    def batch(self, ai: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of the examples (ai, vi): (audio_map, image_map, audio_emb, image_emb, mask)."""
        has_a = (ai >= 0) & self.a_ok[ai.clamp_min(0)] if len(self.a_ok) else torch.zeros_like(ai, dtype=torch.bool)
        has_v = (vi >= 0) & self.v_ok[vi.clamp_min(0)] if len(self.v_ok) else torch.zeros_like(vi, dtype=torch.bool)
        mask = torch.stack([has_a, has_v], 1).float()  # (B, 2)
        return (
            self.a_map[ai.clamp_min(0)],
            self.v_map[vi.clamp_min(0)],
            self.a_emb[ai.clamp_min(0)],
            self.v_emb[vi.clamp_min(0)],
            mask,
        )

    def train_batches(
        self,
        epoch: int,
        plan: Callable[[int], list[list[int]]],
        n_classes: int,
        mixup: MixupConfig,
        gen: torch.Generator,
        device: torch.device,
    ) -> tuple[Iterator[Batch], list[list[int]]]:
        """The epoch's training batches of cached features, mixup applied, and the example indices of each batch;
        `plan(n)` splits the n examples of the epoch into this rank's batches."""
        ai_all, vi_all, y_all = self.epoch_items(epoch)
        batches = plan(len(y_all))

        def generate() -> Iterator[Batch]:
            for b in batches:
                t = torch.tensor(b)
                fa, fi, za, zi, mask = self.batch(ai_all[t], vi_all[t])
                label = y_all[t]
                target = F.one_hot(label, n_classes).float()  # (B, C)
                if mixup.enabled:
                    (fa, fi, za, zi), target = mixup_tensors([fa, fi, za, zi], target, mixup, gen)
                # No modality dropout here: a dropped example's output is a frozen auxiliary head's (no gradient
                # reaches the fusion), so it only added noise to the loss - a chance-level picture head's confident
                # mistakes swung phase II's training loss between 1.5 and 9.3 while its accuracy sat near 0.87.
                inputs = (fa.to(device), fi.to(device), za.to(device), zi.to(device), mask.to(device))
                yield inputs, target.to(device), mask.to(device), label

        return generate(), batches

    def val_batches(
        self, batch_size: int, device: torch.device
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        """(inputs on the device, label (B,)) over every example of the split, in order, unaugmented."""
        ai, vi, y = self.epoch_items(0)
        for j in range(0, len(y), batch_size):
            yield (
                tuple(t.to(device) for t in self.batch(ai[j : j + batch_size], vi[j : j + batch_size])),
                y[j : j + batch_size],
            )


def phase2_caches(
    model: nn.Module, data: Any, val_split: str, tc: TrainConfig, device: torch.device, field_noise: Any
) -> tuple[Phase2Cache, Phase2Cache]:
    """Phase II's caches of the train split (with `phase2_variants` noisy copies of each window under field noise)
    and of the validation split (clean)."""
    t = time.monotonic()
    noise_variants = tc.augment.noise.phase2_variants
    train = Phase2Cache(model, data, "train", tc.seed, device, tc.eval_batch_size, field_noise, noise_variants)
    val = Phase2Cache(model, data, val_split, tc.seed, device, tc.eval_batch_size)
    log.info("phase II: frozen features of train and val computed once in %.1f s", time.monotonic() - t)
    return train, val


__all__ = ["Batch", "Phase2Cache", "phase2_caches"]
