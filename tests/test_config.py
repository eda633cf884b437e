"""Typed configuration: what a user sees when a YAML file or an override is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeav.errors import ConfigError
from edgeav.schema import EdgeAVConfig, Section, load_config


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeav", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_defaults_and_yaml_and_override(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  window_s: 3.0\n")
    cfg = load_config(f, ["data.sample_rate_hz=22050"])
    assert cfg.data.window_s == 3.0 and cfg.data.sample_rate_hz == 22050
    assert load_config(None).data.window_s == 5.0


def test_misspelled_key_names_key_value_and_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  windw_s: 3.0\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "data.windw_s" in msg and "3.0" in msg and str(f) in msg and "\n" not in msg


def test_bad_value_names_key_value_and_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  sample_rate_hz: -5\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "data.sample_rate_hz" in str(e.value) and "-5" in str(e.value) and str(f) in str(e.value)


def test_bad_override_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.window_s"):
        load_config(None, ["data.window_s=abc"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["data.window_s"])


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def _walk_sections(model: type[Section], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            yield from _walk_sections(ann, f"{prefix}{name}.")


def test_every_field_is_documented_and_sections_forbid_extra() -> None:
    undocumented = [k for k, f in _walk_sections(EdgeAVConfig) if not f.description]
    assert not undocumented, f"fields without a description: {undocumented}"
    for k, f in _walk_sections(EdgeAVConfig):
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            assert ann.model_config.get("extra") == "forbid", k


def test_cli_config_check_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  window_s: 2.0\n")
    r = _cli("config", "check", str(good), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  windw_s: 2.0\n")
    r = _cli("config", "check", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "windw_s" in lines[0] and "Traceback" not in r.stderr
    r = _cli("config", "check", str(good), "--set", "data.window_s=-1")
    assert r.returncode == 2 and "data.window_s" in r.stderr


def test_cli_config_schema_is_json() -> None:
    r = _cli("config", "schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert "data" in schema["properties"]
