"""INT8 by explicit quantization: Q/DQ nodes calibrated on real feeds, in the form the target device needs.

Two forms (chosen by the device profile's `int8_form`):

- `trt_symmetric`: int8 activations with zero-point 0 (symmetric) and per-channel symmetric int8 weights, bias left
  in float. This is what TensorRT's explicit-quantization path takes (TensorRT 10 deprecated and 11 removed the
  implicit calibrators, so the scales must be in the ONNX).
- `ort_u8s8`: uint8 (asymmetric) activations and per-channel int8 weights: the fast form for ONNX Runtime on CPUs.

The audio front end (every node whose name starts with `/frontend/`: STFT as Conv1d, mel MatMul, log) stays in
float, as do any extra node names a sensitivity check found fragile. What else stays in float is a property of the
model, not a list here: a backbone's registry meta `float_scopes` ({submodule path inside the backbone: why}) names
the parts that must stay float (BirdNET's in-network spectrogram: `birdnet/spec`), `int8_float_scopes` those that
stay float in INT8 only (BirdNET's CNN), and `model_float_prefixes(arch, precision)` turns them into ONNX name
prefixes (`/audio_backbone/birdnet/spec/`) for INT8, FP16 and the manifest. Without
calibration data it refuses: scales are never invented.

The quantizer is ONNX Runtime's static quantization (`quantize_static`, QDQ format). NVIDIA ModelOpt
(`modelopt.onnx.quantization`) also writes Q/DQ ONNX, but it targets TensorRT only (no uint8-activation CPU form),
pulls in a large dependency set, and ONNX Runtime is already an export dependency; one quantizer serves both forms.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgeav.errors import ExportError
from edgeav.export.onnx_export import _private_initializers
from edgeav.export.parity import compare_outputs, onnx_runner
from edgeav.onnx_session import run_all

if TYPE_CHECKING:
    from edgeav.devices import DeviceProfile

log = logging.getLogger(__name__)

Int8Form = Literal["trt_symmetric", "ort_u8s8"]
INT8_FORMS: tuple[str, ...] = ("trt_symmetric", "ort_u8s8")
FLOAT_PREFIXES: tuple[str, ...] = ("/frontend/",)
INPUT_DTYPES: dict[str, Any] = {"audio": np.float32, "image": np.uint8, "mask": np.float32}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
NO_CALIB_MSG = "INT8 needs calibration data: pass --calib-data"

Feeds = Mapping[str, np.ndarray]


def _form_options(form: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType

    if form == "trt_symmetric":
        return {
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        }
    if form == "ort_u8s8":
        return {
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True},
        }
    raise ExportError(f"unknown INT8 form {form!r}; valid: {', '.join(INT8_FORMS)}")


def _as_feed(raw: Feeds, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    if not isinstance(raw, Mapping):
        raise ExportError(f"a calibration feed must be a dict of input name -> array, got {type(raw).__name__}")
    missing = [n for n in input_names if n not in raw]
    if missing:
        raise ExportError(f"calibration feed lacks input(s) {missing}; it has {sorted(raw)}")
    return {n: np.ascontiguousarray(raw[n], dtype=INPUT_DTYPES.get(n, np.float32)) for n in input_names}


def _nonempty(feeds: Iterable[Feeds] | None) -> Iterator[Feeds]:
    """An iterator over `feeds` that is known to hold at least one item (else ExportError)."""
    if feeds is None:
        raise ExportError(NO_CALIB_MSG)
    it = iter(feeds)
    try:
        first = next(it)
    except StopIteration:
        raise ExportError(NO_CALIB_MSG + " (the calibration set is empty)") from None
    return itertools.chain([first], it)


def _make_reader(feeds: Iterable[Feeds], input_names: Sequence[str]) -> Any:
    """A CalibrationDataReader over ANY iterable of feed dicts {audio, image, mask} (consumed once)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedsReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            try:
                raw = next(self._it)
            except StopIteration:
                return None
            self.count += 1
            return _as_feed(raw, input_names)

    return FeedsReader()


def with_missing_modalities(feeds: Iterable[Feeds], every: int = 2) -> Iterator[Feeds]:
    """Each feed, and after every `every`-th one its audio-only and image-only copies (the other input zero, its
    mask column 0: what the runtime feeds when a sensor is missing). Calibrated on complete windows only, the
    mask-gated outputs (`logits = m_a m_i fused + m_a (1 - m_i) audio + ...`) get a zero range and a dead sensor's
    INT8 output collapses: a birdnet_v24 model with its picture masked agreed with FP32 on 7 % of windows."""
    for k, f in enumerate(feeds):
        yield f
        if every < 1 or k % every or "mask" not in f:
            continue
        m = np.asarray(f["mask"], dtype=np.float32)  # (B, 2)
        if not (m[..., 0].all() and m[..., 1].all()) or "audio" not in f or "image" not in f:
            continue  # copies of complete windows only
        yield {**f, "image": np.zeros_like(f["image"]), "mask": m * np.array([1.0, 0.0], np.float32)}
        yield {**f, "audio": np.zeros_like(f["audio"]), "mask": m * np.array([0.0, 1.0], np.float32)}


