"""Typed configuration: pydantic v2 sections, YAML files, dotted overrides.

`load_config(path, overrides)` is the one entry point. Every error names the key, the value and the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from edgeav.errors import ConfigError
from edgeav.schema.base import Section
from edgeav.schema.daemon import DaemonConfig
from edgeav.schema.data import DataConfig
from edgeav.schema.export import ExportConfig
from edgeav.schema.model import ModelConfig
from edgeav.schema.runtime import RuntimeConfig
from edgeav.schema.threads import ThreadsConfig
from edgeav.schema.train import TrainConfig


class EdgeAVConfig(Section):
    """The whole configuration. Each stage reads its own section."""

    data: DataConfig = Field(default_factory=DataConfig, description="Data set and loading.")
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Model: named model or backbones + fusion head."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training: optimizer, schedule, augmentation.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Export: ONNX, INT8, gate, bundle.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Runtime: sources, alignment, inference.")
    daemon: DaemonConfig = Field(
        default_factory=DaemonConfig, description="Daemon: detection log, evidence, supervision, metrics, MQTT."
    )
    threads: ThreadsConfig = Field(
        default_factory=ThreadsConfig, description="CPU threads of torch and ONNX Runtime, OpenMP spinning."
    )


def _set_dotted(tree: dict[str, Any], dotted: str, raw_value: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"bad override {dotted!r}: empty key")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"bad override {dotted!r}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = yaml.safe_load(raw_value) if raw_value != "" else ""


def parse_overrides(items: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"bad override {item!r}: expected key=value (e.g. train.epochs=3)")
        k, v = item.split("=", 1)
        out.append((k.strip(), v))
    return out


def _format_validation(err: ValidationError, source: str, overrides: dict[str, str]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if loc in overrides:
        source = f"{source} (--set {loc}={overrides[loc]})"
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {loc!r} (value {value!r}); check the spelling against `edgeav config schema`"
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: key {loc!r} has bad value {shown}: {first['msg']}{more}"


def config_from_dict(
    tree: dict[str, Any], source: str = "<config>", overrides: dict[str, str] | None = None
) -> EdgeAVConfig:
    try:
        return EdgeAVConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source, overrides or {})) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EdgeAVConfig:
    """Load YAML `path` (or defaults when None), apply `key=value` overrides, validate."""
    tree: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    applied = parse_overrides(overrides)
    for k, v in applied:
        _set_dotted(tree, k, v)
    return config_from_dict(tree, source, dict(applied))


def config_schema() -> dict[str, Any]:
    return EdgeAVConfig.model_json_schema()


__all__ = [
    "EdgeAVConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "ExportConfig",
    "RuntimeConfig",
    "DaemonConfig",
    "ThreadsConfig",
    "load_config",
    "config_from_dict",
    "config_schema",
    "parse_overrides",
]
