"""The package layout a user installs: one `edgeav` namespace, stages that import one way, a torch-free runtime."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGE_DIRS = {
    "train": "edgeav.train",
    "export": "edgeav.export",
    "runtime": "edgeav.runtime",
    "devices": "edgeav.devices",
}


def _imports(path: Path) -> set[str]:
    """Every module name a file imports (absolute names; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in STAGE_DIRS:
        parts = STAGE_DIRS[parts[0]].split(".") + parts[1:]
    pkg = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _py_files(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _bad(imports: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", _py_files("edgeav"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_no_stage(path: Path) -> None:
    # The core may name stages only as strings (the CLI dispatch table), never import them.
    bad = _bad(
        _imports(path),
        ("edgeav.train", "edgeav.export", "edgeav.runtime", "edgeav.devices", "torch", "torchvision", "timm"),
    )
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _py_files("runtime"), ids=lambda p: str(p.relative_to(REPO)))
def test_runtime_imports_no_torch_train_or_export(path: Path) -> None:
    bad = _bad(_imports(path), ("torch", "torchvision", "timm", "edgeav.train", "edgeav.export"))
    assert not bad, f"{path.name} imports {bad}: a field unit has no PyTorch"


@pytest.mark.parametrize("path", _py_files("export"), ids=lambda p: str(p.relative_to(REPO)))
def test_export_imports_no_runtime(path: Path) -> None:
    """Export and runtime are siblings over the core: what both need (the Backend interface, the bundle reader, the
    TensorRT engine cache) lives in the core; export reaches the runtime's TensorRT runner through edgeav.providers."""
    bad = _bad(_imports(path), ("edgeav.runtime",))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _py_files("train") + _py_files("devices"), ids=lambda p: str(p.relative_to(REPO)))
def test_train_and_devices_import_no_later_stage(path: Path) -> None:
    bad = _bad(_imports(path), ("edgeav.export", "edgeav.runtime"))
    assert not bad, f"{path.name} imports {bad}"


def test_onnx_runtime_sessions_are_made_in_one_place() -> None:
    """Every ONNX Runtime session of the package comes from edgeav.onnx_session.create_session (threads, optimization
    level, providers and log severity set there), so no stage makes one with ONNX Runtime's defaults."""
    makers = sorted(
        str(p.relative_to(REPO))
        for folder in ("edgeav", *STAGE_DIRS)
        for p in _py_files(folder)
        if "InferenceSession(" in p.read_text(encoding="utf-8")
    )
    assert makers == ["edgeav/onnx_session.py"], f"onnxruntime.InferenceSession( in {makers}"


def _untyped_config_params(path: Path) -> list[str]:
    """Parameters named cfg / config / *_cfg with no annotation or one that says Any: "name:line param"."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs:
                if arg.arg in ("cfg", "config") or arg.arg.endswith("_cfg"):
                    ann = ast.unparse(arg.annotation) if arg.annotation is not None else "no annotation"
                    if ann == "no annotation" or "Any" in ann.replace("|", " ").split():
                        out.append(f"{node.name}:{node.lineno} {arg.arg}: {ann}")
    return out


@pytest.mark.parametrize("path", _py_files("runtime") + _py_files("export"), ids=lambda p: str(p.relative_to(REPO)))
def test_components_take_typed_config_sections(path: Path) -> None:
    """A component receives the pydantic section it reads (edgeav/schema), so a reader (and a type checker) sees
    which keys it uses; `cfg: Any` hides that."""
    assert not _untyped_config_params(path), f"{path.name}: {_untyped_config_params(path)}"


_BLOCK_TORCH = r"""
import importlib, pkgutil, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'torchvision', 'timm'}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Block())
import edgeav, edgeav.cli, edgeav.schema, edgeav.contract, edgeav.manifest, edgeav.timebase, edgeav.registry
import edgeav.runtime, edgeav.devices
mods = []
for pkg in (edgeav.runtime, edgeav.devices):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
        importlib.import_module(m.name)
        mods.append(m.name)
