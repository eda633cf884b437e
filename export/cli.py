"""`edgeav export CHECKPOINT --out BUNDLE [--int8 --calib-data PATH] [--fp16] [--device PROFILE] [--engine]`.

What it does, in order (any failure stops it, and nothing is written at --out):

1. Checks what was asked against the device profile (INT8 on a Jetson Nano is refused with what it can do), that
   INT8 has calibration data, and that --out is free.
2. Rebuilds the model from the checkpoint and reads the checkpoint's own data set (its stored `data:` section; the
   folder from --calib-data).
3. FP32 ONNX (opset 17, static shapes unless --dynamic-batch, onnxslim, onnx.checker) and the parity check against
   PyTorch on validation windows: max |logit diff| <= 1e-4 and 100 % top-1 agreement. A clip model (contract
   n_frames T > 1) takes image (1, T, 3, H, W) uint8 with T static (only the batch axis can be dynamic).
4. --fp16: a half-precision copy (front end in float32) with its parity report against PyTorch.
5. --int8: Q/DQ in the profile's form, calibrated on >= 300 training windows stratified by class (both inputs; a
   still model's video window gives one feed per sampled frame, a clip model's one (1, T, 3, H, W) feed);
   FP32 and INT8 scored in ONNX Runtime on the held-out (test) split; the gate refuses a drop above --max-drop
   (overall) or --max-class-drop (any class). On a gate failure the sensitivity check runs once, the fragile op
   types go to float, and the gate runs again.
6. --engine: a TensorRT engine built from the exported ONNX (on the device itself; refused where TensorRT is absent).
7. The bundle: the files, labels, manifest (mirrored into each ONNX file's metadata), a .tar.gz beside it.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgeav.errors import ConfigError, ExportError
from edgeav.result import CommandResult
from edgeav.schema.export import ExportConfig

if TYPE_CHECKING:
    from edgeav.devices import DeviceProfile

log = logging.getLogger(__name__)


_FLAGS = {
    "max_drop_points": "--max-drop",
    "max_class_drop_points": "--max-class-drop",
    "calib_windows": "--calib-windows",
}


def tool_versions() -> dict[str, str]:
    """Versions of what made the bundle (the ones importable here)."""
    import importlib

    from edgeav import __version__

    out = {"edgeav": __version__, "python": platform.python_version()}
    for mod in ("torch", "onnx", "onnxruntime", "onnxslim", "numpy", "tensorrt"):
        try:
            out[mod] = str(importlib.import_module(mod).__version__)
        except Exception:  # noqa: BLE001 - not installed here: not part of the tool chain of this bundle
            continue
    return out


def _gate_figures(m: Any) -> dict[str, Any]:
    d = m.to_dict()
    d["accuracy"] = round(d["accuracy"], 4)
    d["per_class_recall"] = {k: round(v, 4) for k, v in d["per_class_recall"].items()}
    return d


def _missing_modality_figures(
    gate_mod: Any, fp32: Path, int8: Path, test: list[Any], labels: list[str], simulate: bool
) -> dict[str, Any]:
    """FP32 and INT8 test accuracy with one sensor missing (its input zero, its mask column 0), in percent; a drop
    above 5 points is logged loudly (informational: the gate itself scores complete windows)."""
    import numpy as np

    out: dict[str, Any] = {}
    for mode, keep in (("audio_only", (1.0, 0.0)), ("image_only", (0.0, 1.0))):
        samples = []
        for e in test:
            f = dict(e.feeds)
            f["mask"] = (f["mask"] * np.array(keep, np.float32)).astype(np.float32)
            gone = "image" if keep[1] == 0.0 else "audio"
            f[gone] = np.zeros_like(f[gone])
            samples.append((f, e.label))
        a = gate_mod.evaluate_onnx(fp32, samples, labels).accuracy
        b = gate_mod.evaluate_onnx(int8, samples, labels, simulate_qdq=simulate).accuracy
        out[mode] = {"fp32_accuracy": round(a, 4), "int8_accuracy": round(b, 4)}
        if a - b > 5.0:
            log.warning(
                "INT8 with %s: test accuracy %.2f %% vs FP32 %.2f %% (a missing sensor costs INT8 more)",
                mode.replace("_", " "),
                b,
                a,
            )
    return out


def _licences(arch: dict[str, Any]) -> dict[str, str]:
    """Backbone -> the licence of third-party weights it carries (registry meta `licence`, e.g. BirdNET's)."""
    from edgeav.train.models.backbones import BACKBONES

    names = [arch.get("audio_backbone"), arch.get("image_backbone")]
    return {n: str(BACKBONES.meta(n)["licence"]) for n in names if n and "licence" in BACKBONES.meta(n)}


def _check_request(args: argparse.Namespace, profile: DeviceProfile) -> None:
    from edgeav.devices import check_precision
    from edgeav.export.quantize import NO_CALIB_MSG

    if args.int8:
        check_precision(profile, "int8")  # DeviceError naming what the profile can do
        if not args.calib_data:
            raise ExportError(NO_CALIB_MSG + " (INT8 scales are never guessed)")
    if args.fp16:
        check_precision(profile, "fp16")
    if args.engine:
        if profile.preferred_backend != "tensorrt":
            raise ExportError(
                f"--engine builds a TensorRT engine; profile {profile.name!r} runs "
                f"{profile.preferred_backend}: choose a TensorRT --device"
            )
        from edgeav.export.tensorrt import require_tensorrt

        require_tensorrt(profile)
    if args.calib_windows < 1:
        raise ExportError(f"--calib-windows must be at least 1, got {args.calib_windows}")


def run_export(args: argparse.Namespace, cfg: ExportConfig | None = None) -> dict[str, Any]:
    """Do the export; returns the summary dict (also what --json prints)."""
    from edgeav.devices import load_profile

    t0 = time.monotonic()
    try:
        cfg = cfg or ExportConfig(
            max_drop_points=args.max_drop, max_class_drop_points=args.max_class_drop, calib_windows=args.calib_windows
        )
    except ValidationError as e:
        first = e.errors()[0]
        flag = _FLAGS.get(str(first["loc"][0]), str(first["loc"][0]))
        raise ConfigError(f"{flag} {first.get('input')!r}: {first['msg']}") from None
    profile = load_profile(args.device)
    _check_request(args, profile)  # refusals come before anything heavy is imported or read
    out = Path(args.out)
    if out.exists():
        raise ExportError(f"{out}: already exists (choose another --out, or remove it)")
    if not Path(args.checkpoint).is_file():
        raise ExportError(f"{args.checkpoint}: checkpoint not found")

    from edgeav.export import gate as gate_mod
    from edgeav.export.bundle import write_bundle
    from edgeav.export.onnx_export import (
        compare_outputs,
        convert_fp16,
        export_onnx,
        onnx_outputs,
        parity_check,
        set_metadata,
        torch_outputs,
    )
    from edgeav.export.quantize import (
        check_float_prefixes,
        model_float_prefixes,
        quantize_for_device,
        sensitivity_check,
        with_missing_modalities,
    )
    from edgeav.export.samples import as_eval_samples, class_counts, dataset_for_checkpoint, split_examples
    from edgeav.manifest import ArtifactManifest, sha256_file
    from edgeav.train.models import load_checkpoint, read_checkpoint

    ckpt = Path(args.checkpoint)
    model, info = load_checkpoint(ckpt)
    raw = read_checkpoint(ckpt)
    ckpt_sha = sha256_file(ckpt)
    labels = info.labels
    float_why = model_float_prefixes(info.arch, "int8")  # ONNX name prefix -> why it stays float (backbone meta)
    prefixes = list(float_why)
    fp16_prefixes = list(model_float_prefixes(info.arch, "fp16"))
    licences = _licences(info.arch)
    ds = dataset_for_checkpoint(raw.get("train_config") or {}, labels, args.calib_data)
    val = split_examples(ds, "val", limit=cfg.parity_windows, seed=0)

    metrics: dict[str, Any] = {"checkpoint": dict(info.metrics)}
    extra: dict[str, Any] = {
        "source_checkpoint": {"path": str(ckpt), "sha256": ckpt_sha},
        "export": {
            "opset": cfg.opset,
            "static_shapes": not args.dynamic_batch,
            "batch": "dynamic" if args.dynamic_batch else 1,
            "simplifier": "onnxslim",
            "checker": "onnx.checker.check_model(full_check=True)",
        },
        "data": {"path": str(args.calib_data) if args.calib_data else None, "root": str(ds.root)},
    }
    if licences:
        extra["licences"] = licences
    files: dict[str, Path] = {}
    precisions = ["fp32"]
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeav-export-") as tmpd:
        tmp = Path(tmpd)
        # --- FP32 + parity
        fp32 = export_onnx(model, tmp / "model_fp32.onnx", opset=cfg.opset, dynamic_batch=args.dynamic_batch)
        counts = check_float_prefixes(fp32, prefixes)
        extra["float_prefixes"] = {
            "int8": {p: {"why": float_why[p], "nodes": counts[p]} for p in prefixes},
            "fp16": fp16_prefixes,
        }
        feeds = [e.feeds for e in val]
        parity = parity_check(
            model, fp32, feeds, max_abs_diff=cfg.parity_max_abs_diff, min_agreement=100.0, rel_diff=cfg.parity_rel_diff
        )
        metrics["parity_fp32"] = parity.to_dict()
        extra["parity_split"] = {"split": "val", "windows": len(val), "per_class": class_counts(val, labels)}
        parity.raise_if_failed("FP32 ONNX")
        files["model_fp32"] = fp32
        result["parity_fp32"] = {
            "max_abs_diff": parity.max_abs_diff["logits"],
            "top1_agreement": parity.top1_agreement,
            "n": parity.n,
        }

        # --- FP16
        if args.fp16:
            fp16, fp16_info = convert_fp16(fp32, tmp / "model_fp16.onnx", keep_float_prefixes=fp16_prefixes)
            rep = compare_outputs(
                torch_outputs(model, feeds),
                onnx_outputs(fp16, feeds),
                max_abs_diff=cfg.fp16_max_abs_diff,
                min_agreement=cfg.fp16_min_agreement_pct,
            )
            metrics["parity_fp16"] = rep.to_dict()
            rep.raise_if_failed("FP16 ONNX")
            extra["fp16"] = fp16_info
            files["model_fp16"] = fp16
            precisions.append("fp16")
            result["parity_fp16"] = {"max_abs_diff": rep.max_abs_diff["logits"], "top1_agreement": rep.top1_agreement}

        # --- FP32 on the held-out split (the INT8 gate's reference; the bundle's figures in any case)
        if ds.samples("test"):
            test = split_examples(ds, "test", seed=0)
            fp32_m = gate_mod.evaluate_onnx(fp32, as_eval_samples(test), labels)
            metrics["fp32"] = _gate_figures(fp32_m)
            metrics["fp32"]["split"] = "test"
            result["fp32_accuracy"] = fp32_m.accuracy
            result["test_windows"] = fp32_m.n
        elif args.int8:
            raise ExportError(f"the test split of {ds.root} is empty: the INT8 gate has nothing to score on")
        else:
            log.warning("the test split of %s is empty: the bundle carries no test accuracy", ds.root)

        # --- INT8
        if args.int8:
            calib = split_examples(ds, "train", limit=cfg.calib_windows, seed=0, all_frames=True)
            if len(calib) < cfg.calib_windows:
                n_frames = info.contract.image.n_frames
                per = f"one feed per window, its {n_frames} frames in it" if n_frames > 1 else "one per frame"
                log.warning(
                    "CALIBRATION SHORT: the training split gives %d calibration feed(s) (%s), fewer than the "
                    "%d asked; calibrating on all of them",
                    len(calib),
                    per,
                    cfg.calib_windows,
                )
            form = profile.int8_form
            simulate = form == "trt_symmetric"
            int8_path = tmp / "model_int8.onnx"
            calib_feeds = [e.feeds for e in calib]  # + audio-only / image-only copies: a sensor may die in the field
            _, qinfo = quantize_for_device(
                fp32, int8_path, with_missing_modalities(calib_feeds), profile, float_prefixes=prefixes
            )
            int8_m = gate_mod.evaluate_onnx(int8_path, as_eval_samples(test), labels, simulate_qdq=simulate)
            g = gate_mod.accuracy_gate(fp32_m, int8_m, cfg.max_drop_points, cfg.max_class_drop_points)
            attempts = [{"float_op_types": [], "gate": g.to_dict(), "int8_accuracy": int8_m.accuracy}]
            if not g.passed and cfg.sensitivity_retry:
                log.warning(
                    "INT8 gate failed (%s); running the sensitivity check to find fragile op types",
                    "; ".join(g.failures),
                )
                sens = sensitivity_check(
                    fp32,
                    list(with_missing_modalities(calib_feeds)),
                    form,
                    max_feeds=16,
                    float_prefixes=prefixes,
                    reduce_range=bool(profile.int8_reduce_range),
                )
                extra["sensitivity"] = sens.to_dict()
                if sens.fragile_nodes:
                    _, qinfo = quantize_for_device(
                        fp32,
                        int8_path,
                        with_missing_modalities(calib_feeds),
                        profile,
                        extra_float_nodes=sens.fragile_nodes,
                        float_prefixes=prefixes,
                    )
                    int8_m = gate_mod.evaluate_onnx(int8_path, as_eval_samples(test), labels, simulate_qdq=simulate)
                    g = gate_mod.accuracy_gate(fp32_m, int8_m, cfg.max_drop_points, cfg.max_class_drop_points)
                    attempts.append(
                        {"float_op_types": sens.fragile_op_types, "gate": g.to_dict(), "int8_accuracy": int8_m.accuracy}
                    )
            metrics["int8_missing_modality"] = _missing_modality_figures(
                gate_mod, fp32, int8_path, test, labels, simulate
            )
            metrics["int8"] = _gate_figures(int8_m)
            metrics["int8"]["split"] = "test"
            metrics["gate"] = g.to_dict()
            metrics["gate"]["split"] = "test"
            metrics["gate"]["attempts"] = attempts
            qinfo["calibration"] = {
                "split": "train",
                "windows_asked": cfg.calib_windows,
                "feeds_used": len(calib),
                "windows_used": len({e.sample_id.split("#")[0] for e in calib}),
                "per_class": class_counts(calib, labels),
                "stratified": True,
                "missing_modality_copies": "audio-only and image-only copies of every 2nd feed",
                "inputs": ["audio", "image", "mask"],
                "image_shape": list(calib[0].feeds["image"].shape),
            }  # (1, [T,] 3, H, W)
            qinfo["evaluated_with"] = (
                "onnxruntime, Q/DQ simulated in float (the values the Q/DQ model stands for)"
                if simulate
                else "onnxruntime CPU integer kernels"
            )
            extra["int8"] = qinfo
            extra["float_nodes"] = qinfo["float_nodes"]
            result["int8_accuracy"] = int8_m.accuracy
            result["gate"] = {
                "passed": g.passed,
                "accuracy_drop_points": g.accuracy_drop_points,
                "failures": g.failures,
            }
            result["calibration_feeds"] = len(calib)
            g.raise_if_failed()
            files["model_int8"] = int8_path
            precisions.insert(0, "int8")

        # --- manifests into the ONNX files: FP32 first (its sha256 is the parent of the others)
        base = ArtifactManifest(
            kind="onnx",
            labels=labels,
            contract=info.contract,
            arch=info.arch,
            precision="fp32",
            parent_sha256=ckpt_sha,
            metrics=metrics,
            extra={"target_profile": profile.name, **({"licences": licences} if licences else {})},
        )
        set_metadata(fp32, base.to_json(), {"edgeav.precision": "fp32", "edgeav.labels": "\n".join(labels)})
        fp32_sha = sha256_file(fp32)
        for role, prec in (("model_fp16", "fp16"), ("model_int8", "int8")):
            if role in files:
                extra_role = {**base.extra}
                if prec == "int8":
                    extra_role["int8"] = extra["int8"]
                man = base.model_copy(update={"precision": prec, "parent_sha256": fp32_sha, "extra": extra_role})
                set_metadata(files[role], man.to_json(), {"edgeav.precision": prec, "edgeav.labels": "\n".join(labels)})

        # --- TensorRT engine (on the device only)
        if args.engine:
            from edgeav.export.tensorrt import build_checked_engine

            src_role = (
                "model_int8" if "model_int8" in files else ("model_fp16" if "model_fp16" in files else "model_fp32")
            )
            prec = src_role.split("_")[1]
            from edgeav.trt_cache import sidecar_path

            # built, then compared with ONNX Runtime on the parity windows (int8: and the accuracy gate on test)
            int8_gate = (
                {"test_samples": as_eval_samples(test), "labels": labels, "reference_metrics": fp32_m}
                if prec == "int8"
                else {}
            )
            eng, eng_check = build_checked_engine(
                files[src_role], profile, prec, feeds=feeds, cfg=cfg, contract=info.contract, **int8_gate
            )
            engine_copy = tmp / f"engine_{prec}.engine"
            shutil.copyfile(eng.path, engine_copy)
            shutil.copyfile(sidecar_path(eng.path), sidecar_path(engine_copy))
            files[f"engine_{prec}"] = engine_copy
            files[f"engine_{prec}_key"] = sidecar_path(engine_copy)
            extra["engine"] = {
                **eng.key.to_dict(),
                "source_role": src_role,
                "from_cache": eng.from_cache,
                "check": eng_check.to_dict(),
            }

        extra["precisions"] = precisions
        bundle_manifest = base.model_copy(update={"precision": precisions[0], "extra": {**extra}})
        write_bundle(out, files, bundle_manifest, profile.name, tool_versions())

    from edgeav.bundle import verify_bundle

    binfo = verify_bundle(out)
    sizes = {role: p.stat().st_size for role, p in binfo.files.items()}
    result.update(
        {
            "bundle": str(out),
            "tarball": str(out.with_name(out.name + ".tar.gz")),
            "profile": profile.name,
            "precisions": precisions,
            "files": {r: {"path": p.name, "bytes": sizes[r]} for r, p in binfo.files.items()},
            "labels": labels,
            "seconds": round(time.monotonic() - t0, 1),
        }
    )
    return result


def _one_line(r: dict[str, Any]) -> str:
    parts = [
        f"bundle {r['bundle']} ({r['profile']}; {', '.join(r['precisions'])})",
        f"parity max|diff| {r['parity_fp32']['max_abs_diff']:.2e}, top-1 {r['parity_fp32']['top1_agreement']:.1f} %",
    ]
    if "fp32_accuracy" in r and "int8_accuracy" not in r:
        parts.append(f"test accuracy fp32 {r['fp32_accuracy']:.2f} % ({r['test_windows']} windows)")
    if "int8_accuracy" in r:
        parts.append(
            f"test accuracy fp32 {r['fp32_accuracy']:.2f} % / int8 {r['int8_accuracy']:.2f} % "
            f"(gate passed, drop {r['gate']['accuracy_drop_points']:.2f} points)"
        )
    if "parity_fp16" in r:
        parts.append(f"fp16 max|diff| {r['parity_fp16']['max_abs_diff']:.2e}")
    mib = {k: v["bytes"] / 2**20 for k, v in r["files"].items() if k.startswith(("model_", "engine_"))}
    parts.append("sizes " + ", ".join(f"{k} {v:.2f} MiB" for k, v in sorted(mib.items())))
    return "; ".join(parts)


def cmd_export(args: argparse.Namespace) -> CommandResult:
    result = run_export(args)
    return CommandResult(result, _one_line(result))


__all__ = ["cmd_export", "run_export", "tool_versions"]
