"""`edgeav data inspect PATH`: the first thing a user runs on their own data.

Prints classes, counts per split, durations and sample rates (from file headers: nothing is decoded for the
table), lists skipped files with reasons, and writes a PNG sheet with, per class, one photo (or the middle frame of
a video window) and the log-mel spectrogram of its first audio window (one file decoded per class, not cached).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edgeav.contract import AudioContract
from edgeav.errors import DataError, MediaError
from edgeav.result import CommandResult
from edgeav.schema.data import DataConfig
from edgeav.train.data import media
from edgeav.train.data.dataset import AVDataset, load_dataset
from edgeav.train.data.records import SPLITS, Sample

log = logging.getLogger(__name__)


def log_mel_db(
    audio: np.ndarray,
    rate_hz: int,
    n_fft: int = 512,
    hop: int = 160,
    n_mels: int = 64,
    fmin_hz: float = 50.0,
    fmax_hz: float | None = None,
    floor: float = 1e-10,
) -> np.ndarray:
    """Log-mel power spectrogram in dB, (n_mels, frames), for display only (HTK mel scale, Hann window, centred)."""
    fmax_hz = fmax_hz or rate_hz / 2
    x = np.pad(audio.astype(np.float32), n_fft // 2, mode="reflect" if audio.shape[0] > n_fft // 2 else "constant")
    n_frames = 1 + (x.shape[0] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None, :].astype(np.float32), axis=1)) ** 2  # (frames, bins)

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    mel_pts = np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2)
    hz_pts = 700.0 * (10 ** (mel_pts / 2595.0) - 1.0)
    bins_hz = np.linspace(0, rate_hz / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, bins_hz.shape[0]), dtype=np.float32)
    for m in range(n_mels):
        lo, c, hi = hz_pts[m], hz_pts[m + 1], hz_pts[m + 2]
        fb[m] = np.clip(np.minimum((bins_hz - lo) / max(c - lo, 1e-9), (hi - bins_hz) / max(hi - c, 1e-9)), 0, None)
    return 10.0 * np.log10(np.maximum(fb @ spec.T, floor))  # (n_mels, frames)


def _first(items: list[Sample], want: str) -> Sample | None:
    for s in items:
        if want == "audio" and s.audio is not None:
            return s
        if want == "visual" and (s.image is not None or s.video is not None):
            return s
    return None


def write_sheet(ds: AVDataset, out: Path) -> Path:
    """One cell per class: picture + log-mel of the first window of its first recording. Returns `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = ds.cfg
    contract = AudioContract(
        sample_rate_hz=cfg.sample_rate_hz, window_s=cfg.window_s, fmax_hz=min(8000.0, cfg.sample_rate_hz / 2)
    )
    by_class: dict[int, list[Sample]] = {i: [] for i in range(len(ds.classes))}
    for split in ("train", "val", "test"):
        for s in ds.samples(split):
            by_class[s.label].append(s)
    n = len(ds.classes)
    ncols = min(4, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows,
        2 * ncols,
        figsize=(4.4 * ncols, 2.3 * nrows),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.6] * ncols},
    )
    for ax in axes.ravel():
        ax.axis("off")
    for label, name in enumerate(ds.classes):
        r, c = divmod(label, ncols)
        ax_img, ax_spec = axes[r][2 * c], axes[r][2 * c + 1]
        vis, aud = _first(by_class[label], "visual"), _first(by_class[label], "audio")
        try:
            if vis is not None and vis.image is not None:
                pic = media.read_image(vis.image.file, cfg.image_size_px)
            elif vis is not None and vis.video is not None:
                times = vis.video.frame_times_ns
                pic = media.decode_frames(vis.video.file, [times[len(times) // 2]], cfg.image_size_px)[0]
            else:
                pic = None
            if pic is not None:
                ax_img.imshow(pic.transpose(1, 2, 0))  # (H, W, 3)
        except MediaError as e:
            log.warning("sheet: %s", e)
            ax_img.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax_img.transAxes)
        ax_img.set_title(name, fontsize=9, loc="left")
        if aud is None or aud.audio is None:
            ax_spec.text(0.5, 0.5, "no audio", ha="center", va="center", transform=ax_spec.transAxes)
            continue
        try:
            wave = media.decode_audio(
                aud.audio.file, cfg.sample_rate_hz, max_duration_ns=aud.audio.start_ns + aud.audio.duration_ns
            )
        except MediaError as e:
            log.warning("sheet: %s", e)
            ax_spec.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax_spec.transAxes)
            continue
        window = np.zeros(ds.window_samples, dtype=np.float32)
        window[: min(wave.shape[0], ds.window_samples)] = wave[: ds.window_samples]
        mel = log_mel_db(
            window,
            cfg.sample_rate_hz,
            contract.n_fft,
            contract.hop_length,
            contract.n_mels,
            contract.fmin_hz,
            contract.fmax_hz,
        )
        ax_spec.axis("on")
        ax_spec.imshow(
            mel,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=mel.max() - 80,
            vmax=mel.max(),
            extent=(0, cfg.window_s, 0, contract.n_mels),
        )
        ax_spec.set_yticks([])
        ax_spec.tick_params(labelsize=6)
        ax_spec.set_title(Path(aud.audio.file).name, fontsize=7, loc="right")
    fig.suptitle(
        f"{ds.root.name}: {ds.kind}, {n} classes; log-mel of the first {cfg.window_s:g} s window "
        f"at {cfg.sample_rate_hz} Hz",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def format_summary(s: dict) -> str:
    lines = [
        f"{s['root']}: {s['kind']} data set, {s['n_classes']} classes"
        + (f" (index: {Path(s['index_file']).name})" if s.get("index_file") else "")
    ]
    d = s["durations_s"]
    if d["min"] is not None:
        lines.append(
            f"audio: {d['total']:.1f} s in {sum(s['files'].get(k, 0) for k in ('audio', 'video'))} files "
            f"(min {d['min']:.2f} s, max {d['max']:.2f} s, mean {d['mean']:.2f} s); sample rates: "
            + ", ".join(f"{r} Hz x{n}" for r, n in s["sample_rates_hz"].items())
        )
    c = s["config"]
    lines.append(
        f"windows: {c['window_s']:g} s every {c['hop_s']:g} s at {c['sample_rate_hz']} Hz; "
        f"images {c['image_size_px']} px; split seed {c['seed']}"
    )
    lines.append("")
    head = f"{'class':<28}" + "".join(f"{sp:>8}" for sp in SPLITS)
    lines.append(head)
    lines.append("-" * len(head))
    for name in s["classes"]:
        lines.append(f"{name[:27]:<28}" + "".join(f"{s['splits'][sp]['per_class'].get(name, 0):>8}" for sp in SPLITS))
    lines.append("-" * len(head))
    lines.append(f"{'samples':<28}" + "".join(f"{s['splits'][sp]['samples']:>8}" for sp in SPLITS))
    lines.append(f"{'  audio windows':<28}" + "".join(f"{s['splits'][sp]['audio_windows']:>8}" for sp in SPLITS))
    if any(s["splits"][sp]["images"] for sp in SPLITS):
        lines.append(f"{'  images':<28}" + "".join(f"{s['splits'][sp]['images']:>8}" for sp in SPLITS))
    if any(s["splits"][sp]["videos"] for sp in SPLITS):
        lines.append(f"{'  videos':<28}" + "".join(f"{s['splits'][sp]['videos']:>8}" for sp in SPLITS))
    lines.append(f"{'groups':<28}" + "".join(f"{s['splits'][sp]['groups']:>8}" for sp in SPLITS))
    for note in s["notes"]:
        lines.append(f"note: {note}")
    if s["skipped"]:
        lines.append("")
        lines.append(f"skipped {s['n_skipped']}:")
        for item in s["skipped"]:
            lines.append(f"  {item['file']}: {item['reason']}")
    if s.get("sheet"):
        lines.append("")
        lines.append(f"sheet: {s['sheet']}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> CommandResult:
    from edgeav.schema import load_config

    cfg = load_config(getattr(args, "config", None), getattr(args, "overrides", None))
    data_cfg: DataConfig = cfg.data
    if getattr(args, "strict", False):
        data_cfg = data_cfg.model_copy(update={"strict": True})
    path = Path(args.path)
    if not path.exists():
        raise DataError(f"{path}: data set not found")
    ds = load_dataset(data_cfg, path)
    summary = ds.summary()
    sheet = (
        Path(args.sheet)
        if getattr(args, "sheet", None)
        else Path.cwd() / f"{(path.stem if path.is_file() else path.resolve().name)}_sheet.png"
    )
    summary["sheet"] = str(write_sheet(ds, sheet))
    return CommandResult(summary, format_summary(summary))


__all__ = ["cmd_inspect", "format_summary", "log_mel_db", "write_sheet"]
