"""ONNX export of a trained model, and the parity check against PyTorch.

    path = export_onnx(model, out_path, opset=17, dynamic_batch=False)   # legacy TorchScript exporter, exact opset
    report = parity_check(model, path, feeds)                            # max |logit diff|, top-1 agreement
    report.raise_if_failed()

The parity check and the comparator live in edgeav.export.parity (re-exported here).

The exporter is torch's TorchScript-based one (`dynamo=False`): it writes exactly the opset asked for (the dynamo
exporter may raise it). Shapes are static (batch 1) unless `dynamic_batch`, then the batch axis is named "batch".
The graph is simplified with onnxslim, DFT columns that no mel filter reads are dropped (`edgeav.export.prune`,
exact), and it is checked with `onnx.checker` (full check, shape inference included).

Node names: the front end's nodes are renamed to start with "/frontend/" (`FLOAT_PREFIXES` of
edgeav.export.quantize): the tracer names a node after the chain of modules *called*, so the LogMel module called as
`self.frontend.audio(x)` from the classifier's forward gets "/model/audio/..." and not "/model/frontend/audio/...".
`_rename_nodes` drops the export wrapper's "/model" scope and puts the front end's submodules under "/frontend/"; an
export that ends with no front end node named so is an error (INT8 would quantize the log-mel).

Adaptive average pools: the TorchScript exporter refuses an `nn.AdaptiveAvgPool{1,2,3}d` whose output size does not
divide its input size (video_tcn pools each frame's map to 2x2, and the map of a region of interest is often odd:
train/grid.yaml's mouth box at 160 px gives 5x6 after three stride-2 convolutions). `export_onnx` exports a copy of
the model in which each such pool averages the same cells with static slices (`SlicedAdaptiveAvgPool`, torch's own
cell rule), so the graph computes what the model computes; the parity check compares it with the original model.

`set_metadata` mirrors a manifest into the ONNX file's metadata_props (key "edgeav.manifest", plus a few flat keys).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeav.errors import ExportError
from edgeav.export.parity import (  # noqa: F401 - the parity check's names, re-exported where they were
    OUTPUT_NAMES,
    PARITY_MAX_ABS_DIFF,
    PARITY_REL_DIFF,
    ParityReport,
    compare_outputs,
    onnx_outputs,
    parity_check,
    torch_outputs,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
WRAPPER_SCOPE = "/model"  # ExportWrapper keeps the classifier as `self.model`
FRONTEND_SCOPE = "/frontend"
METADATA_KEY = "edgeav.manifest"


def _rename_nodes(model_proto: Any, frontend_children: Sequence[str], classifier_children: Sequence[str]) -> int:
    """Drop the wrapper scope and put the front end under /frontend/; returns how many nodes are front end."""
    clash = sorted(set(frontend_children) & set(classifier_children))
    if clash:
        raise ExportError(
            f"front end submodule name(s) {clash} clash with the classifier's own submodules; "
            "cannot tell their ONNX nodes apart"
        )
    n_front = 0
    seen: set[str] = set()
    for node in model_proto.graph.node:
        name = node.name
        if name.startswith(WRAPPER_SCOPE + "/"):
            name = name[len(WRAPPER_SCOPE) :]
        for child in frontend_children:
            if name.startswith(f"/{child}/"):
                name = FRONTEND_SCOPE + name
                break
        if name.startswith(FRONTEND_SCOPE + "/"):
            n_front += 1
        if name in seen:  # pragma: no cover - the rule above is injective on exporter names
            raise ExportError(f"renaming ONNX nodes made a duplicate name {name!r}")
        seen.add(name)
        node.name = name
    return n_front


def _sliced_pool_class() -> type:
    """`SlicedAdaptiveAvgPool` (defined on first use: torch is imported inside)."""
    global _SLICED_POOL
    if _SLICED_POOL is not None:
        return _SLICED_POOL
    import torch
    from torch import nn

    class SlicedAdaptiveAvgPool(nn.Module):
        """An adaptive average pool over the last `len(output_size)` axes that exports to ONNX for any sizes: where
        an output size divides its input size it is torch's own pool; elsewhere cell i of an axis of n inputs and m
        outputs is the mean of inputs floor(i n / m) .. ceil((i + 1) n / m) - 1 (torch's rule), as static slices.
        A box mean is the mean over one axis of the means over the other, so going axis by axis is exact."""

        def __init__(self, output_size: tuple[int | None, ...]) -> None:
            super().__init__()
            self.output_size = tuple(output_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., n_1, ..., n_k) -> (..., m_1, ..., m_k)
            k = len(self.output_size)
            sizes = [int(n) for n in x.shape[x.dim() - k :]]  # static spatial sizes (the batch axis may be symbolic)
            want = [n if m is None else int(m) for n, m in zip(sizes, self.output_size)]
            if all(n % m == 0 for n, m in zip(sizes, want)):
                fn = (
                    torch.nn.functional.adaptive_avg_pool1d,
                    torch.nn.functional.adaptive_avg_pool2d,
                    torch.nn.functional.adaptive_avg_pool3d,
                )[k - 1]
                return fn(x, want if k > 1 else want[0])
            out = x
            for i, (n, m) in enumerate(zip(sizes, want)):
                if n == m:
                    continue
                dim = x.dim() - k + i
                bounds = [((j * n) // m, -(-((j + 1) * n) // m)) for j in range(m)]  # [start, end) of cell j
                cells = [out.narrow(dim, a, b - a).mean(dim=dim, keepdim=True) for a, b in bounds]
                out = torch.cat(cells, dim=dim)
            return out

    _SLICED_POOL = SlicedAdaptiveAvgPool
    return SlicedAdaptiveAvgPool


_SLICED_POOL: type | None = None


def exportable_copy(model: Any) -> tuple[Any, list[str]]:
    """A deep copy of `model` (eval mode) with every `nn.AdaptiveAvgPool{1,2,3}d` of an output size above 1 replaced
    by a `SlicedAdaptiveAvgPool` of the same output size (same module name, so ONNX node names keep their scopes); a
    global pool (output 1) divides any size and stays. Returns (copy, names of the replaced modules); without any,
    the model itself. The model is never changed."""
    from torch import nn

    pools = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}

    def global_pool(m: Any) -> bool:
        size = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,)
        return all(s == 1 for s in size)

    targets = [name for name, m in model.named_modules() if type(m) in pools and not global_pool(m)]
    if not targets:
        return model, []
    twin = copy.deepcopy(model).eval()
    sliced = _sliced_pool_class()
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = twin.get_submodule(parent_name) if parent_name else twin
        old = getattr(parent, child)
        k = pools[type(old)]
        size = old.output_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size,) * k  # (m_1, ..., m_k); None keeps an axis
        setattr(parent, child, sliced(size))
    return twin, targets


def export_onnx(
    model: Any, out_path: str | Path, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, simplify: bool = True
) -> Path:
    """Export an AVClassifier (edgeav.train.models) to ONNX at `out_path`: inputs audio (B, S) float32, image
    (B, 3, H, W) uint8 (a clip model, T = contract.image.n_frames > 1: (B, T, 3, H, W), T static), mask (B, 2)
    float32; outputs logits, logits_audio, logits_image (B, C). Returns the path."""
    import onnx
    import torch

    from edgeav.train.models import INPUT_NAMES, ExportWrapper, example_inputs

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    traced, swapped = exportable_copy(model)
    if swapped:
        log.info("export: adaptive average pool(s) %s exported as static slices (same cells)", ", ".join(swapped))
    wrapper = ExportWrapper(traced).eval()  # the exporter restores the wrapper's mode after export: keep it eval
    example = example_inputs(model.contract, batch=1)
    dynamic_axes = {n: {0: "batch"} for n in (*INPUT_NAMES, *OUTPUT_NAMES)} if dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="edgeav-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
                torch.onnx.export(
                    wrapper,
                    example,
                    str(raw),
                    input_names=list(INPUT_NAMES),
                    output_names=list(OUTPUT_NAMES),
                    opset_version=int(opset),
                    dynamo=False,
                    do_constant_folding=True,
                    dynamic_axes=dynamic_axes,
                )
        except Exception as e:
            raise ExportError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        finally:
            model.eval()
        proto = onnx.load(str(raw))
    frontend = getattr(model, "frontend", None)
    front_children = [n for n, _ in frontend.named_children()] if frontend is not None else []
    own = [n for n, _ in model.named_children() if n != "frontend"]
    n_front = _rename_nodes(proto, front_children, own)
    if simplify:
        proto = _slim(proto)
    from edgeav.export.prune import prune_discarded_columns

    prune_discarded_columns(proto)  # exact: DFT columns no mel filter reads (BirdNET's spectrograms)
    n_front = sum(1 for n in proto.graph.node if n.name.startswith(FRONTEND_SCOPE + "/"))
    if n_front == 0:
        raise ExportError(
            "the exported graph has no node named /frontend/...: the log-mel front end could not be "
            "located, so INT8 could not keep it in float"
        )
    got = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    if got.get("ai.onnx") != int(opset):
        raise ExportError(f"the exporter wrote opset {got.get('ai.onnx')}, not the {opset} asked for")
    check_model(proto)
    onnx.save(proto, str(out_path))
    log.info(
        "exported %s: opset %d, %s batch, %d nodes (%d in the front end)",
        out_path.name,
        opset,
        "dynamic" if dynamic_batch else "static",
        len(proto.graph.node),
        n_front,
    )
    return out_path


def _slim(proto: Any) -> Any:
    import onnxslim

    before = len(proto.graph.node)
    try:
        slim = onnxslim.slim(proto)
    except Exception as e:
        raise ExportError(f"onnxslim failed: {type(e).__name__}: {e}") from e
    if slim is None:  # pragma: no cover - onnxslim returns None only when writing to a path
        raise ExportError("onnxslim returned no model")
    log.info("onnxslim: %d -> %d nodes", before, len(slim.graph.node))
    return slim


def check_model(proto: Any) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, shape inference errors
        raise ExportError(f"onnx.checker refused the exported model: {str(e).splitlines()[0]}") from e


def set_metadata(path: str | Path, manifest_json: str, flat: Mapping[str, str] | None = None) -> None:
    """Write the manifest (and `flat` key/values) into the ONNX file's metadata_props, in place."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    keys = {METADATA_KEY: manifest_json, **{str(k): str(v) for k, v in (flat or {}).items()}}
    kept = [p for p in proto.metadata_props if p.key not in keys]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for k, v in keys.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def manifest_from_onnx(path: str | Path) -> dict[str, Any]:
    meta = read_metadata(path)
    if METADATA_KEY not in meta:
        raise ExportError(f"{path}: no {METADATA_KEY} in the ONNX metadata")
    return json.loads(meta[METADATA_KEY])


# ------------------------------------------------------------------------------------------------ FP16


def convert_fp16(
    fp32_path: str | Path, out_path: str | Path, *, keep_float_prefixes: Sequence[str] = (FRONTEND_SCOPE + "/",)
) -> tuple[Path, dict[str, Any]]:
    """Half-precision copy of an FP32 ONNX model: inputs and outputs keep their types (float32 / uint8); the front
    end (power spectrum, mel, log) stays in float32, where FP16 would overflow (power values above 65504), and so
    does every part the model declares float-only (pass `edgeav.export.quantize.model_float_prefixes(arch)`)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(fp32_path))
    keep = [n.name for n in proto.graph.node if n.name.startswith(tuple(keep_float_prefixes))]
    _private_initializers(proto.graph, set(keep))
    try:
        half = convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep, disable_shape_infer=False)
    except Exception as e:
        raise ExportError(f"FP16 conversion failed: {type(e).__name__}: {e}") from e
    _dedupe_casts(half.graph)  # the converter can insert the same Cast twice between two kept-float nodes
    _drop_fp16_round_trips(half.graph)  # ...and passes tensors between two float32 nodes through FP16
    _toposort(half.graph)  # the converter appends its input casts at the end of the node list
    check_model(half)
    out_path = Path(out_path)
    onnx.save(half, str(out_path))
    info = {
        "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True,
        "float32_nodes": keep,
    }
    log.info("wrote %s (FP16; %d front end nodes kept in float32)", out_path.name, len(keep))
    return out_path, info


def _private_initializers(graph: Any, nodes: set[str]) -> None:
    """Give the nodes in `nodes` their own copies of initializers they share with other nodes: the FP16 converter
    turns a shared initializer to FP16 (a log floor of 1e-10 would flush to the FP16 minimum), even for a node kept
    in float32."""
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            if i in inits:
                users.setdefault(i, []).append(n)
    for name, ns in users.items():
        kept = [n for n in ns if n.name in nodes]
        if not kept or len(kept) == len(ns):
            continue
        copy = type(inits[name])()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp32"
        graph.initializer.append(copy)
        for n in kept:
            for k, i in enumerate(n.input):
                if i == name:
                    n.input[k] = copy.name


def _drop_fp16_round_trips(graph: Any) -> int:
    """Remove float32 -> float16 -> float32 Cast pairs: the converter puts one between every two nodes it keeps in
    float32, which sends the power spectrum (values above 65504) through FP16 and back as inf. Returns the number of
    round trips removed."""
    import onnx

    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    def cast_to(n: Any) -> int | None:
        if n.op_type != "Cast":
            return None
        return next((a.i for a in n.attribute if a.name == "to"), None)

    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    removed: set[int] = set()
    n_trips = 0
    for c16 in list(graph.node):
        if cast_to(c16) != FLOAT16:
            continue
        src, half = c16.input[0], c16.output[0]
        for c32 in [c for c in consumers.get(half, []) if cast_to(c) == FLOAT]:
            back = c32.output[0]
            for user in consumers.get(back, []):
                for k, i in enumerate(user.input):
                    if i == back:
                        user.input[k] = src
                consumers.setdefault(src, []).append(user)
            if back in outputs:
                continue
            removed.add(id(c32))
            n_trips += 1
        left = [c for c in consumers.get(half, []) if id(c) not in removed]
        if not left and half not in outputs:
            removed.add(id(c16))
    if removed:
        keep = [n for n in graph.node if id(n) not in removed]
        copies = [type(n)() for n in keep]
        for c, n in zip(copies, keep):
            c.CopyFrom(n)
        del graph.node[:]
        graph.node.extend(copies)
        produced = {o for n in graph.node for o in n.output}
        vis = [v for v in graph.value_info if v.name in produced]
        del graph.value_info[:]
        graph.value_info.extend(vis)
    return n_trips


def _dedupe_casts(graph: Any) -> None:
    """Drop exact duplicate nodes (same op, inputs, outputs, attributes); anything else producing one tensor twice
    is an error."""
    seen: dict[str, Any] = {}
    keep = []
    for n in graph.node:
        dup = [seen[o] for o in n.output if o in seen]
        if dup:
            if all(d.SerializeToString() == n.SerializeToString() for d in dup):
                continue
            raise ExportError(f"FP16 conversion wrote tensor {n.output[0]!r} from two different nodes")
        for o in n.output:
            seen[o] = n
        keep.append(n)
    if len(keep) != len(graph.node):
        copies = [type(n)() for n in keep]
        for c, n in zip(copies, keep):
            c.CopyFrom(n)
        del graph.node[:]
        graph.node.extend(copies)


def _toposort(graph: Any) -> None:
    """Reorder `graph.node` so that every node comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


__all__ = [
    "DEFAULT_OPSET",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "PARITY_MAX_ABS_DIFF",
    "ParityReport",
    "check_model",
    "compare_outputs",
    "convert_fp16",
    "export_onnx",
    "exportable_copy",
    "manifest_from_onnx",
    "onnx_outputs",
    "parity_check",
    "read_metadata",
    "set_metadata",
    "torch_outputs",
]
