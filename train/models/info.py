"""`edgeav model info NAME` and `edgeav model list`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeav.errors import ConfigError
from edgeav.result import CommandResult
from edgeav.train.models.backbones import BACKBONES
from edgeav.train.models.heads import HEADS
from edgeav.train.models.named import NAMED_MODELS, create_model, resolve_arch
from edgeav.train.models.stats import model_stats


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _fmt_flops(n: int) -> str:
    return f"{n / 1e9:.3f} G"


def _build_named(name: str, overrides: list[str]) -> Any:
    """A named model, with `--set model.KEY=VALUE` overrides applied as a `model:` config section would."""
    if not overrides:
        return create_model(name, pretrained=False)
    from edgeav.schema import load_config
    from edgeav.train.models.model import build_model

    NAMED_MODELS.get(name)  # unknown name: UnknownNameError with the valid ones
    bad = [o for o in overrides if not o.startswith("model.")]
    if bad:
        raise ConfigError(f"model info: only model.* keys can be overridden, got {bad[0]!r}")
    cfg = load_config(None, [f"model.name={name}", *overrides])
    arch = resolve_arch(cfg.model)  # no data section: the named model's contract unless model.contract is set
    return build_model(arch, int(NAMED_MODELS.meta(name)["num_classes"]), pretrained=False)


def model_info(name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Figures of a named model (optionally with `model.*` overrides), or of a checkpoint file (NAME ending in
    .pt / .pth)."""
    overrides = list(overrides or [])
    budget: dict[str, Any] | None = None
    if Path(name).suffix in (".pt", ".pth"):  # a checkpoint (a missing file is "not found", not an unknown name)
        from edgeav.train.models.checkpoint import load_checkpoint

        if overrides:
            raise ConfigError("model info: --set applies to named models, not to a checkpoint")
        model, info = load_checkpoint(name)
        source: dict[str, Any] = {"checkpoint": name, "metrics": info.metrics}
    else:
        model = _build_named(name, overrides)
        meta = NAMED_MODELS.meta(name)
        source = {"named_model": name, **{k: v for k, v in meta.items() if not k.startswith("budget_")}}
        if overrides:
            source["overrides"] = overrides
        if "budget_params" in meta:
            budget = {"target": meta.get("target"), "params": meta["budget_params"], "flops": meta["budget_flops"]}
    stats = model_stats(model)
    if budget is not None:
        budget["within"] = stats["params"]["total"] <= budget["params"] and stats["flops"]["total"] <= budget["flops"]
    return {
        "name": name,
        **source,
        "arch": {k: v for k, v in model.arch.items() if k != "contract"},
        "num_classes": model.num_classes,
        "contract": model.contract.model_dump(mode="json"),
        "input_shapes": {k: list(v) for k, v in model.contract.shapes(1).items()},
        "outputs": ["logits", "logits_audio", "logits_image"],
        **stats,
        "budget": budget,
        "licences": _licences(model.arch),
    }


def _raw_audio(arch: dict[str, Any]) -> bool:
    name = arch.get("audio_backbone")
    return bool(name) and BACKBONES.meta(name).get("input_kind") == "waveform"


def _licences(arch: dict[str, Any]) -> dict[str, str]:
    """Backbone -> the licence of weights it carries that are not edgeav's (registry meta `licence`: BirdNET)."""
    names = [arch.get("audio_backbone"), arch.get("image_backbone")]
    return {n: BACKBONES.meta(n)["licence"] for n in names if n and "licence" in BACKBONES.meta(n)}