def _input_names(model: Any) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def float_node_names(model_path: str | Path, prefixes: Sequence[str] = FLOAT_PREFIXES) -> list[str]:
    """Names of the nodes that stay in float because of their prefix (the front end)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.name.startswith(tuple(prefixes))]


BRANCH_SCOPES: dict[str, str] = {"audio_backbone": "audio_backbone", "image_backbone": "image_backbone"}


def model_float_prefixes(arch: Mapping[str, Any], precision: Literal["int8", "fp16"] = "int8") -> dict[str, str]:
    """ONNX node-name prefix -> why it stays in float, for the model with architecture keys `arch` (a checkpoint's
    or manifest's `arch`): the front end (`FLOAT_PREFIXES`) and each backbone's registry meta `float_scopes`
    ({path inside the backbone: why}) under the branch's scope, e.g. `/audio_backbone/birdnet/spec/`; for INT8 also
    its `int8_float_scopes` (parts measured fragile under INT8 only)."""
    from edgeav.train.models.backbones import BACKBONES

    if precision not in ("int8", "fp16"):
        raise ExportError(f"float prefixes are for int8 or fp16, not {precision!r}")
    out = {p: "the in-model front end (STFT, mel, log; image normalization)" for p in FLOAT_PREFIXES}
    keys = ("float_scopes", "int8_float_scopes") if precision == "int8" else ("float_scopes",)
    for key, scope in BRANCH_SCOPES.items():
        name = arch.get(key)
        if not name:
            continue
        for meta_key in keys:
            for sub, why in dict(BACKBONES.meta(name).get(meta_key) or {}).items():
                out[f"/{scope}/{sub.strip('/')}/"] = f"{name}: {why}"
    return out


def check_float_prefixes(model_path: str | Path, prefixes: Sequence[str]) -> dict[str, int]:
    """Nodes per prefix in the ONNX file; a prefix that names no node is an ExportError (a float-only part that
    cannot be found would be quantized silently)."""
    import onnx

    names = [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node]
    counts = {p: sum(1 for n in names if n.startswith(p)) for p in prefixes}
    lost = [p for p, c in counts.items() if c == 0]
    if lost:
        raise ExportError(
            f"{Path(model_path).name}: no node named {lost[0]}... although the model declares it "
            f"float-only; it could not be kept out of INT8/FP16"
        )
    return counts


def form_for_profile(profile: DeviceProfile) -> str:
    """The INT8 form a device profile needs (DeviceError if it has no fast INT8)."""
    from edgeav.devices import check_precision

    check_precision(profile, "int8")
    return str(profile.int8_form)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    feeds: Iterable[Feeds] | None,
    form: Int8Form = "trt_symmetric",
    *,
    extra_float_nodes: Sequence[str] = (),
    float_prefixes: Sequence[str] = FLOAT_PREFIXES,
    calibrate_method: str = "minmax",
    reduce_range: bool = False,
    preprocess: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Quantize the FP32 ONNX at `fp32_path` to Q/DQ INT8 in `form`, calibrated on `feeds`.

    `feeds` is any iterable of dicts {audio (B, T) float32, image (B, 3, H, W) uint8, mask (B, 2) float32}; it is
    consumed once. `reduce_range` (ort_u8s8 only) quantizes weights to 7 bits, for x86 CPUs without VNNI.
    Returns the path written and a dict for the manifest (form, types, float-kept nodes, counts).

    Evaluate a `trt_symmetric` model with `simulate_qdq=True` (edgeav.export.gate.evaluate_onnx): ONNX Runtime's
    fused int8 CPU kernels can saturate on x86 without VNNI, which TensorRT does not; simulated Q/DQ runs every
    quantize / dequantize pair as float ops (graph optimizations off), the values the Q/DQ model stands for. A
    TensorRT engine's integer kernels still round differently: an engine is checked on its own
    (edgeav.export.tensorrt).
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    it = _nonempty(feeds)
    opts = _form_options(form)
    if reduce_range:
        if form != "ort_u8s8":
            raise ExportError("reduce_range (7-bit weights) applies to the ort_u8s8 form only")
        opts["reduce_range"] = True
    if calibrate_method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {calibrate_method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise ExportError(f"{fp32_path}: no such ONNX file")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="edgeav-quant-") as tmp:
        src = fp32_path
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            src = Path(tmp) / "pre.onnx"
            try:
                # shape inference only: graph optimization could rename or fuse the /frontend/ nodes
                quant_pre_process(
                    str(fp32_path), str(src), skip_optimization=True, skip_onnx_shape=False, skip_symbolic_shape=False
                )
            except Exception as e:  # symbolic shape inference fails on some graphs; plain shapes are enough
                log.warning(
                    "quantization pre-processing failed (%s: %s); quantizing the model as exported", type(e).__name__, e
                )
                src = fp32_path
        model = onnx.load(str(src), load_external_data=False)
        names = [n.name for n in model.graph.node]
        unknown = sorted(set(extra_float_nodes) - set(names))
        if unknown:
            raise ExportError(f"nodes to keep in float not found in {fp32_path.name}: {unknown[:5]}")
        prefixed = [n for n in names if n.startswith(tuple(float_prefixes))]
        if not prefixed:
            log.warning(
                "no node name starts with %s in %s: nothing of a front end is kept in float",
                list(float_prefixes),
                fp32_path.name,
            )
        exclude = sorted(set(prefixed) | set(extra_float_nodes))
        n_inits = len(model.graph.initializer)
        _private_initializers(model.graph, set(exclude))  # a float node must not read a weight quantized for another
        if len(model.graph.initializer) > n_inits:
            log.info(
                "%d initializer(s) shared by float-kept and quantized nodes copied for the float ones",
                len(model.graph.initializer) - n_inits,
            )
            src = Path(tmp) / "private.onnx"
            onnx.save(model, str(src))
        reader = _make_reader(it, _input_names(model))
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[calibrate_method]
        log.info(
            "quantizing %s to INT8 (%s, %s calibration); %d node(s) kept in float",
            fp32_path.name,
            form,
            calibrate_method,
            len(exclude),
        )
        tmp_out = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(src),
                str(tmp_out),
                reader,
                quant_format=QuantFormat.QDQ,
                nodes_to_exclude=exclude,
                calibrate_method=method,
                **opts,
            )
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"INT8 quantization of {fp32_path.name} failed: {type(e).__name__}: {e}") from e
        if reader.count == 0:  # pragma: no cover - _nonempty guarantees one
            raise ExportError(NO_CALIB_MSG)
        qmodel = onnx.load(str(tmp_out))
        n_q = sum(1 for n in qmodel.graph.node if n.op_type == "QuantizeLinear")
        n_dq = sum(1 for n in qmodel.graph.node if n.op_type == "DequantizeLinear")
        if n_q == 0:
            raise ExportError(
                f"INT8 quantization of {fp32_path.name} inserted no QuantizeLinear node: "
                "nothing was quantized (is every node kept in float?)"
            )
        onnx.save(qmodel, str(out_path))
    info = {
        "form": form,
        "activation_type": "int8" if form == "trt_symmetric" else "uint8",
        "activation_symmetric": form == "trt_symmetric",
        "weight_type": "int8",
        "weight_bits": 7 if reduce_range else 8,
        "per_channel_weights": True,
        "calibration_method": calibrate_method,
        "calibration_feeds": reader.count,
        "float_prefixes": list(float_prefixes),
        "float_nodes": exclude,
        "extra_float_nodes": sorted(extra_float_nodes),
        "quantize_linear_nodes": n_q,
        "dequantize_linear_nodes": n_dq,
        "quantizer": f"onnxruntime.quantization.quantize_static (onnxruntime {onnxruntime.__version__})",
    }
    log.info("wrote %s: %d Q / %d DQ nodes from %d calibration feeds", out_path, n_q, n_dq, reader.count)
    return out_path, info


def quantize_for_device(
    fp32_path: str | Path, out_path: str | Path, feeds: Iterable[Feeds] | None, profile: DeviceProfile, **kwargs: Any
) -> tuple[Path, dict[str, Any]]:
    """`quantize_int8` in the form `profile` needs; DeviceError where the profile has no fast INT8."""
    form = form_for_profile(profile)
    kwargs.setdefault("reduce_range", bool(getattr(profile, "int8_reduce_range", False)))
    path, info = quantize_int8(fp32_path, out_path, feeds, form, **kwargs)  # type: ignore[arg-type]
    info["target_profile"] = profile.name
    return path, info


# ------------------------------------------------------------------------------------------- sensitivity


def _run(
    model_path: Path, feeds: Sequence[dict[str, np.ndarray]], output: str, simulate_qdq: bool = False
) -> np.ndarray:
    """`output` over all `feeds`, concatenated on the batch axis (`simulate_qdq`: see `onnx_runner`)."""
    runner = onnx_runner(model_path, [output], simulate_qdq=simulate_qdq)
    return np.concatenate([r[output] for r in run_all(runner, feeds)], axis=0)


def logits_error(reference: np.ndarray, other: np.ndarray) -> float:
    """RMS difference relative to the RMS of the reference (0 = identical): the comparator's `rel_rms_error`."""
    rep = compare_outputs(
        [{"logits": reference}],
        [{"logits": other}],
        max_abs_diff=math.inf,
        min_agreement=0.0,
        reference_name="the float model",
    )
    return rep.rel_rms_error["logits"]


@dataclass
class SensitivityReport:
    """Which op types hurt most when quantized. `fragile_nodes` goes into `extra_float_nodes`."""

    baseline_error: float
    error_without: dict[str, float] = field(default_factory=dict)  # op type kept in float -> relative logits error
    fragile_op_types: list[str] = field(default_factory=list)
    fragile_nodes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_error": self.baseline_error,
            "error_without": dict(self.error_without),
            "fragile_op_types": list(self.fragile_op_types),
            "fragile_nodes": list(self.fragile_nodes),
        }


