"""Exact pruning of an exported graph: DFT columns that a mel filter never reads.

An in-network spectrogram computed as `frames @ basis` (a DFT as a MatMul with a fixed basis, K x N) followed,
through ops that only move leading axes, by `@ mel` (N x M) spends the work of every basis column whose mel row is
all zero: BirdNET V2.4's low band reads bins 1..127 of 1025 and its high band bins 11..319 of 513, so 80 % of its
DFT multiply-adds (about 1.1 of 1.3 GMAC a window, 70 % of the model's CPU time) produce values the mel filter
multiplies by zero.

    pruned = prune_discarded_columns(proto)   # in place; [{"matmul": name, "columns": N, "kept": N'}, ...]

The rewrite keeps basis[:, kept] and mel[kept, :] and writes N' into a Reshape whose shape constant ends in N. It is
exact (the dropped terms are products with exact zeros) and applies only to this pattern: MatMul(x, initializer)
-> [Squeeze / Unsqueeze on axes other than the last | Reshape to (..., N)]* -> MatMul(., initializer), every
tensor on the way read by the next node only and no graph output; anything else is left alone. The export's parity
check against PyTorch runs on the pruned graph.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _const(consts: dict[str, Any], name: str) -> np.ndarray | None:
    """The value of an initializer or of a Constant node's output (`consts`: name -> TensorProto), else None."""
    from onnx import numpy_helper

    return numpy_helper.to_array(consts[name]) if name in consts else None


def _ranks(proto: Any) -> dict[str, int]:
    """Tensor name -> rank, from ONNX shape inference on a copy (missing where unknown)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - no ranks: only negative axes can then be judged
        return {}
    vis = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in vis if v.type.tensor_type.HasField("shape")}


def _chain(
    graph: Any,
    head: Any,
    n_cols: int,
    inits: dict[str, Any],
    consumers: dict[str, list[Any]],
    outputs: set[str],
    ranks: dict[str, int],
) -> tuple[list[Any], Any] | None:
    """(nodes between, the mel MatMul) when `head`'s output reaches a MatMul through column-preserving ops only."""
    between: list[Any] = []
    t = head.output[0]
    while True:
        users = consumers.get(t, [])
        if t in outputs or len(users) != 1:
            return None
        u = users[0]
        if u.op_type == "MatMul" and u.input[0] == t and u.input[1] in inits:
            return between, u
        if u.op_type in ("Squeeze", "Unsqueeze"):  # fine unless an axis is the last one (of the input / output)
            axes = _const(inits, u.input[1]) if len(u.input) > 1 else None
            rank = ranks.get(u.input[0] if u.op_type == "Squeeze" else u.output[0])
            if axes is None or (rank is None and np.any(axes >= 0)):
                return None
            if np.any(axes == -1) or (rank is not None and np.any(axes == rank - 1)):
                return None
        elif u.op_type == "Reshape":
            shape = _const(inits, u.input[1])
            if shape is None or shape.ndim != 1 or int(shape[-1]) != n_cols or np.any(shape[:-1] == 0):
                return None
        else:
            return None
        between.append(u)
        t = u.output[0]


def prune_discarded_columns(proto: Any) -> list[dict[str, Any]]:
    """Drop DFT-basis columns whose mel rows are all zero (see the module docstring); in place. Returns what was
    pruned, one dict per basis."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}  # tensors rewritten in place: initializers and Constant values
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = n.attribute[0].t
    consumers: dict[str, list[Any]] = {}
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
            uses[i] = uses.get(i, 0) + 1
    outputs = {o.name for o in graph.output}
    done: list[dict[str, Any]] = []
    ranks: dict[str, int] | None = None  # shape inference only once a candidate MatMul is seen
    for head in list(graph.node):
        if head.op_type != "MatMul" or head.input[1] not in inits:
            continue
        basis = _const(inits, head.input[1])
        if basis is None or basis.ndim != 2:
            continue
        if ranks is None:
            ranks = _ranks(proto)
        found = _chain(graph, head, int(basis.shape[1]), inits, consumers, outputs, ranks)
        if found is None:
            continue
        between, tail = found
        mel = _const(inits, tail.input[1])
        if mel is None or mel.ndim != 2 or mel.shape[0] != basis.shape[1]:
            continue
        kept = np.flatnonzero(np.any(mel != 0, axis=1))
        shared = [
            n
            for n in (head.input[1], tail.input[1], *(r.input[1] for r in between if r.op_type == "Reshape"))
            if uses.get(n, 0) != 1
        ]
        if len(kept) == 0 or len(kept) == basis.shape[1] or shared:
            continue
        b_init, m_init = inits[head.input[1]], inits[tail.input[1]]
        b_init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(basis[:, kept]), b_init.name))  # (K, N')
        m_init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(mel[kept, :]), m_init.name))  # (N', M)
        for r in between:
            if r.op_type == "Reshape":
                shape = _const(inits, r.input[1]).copy()
                shape[-1] = len(kept)
                inits[r.input[1]].CopyFrom(numpy_helper.from_array(shape, inits[r.input[1]].name))
        stale = {head.output[0], *(o for r in between for o in r.output)}  # their last axis changed size
        vis = [v for v in graph.value_info if v.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(vis)
        done.append(
            {"matmul": head.name, "columns": int(basis.shape[1]), "kept": int(len(kept)), "mel_matmul": tail.name}
        )
        log.info(
            "pruned %s: %d of %d DFT columns are read by the mel filter %s",
            head.name,
            len(kept),
            basis.shape[1],
            tail.name,
        )
    return done


__all__ = ["prune_discarded_columns"]