assert 'torch' not in sys.modules
print('ok', len(mods))
"""


def test_core_and_runtime_import_where_torch_cannot() -> None:
    r = subprocess.run([sys.executable, "-c", _BLOCK_TORCH], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok")


def test_cli_help_works_without_torch() -> None:
    code = (
        _BLOCK_TORCH.split("import edgeav,")[0]
        + "from edgeav.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    for cmd in ("data", "model", "train", "eval", "export", "run", "bench", "devices", "config", "detections"):
        assert cmd in r.stdout


def test_wheel_installs_one_namespace(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, import every subpackage from there."""
    dist = tmp_path / "dist"
    # from a copy of the sources: setuptools builds in the source tree (build/, *.egg-info), and tests write only
    # under their temporary folder; a stale build/ there could also slip removed modules into the wheel
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "runs", ".cache", "*.egg-info", "__pycache__", ".pytest_cache", ".whl"
        ),
    )
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("edgeav-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"edgeav"}, f"wheel installs top-level packages {tops}"
    for must in (
        "edgeav/train/__init__.py",
        "edgeav/export/__init__.py",
        "edgeav/runtime/__init__.py",
        "edgeav/devices/__init__.py",
        "edgeav/runtime/web/templates/detail.html",  # the web view's assets ship (package data, no CDN)
        "edgeav/runtime/web/static/app.css",
        "edgeav/runtime/web/static/live.js",
    ):
        assert must in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as z:  # a wheel install is an unzip into purelib
        z.extractall(site)
    # Dependencies come from the project's environment (appended after the fresh site, .pth files not processed,
    # so the editable install there is invisible).
    deps = sysconfig.get_paths()["purelib"]
    code = (
        "import importlib, pkgutil, edgeav, sys\n"
        f"assert edgeav.__file__.startswith({site!r}), edgeav.__file__\n"
        "for sub in ('train', 'export', 'runtime', 'devices'):\n"
        "    m = importlib.import_module('edgeav.' + sub)\n"
        f"    assert m.__file__.startswith({site!r}), m.__file__\n"
        "for m in pkgutil.walk_packages(edgeav.__path__, 'edgeav.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "for top in ('train', 'runtime', 'export', 'devices'):\n"
        "    try:\n"
        "        importlib.import_module(top)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('top-level package ' + top + ' is importable')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": deps}
    r = subprocess.run([str(vpy), "-c", code], capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


MAX_FILE_LINES = 500


def test_no_package_file_is_longer_than_a_sitting() -> None:
    """Rooms small enough to read in one sitting: no Python file of the package over 500 lines."""
    long = {}
    for top in ("edgeav", *STAGE_DIRS):
        for path in sorted((REPO / top).rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_FILE_LINES:
                long[str(path.relative_to(REPO))] = n
    assert not long, f"over {MAX_FILE_LINES} lines: {long}"


_MODULE_STRING = re.compile(r"^(edgeav\.(?:train|export|runtime|devices)(?:\.\w+)*)(?::\w+)?$")


def _module_strings(path: Path) -> set[str]:
    """Every string constant of a file that is a module path of a stage ("edgeav.export.x" or "edgeav.export.x:f"):
    what importlib.import_module would be handed."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _MODULE_STRING.match(node.value)
            if m:
                out.add(m.group(1))
    return out


_FORBIDDEN_IN_STRINGS = {
    "runtime": ("edgeav.train", "edgeav.export"),
    "train": ("edgeav.export", "edgeav.runtime"),
    "export": ("edgeav.runtime",),
}


@pytest.mark.parametrize(
    "path", _py_files("runtime") + _py_files("train") + _py_files("export"), ids=lambda p: str(p.relative_to(REPO))
)
def test_no_stage_names_a_forbidden_stage_in_a_string(path: Path) -> None:
    """A string import is an import: runtime names neither train nor export, train neither export nor runtime,
    export not runtime, as module strings too; a stage reaches another only through the core (edgeav.providers, the
    CLI's table)."""
    forbidden = _FORBIDDEN_IN_STRINGS[path.parts[len(REPO.parts)]]
    bad = _bad(_module_strings(path), forbidden)
    assert not bad, f"{path.name} names {bad} in a string"


def test_module_strings_are_seen() -> None:
    """The check above sees the form a string import takes (so it cannot pass by reading nothing)."""
    probe = REPO / "edgeav" / "providers.py"
    src = 'import importlib\nM = "edgeav.export.torch_backend"\nimportlib.import_module(M)\nX = "edgeav.export.a:f"\n'
    tree_strings = {
        _MODULE_STRING.match(n.value).group(1)
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and _MODULE_STRING.match(n.value)
    }
    assert tree_strings == {"edgeav.export.torch_backend", "edgeav.export.a"}
    assert {"edgeav.runtime.trt_runner", "edgeav.export.torch_backend"} <= _module_strings(probe)