def sensitivity_check(
    fp32_path: str | Path,
    feeds: Iterable[Feeds] | None,
    form: Int8Form = "trt_symmetric",
    *,
    output: str = "logits",
    max_feeds: int = 16,
    min_gain: float = 0.25,
    max_op_types: int = 2,
    float_prefixes: Sequence[str] = FLOAT_PREFIXES,
    reduce_range: bool = False,
) -> SensitivityReport:
    """Coarse per-op-type sensitivity: quantize once with every node, then once per op type kept in float.

    An op type is fragile when keeping it in float cuts the relative logits error by at least `min_gain` (a
    fraction of the baseline error); at most `max_op_types` of them, the most helpful first. Uses the first
    `max_feeds` feeds (materialized: each trial calibrates again). Cost: 1 + (number of op types) quantizations.
    """
    import onnx

    fp32_path = Path(fp32_path)
    batch = list(itertools.islice(_nonempty(feeds), max_feeds))
    model = onnx.load(str(fp32_path), load_external_data=False)
    names_in = _input_names(model)
    batch = [_as_feed(f, names_in) for f in batch]
    ref = _run(fp32_path, batch, output)
    candidates: dict[str, list[str]] = {}
    for n in model.graph.node:
        if not n.name.startswith(tuple(float_prefixes)) and n.op_type in _QUANTIZABLE:
            candidates.setdefault(n.op_type, []).append(n.name)

    with tempfile.TemporaryDirectory(prefix="edgeav-sens-") as tmp:

        def trial(extra: Sequence[str], tag: str) -> float:
            out = Path(tmp) / f"{tag}.onnx"
            quantize_int8(
                fp32_path,
                out,
                batch,
                form,
                extra_float_nodes=extra,
                float_prefixes=float_prefixes,
                reduce_range=reduce_range,
                preprocess=False,
            )
            return logits_error(ref, _run(out, batch, output, simulate_qdq=form == "trt_symmetric"))

        base = trial((), "base")
        errors: dict[str, float] = {}
        for op_type, nodes in sorted(candidates.items()):
            try:
                errors[op_type] = trial(nodes, op_type)
            except ExportError as e:  # e.g. keeping every quantizable node in float leaves nothing to quantize
                log.info("sensitivity: keeping %s in float: %s", op_type, e)
    ranked = sorted((e, t) for t, e in errors.items() if base - e >= min_gain * base and base > 0)
    fragile = [t for _, t in ranked[:max_op_types]]
    report = SensitivityReport(base, errors, fragile, sorted(n for t in fragile for n in candidates[t]))
    log.info(
        "sensitivity: baseline relative logits error %.4f; %s",
        base,
        ", ".join(f"{t} in float -> {e:.4f}" for t, e in sorted(errors.items())) or "no candidates",
    )
    return report


# op types ONNX Runtime's QDQ quantizer quantizes (its registry, the ones that matter for CNN/attention models)
_QUANTIZABLE = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MatMul",
        "Gemm",
        "Add",
        "Mul",
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "Softmax",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Concat",
        "Resize",
        "InstanceNormalization",
        "LayerNormalization",
        "Where",
        "Gather",
        "Transpose",
        "Reshape",
        "Split",
        "Pad",
        "Squeeze",
        "Unsqueeze",
    }
)

__all__ = [
    "FLOAT_PREFIXES",
    "INT8_FORMS",
    "NO_CALIB_MSG",
    "SensitivityReport",
    "check_float_prefixes",
    "float_node_names",
    "form_for_profile",
    "logits_error",
    "model_float_prefixes",
    "quantize_for_device",
    "quantize_int8",
    "sensitivity_check",
    "with_missing_modalities",
]
