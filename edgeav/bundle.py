"""Reading and verifying a bundle on the field unit (no torch, no edgeav.export, no edgeav.train).

A bundle is one directory: the model files, labels.txt and manifest.json. The manifest's `extra.files` maps each
role (`model_fp32`, `model_int8`, `labels`, ...) to its file name, sha256 and size. `verify_bundle` checks every
sha256 and that each ONNX model's inputs fit the input contract, and raises BundleError naming the first file
that does not match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeav.contract import InputContract
from edgeav.errors import BundleError
from edgeav.manifest import ArtifactManifest, sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.txt"
# input name -> ONNX element type the contract wants
CONTRACT_DTYPES = {"audio": "float", "image": "uint8", "mask": "float"}


@dataclass
class BundleInfo:
    path: Path
    manifest: ArtifactManifest
    files: dict[str, Path] = field(default_factory=dict)  # role -> absolute path
    sha256: dict[str, str] = field(default_factory=dict)  # role -> the file's sha256, as verify_bundle checked it
    profile_name: str | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def model(self, role: str) -> Path:
        try:
            return self.files[role]
        except KeyError:
            raise BundleError(
                f"{self.path.name}: no {role!r} in the bundle; it has {', '.join(sorted(self.files))}"
            ) from None


def read_manifest(path: str | Path) -> ArtifactManifest:
    p = Path(path)
    mpath = p / MANIFEST_NAME if p.is_dir() else p
    if not mpath.is_file():
        raise BundleError(f"{mpath}: no manifest (is {p} a bundle written by `edgeav export`?)")
    try:
        return ArtifactManifest.from_json(mpath.read_text(encoding="utf-8"))
    except (ValueError, ValidationError) as e:
        first = str(e).splitlines()[0]
        raise BundleError(f"{mpath}: not a valid manifest: {first}") from None


def onnx_input_specs(model_path: str | Path) -> dict[str, tuple[str, tuple[int | str | None, ...]]]:
    """name -> (element type, shape) of the graph inputs; `onnx` when installed, else ONNX Runtime's metadata."""
    try:
        import onnx
    except ImportError:
        onnx = None  # type: ignore[assignment]
    if onnx is not None:
        model = onnx.load(str(model_path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        out: dict[str, tuple[str, tuple[int | str | None, ...]]] = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            elem = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "undefined"
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
            out[vi.name] = ("float" if elem == "float32" else elem, dims)
        return out
    from edgeav.onnx_session import create_session

    sess = create_session(model_path, intra_op_threads=1, optimization="disable")  # metadata only: nothing runs
    return {i.name: (i.type.removeprefix("tensor(").removesuffix(")"), tuple(i.shape)) for i in sess.get_inputs()}


def check_onnx_inputs(model_path: str | Path, contract: InputContract, label: str | None = None) -> None:
    """BundleError when the model's inputs are not the contract's (names, element types, non-batch dims)."""
    name = label or Path(model_path).name
    specs = onnx_input_specs(model_path)
    want = contract.shapes(batch=1)
    missing = [n for n in contract.input_names if n not in specs]
    if missing:
        raise BundleError(f"{name}: input(s) {missing} missing; the model takes {sorted(specs)}")
    for n in contract.input_names:
        elem, dims = specs[n]
        exp = want[n]
        if CONTRACT_DTYPES.get(n) and elem != CONTRACT_DTYPES[n]:
            raise BundleError(f"{name}: input {n!r} is {elem}, the contract says {CONTRACT_DTYPES[n]}")
        ok = len(dims) == len(exp) and all(
            (isinstance(d, int) and d == e) or (i == 0 and (not isinstance(d, int) or d in (0, e)))
            for i, (d, e) in enumerate(zip(dims, exp))
        )
        if not ok:
            shown = tuple("B" if i == 0 else e for i, e in enumerate(exp))
            raise BundleError(f"{name}: input {n!r} has shape {tuple(dims)}, the contract says {shown}")


def verify_bundle(path: str | Path) -> BundleInfo:
    """Load the manifest, check every file's sha256 and every ONNX model's inputs against the contract."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    manifest = read_manifest(root)
    listed = manifest.extra.get("files")
    if not isinstance(listed, dict) or not listed:
        raise BundleError(f"{root / MANIFEST_NAME}: lists no files (extra.files)")
    files: dict[str, Path] = {}
    digests: dict[str, str] = {}
    for role, entry in sorted(listed.items()):
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise BundleError(f"{root / MANIFEST_NAME}: entry {role!r} needs path and sha256")
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise BundleError(f"{root / MANIFEST_NAME}: file {rel} escapes the bundle")
        fpath = root / rel
        if not fpath.is_file():
            raise BundleError(f"{fpath}: listed in the manifest but missing")
        digest = sha256_file(fpath)
        if digest != entry["sha256"]:
            raise BundleError(
                f"{fpath}: sha256 {digest[:12]}... does not match the manifest's "
                f"{str(entry['sha256'])[:12]}... (file changed or corrupt)"
            )
        files[role] = fpath
        digests[role] = digest
    for fpath in files.values():
        if fpath.suffix == ".onnx":
            check_onnx_inputs(fpath, manifest.contract, label=str(fpath))
    if "labels" in files:
        lines = [ln for ln in files["labels"].read_text(encoding="utf-8").splitlines() if ln]
        if lines != list(manifest.labels):
            raise BundleError(f"{files['labels']}: labels differ from the manifest's")
    tools = manifest.extra.get("tool_versions") or {}
    info = BundleInfo(
        root,
        manifest,
        files,
        digests,
        manifest.extra.get("target_profile"),
        {str(k): str(v) for k, v in dict(tools).items()},
    )
    log.info("bundle %s verified: %d files, profile %s", root, len(files), info.profile_name)
    return info


def manifest_summary(info: BundleInfo) -> dict[str, Any]:
    return {
        "path": str(info.path),
        "profile": info.profile_name,
        "labels": info.labels,
        "files": {r: p.name for r, p in info.files.items()},
        "metrics": info.manifest.metrics,
    }


__all__ = [
    "BundleInfo",
    "LABELS_NAME",
    "MANIFEST_NAME",
    "check_onnx_inputs",
    "manifest_summary",
    "onnx_input_specs",
    "read_manifest",
    "verify_bundle",
]
