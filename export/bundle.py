"""Writing a bundle: one directory a field unit installs, plus a .tar.gz of it beside it.

The directory holds the model files (named by role: `model_fp32.onnx`, `model_int8.onnx`, ...), labels.txt and
manifest.json (input contract, metrics, sha256 of every file, target profile, tool versions). It is written into
a temporary directory next to `out_dir` and renamed into place, so a failure leaves nothing at `out_dir`.
The reading side (verify_bundle) lives in edgeav.bundle, which the field unit imports without torch.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edgeav.bundle import LABELS_NAME, MANIFEST_NAME, verify_bundle
from edgeav.errors import BundleError
from edgeav.manifest import ArtifactManifest, sha256_file

log = logging.getLogger(__name__)

_ROLE = re.compile(r"^[a-z][a-z0-9_]*$")


def bundle_file_name(role: str, src: Path) -> str:
    """File name of a role inside the bundle: the role plus the source's suffixes (`model_int8.onnx`)."""
    if not _ROLE.match(role) or role in ("labels", "manifest"):
        raise BundleError(f"bad bundle role {role!r}: lower-case letters, digits, underscores; not labels/manifest")
    return role + "".join(src.suffixes)


def write_bundle(
    out_dir: str | Path,
    files: Mapping[str, str | Path],
    manifest: ArtifactManifest,
    profile_name: str,
    tool_versions: Mapping[str, str],
    *,
    overwrite: bool = False,
    tarball: bool = True,
) -> Path:
    """Write the bundle at `out_dir` (and `out_dir`.tar.gz); returns `out_dir`.

    `files` maps a role to a file to copy in. The manifest is copied with kind "bundle" and `extra` gaining
    `files` (role -> path, sha256, bytes), `target_profile` and `tool_versions`. The result is verified before
    it is moved into place.
    """
    out_dir = Path(out_dir)
    tar_path = out_dir.with_name(out_dir.name + ".tar.gz")
    if out_dir.exists() and not overwrite:
        raise BundleError(f"{out_dir}: already exists (choose another --out, or remove it)")
    if not files:
        raise BundleError("a bundle needs at least one model file")
    sources = {role: Path(p) for role, p in files.items()}
    for role, src in sources.items():
        if not src.is_file():
            raise BundleError(f"{src}: file for role {role!r} not found")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    tmp_tar = tmp.with_name(tmp.name + ".tar.gz")
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0700: a daemon running as another user must be able to read the bundle
        entries: dict[str, dict[str, object]] = {}
        for role, src in sorted(sources.items()):
            name = bundle_file_name(role, src)
            shutil.copyfile(src, tmp / name)
            entries[role] = {"path": name, "sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        (tmp / LABELS_NAME).write_text("\n".join(manifest.labels) + "\n", encoding="utf-8")
        entries["labels"] = {
            "path": LABELS_NAME,
            "sha256": sha256_file(tmp / LABELS_NAME),
            "bytes": (tmp / LABELS_NAME).stat().st_size,
        }
        extra = dict(manifest.extra)
        extra.update(
            {
                "files": entries,
                "target_profile": profile_name,
                "tool_versions": {str(k): str(v) for k, v in tool_versions.items()},
            }
        )
        bundled = manifest.model_copy(update={"kind": "bundle", "extra": extra})
        (tmp / MANIFEST_NAME).write_text(bundled.to_json() + "\n", encoding="utf-8")
        verify_bundle(tmp)  # what we ship must pass what the field unit checks
        if tarball:
            with tarfile.open(tmp_tar, "w:gz") as tf:
                tf.add(tmp, arcname=out_dir.name)
        old = None
        if out_dir.exists():  # overwrite: move the old one aside, then swap
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if tarball:
            os.replace(tmp_tar, tar_path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp_tar.unlink(missing_ok=True)
        raise
    log.info(
        "wrote bundle %s (%d files, profile %s)%s",
        out_dir,
        len(entries),
        profile_name,
        f" and {tar_path.name}" if tarball else "",
    )
    return out_dir


__all__ = ["bundle_file_name", "write_bundle"]
