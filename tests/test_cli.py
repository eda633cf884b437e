"""The `edgeav` command: help on each subcommand, errors as one line, --json as one object."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeav.cli import HANDLERS, build_parser, main

SUBCOMMANDS = ["data", "model", "train", "eval", "export", "run", "bench", "devices", "config", "detections"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeav", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_help_on_each_subcommand(cmd: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert cmd in capsys.readouterr().out


def test_every_handler_key_has_a_parser() -> None:
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    for key in HANDLERS:
        top = key.split(".")[0]
        assert top in sub.choices, key


def test_unknown_command_is_usage_error() -> None:
    r = _cli("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_typed_error_is_one_line_without_traceback(tmp_path) -> None:
    r = _cli("config", "check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_traceback(tmp_path) -> None:
    r = _cli("--debug", "config", "check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_json_output_is_one_object(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("{}\n")
    r = _cli("config", "check", str(f), "--json")
    assert r.returncode == 0
    assert len(r.stdout.strip().splitlines()) == 1
    assert isinstance(json.loads(r.stdout), dict)