def cmd_model_info(args: argparse.Namespace) -> CommandResult:
    d = model_info(args.name, getattr(args, "overrides", None))
    a = d["contract"]["audio"]
    im = d["contract"]["image"]
    arch = d["arch"]
    det = d["flops_detail"]
    lines = [
        f"{d['name']}: {arch.get('audio_backbone')} + {arch['image_backbone']} -> {arch['head']}"
        + (f"  ({d['summary']})" if d.get("summary") else ""),
        f"classes: {d['num_classes']}" + (" (default; a checkpoint sets its own)" if "named_model" in d else ""),
        "",
        f"{'branch':<8} {'params':>10} {'FLOPs':>10}",
    ]
    for b in ("audio", "image", "fusion", "total"):
        lines.append(f"{b:<8} {_fmt_params(d['params'][b]):>10} {_fmt_flops(d['flops'][b]):>10}")
    lines += [
        f"({d['flops_convention']}; one window, batch 1; of which front end: log-mel"
        f" {_fmt_flops(det['frontend.audio'])}, image normalization {_fmt_flops(det['frontend.image'])})",
    ]
    if d["budget"] is not None:
        bd = d["budget"]
        lines.append(
            f"budget ({bd['target']}): <= {_fmt_params(bd['params'])} params, <= {_fmt_flops(bd['flops'])}"
            f"FLOPs per window: {'within' if bd['within'] else 'OVER BUDGET'}"
        )
    lines += [
        "",
        "input contract:",
        f"  audio  (B, {d['input_shapes']['audio'][1]}) float32 mono, {a['sample_rate_hz']} Hz, {a['window_s']} s;"
        + (
            " raw waveform into the audio backbone (its own front end)"
            if _raw_audio(arch)
            else f" log-mel in model: n_fft {a['n_fft']}, hop {a['hop_length']}, win {a['win_length']} (hann),"
            f" {a['n_mels']} mels {a['fmin_hz']:g}-{a['fmax_hz']:g} Hz, floor {a['log_floor']:g}"
        ),
        f"  image  (B, {', '.join(map(str, d['input_shapes']['image'][1:]))}) uint8 RGB {im['layout']}"
        + (
            f", {im['n_frames']} frames at {im['frame_rate_hz']:g} Hz from the window's start"
            if im["n_frames"] > 1
            else ""
        )
        + f"; normalized in model mean {tuple(im['mean'])} std {tuple(im['std'])}"
        + (f"; cropped in model to roi (x0, y0, x1, y1) {tuple(im['roi'])}" if im.get("roi") else ""),
        "  mask   (B, 2) float32 [audio_present, image_present]",
        "outputs: logits, logits_audio, logits_image (B, C)",
    ]
    for backbone, licence in d["licences"].items():
        lines.append(
            f"licence: {backbone} carries weights under {licence}; so does any checkpoint, ONNX file or "
            f"bundle of this model"
        )
    return CommandResult(d, "\n".join(lines))


def cmd_model_list(args: argparse.Namespace) -> CommandResult:
    named = [
        {"name": n, **NAMED_MODELS.meta(n), **{k: v for k, v in NAMED_MODELS.create(n).items() if k != "contract"}}
        for n in NAMED_MODELS.names()
    ]
    backbones = [{"name": n, **BACKBONES.meta(n)} for n in BACKBONES.names()]
    heads = [{"name": n, **HEADS.meta(n)} for n in HEADS.names()]
    lines = ["named models:"]
    for m in named:
        lines.append(
            f"  {m['name']:<18} {m.get('audio_backbone') or '-':<17} {m['image_backbone']:<18} "
            f"{m['head']:<10} {m['summary']}"
        )
    lines.append("backbones:")
    for b in backbones:
        extra = f" [needs edgeav[{b['extra']}]]" if b.get("extra") else ""
        extra += f" [licence: {b['licence']}]" if b.get("licence") else ""
        lines.append(
            f"  {b['name']:<26} {b['modality']:<6} in={b['input_kind']:<9} dim={b['embed_dim']:<5} {b['source']}{extra}"
        )
    lines.append("fusion heads:")
    for h in heads:
        lines.append(f"  {h['name']:<12} uses {h['uses']:<11} {h['paper']}")
    data = json.loads(json.dumps({"named_models": named, "backbones": backbones, "heads": heads}))
    return CommandResult(data, "\n".join(lines))
