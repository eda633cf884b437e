"""`edgeav eval CKPT --data D --noise PATH --snr-db ...`: the robustness evaluation on a tiny synthetic set and a
tiny trained checkpoint (clean row + every SNR, three inputs, seeded noise, the picture untouched), and the bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _train_fixtures import REPO, tiny, write_noise

from edgeav.cli import main
from edgeav.errors import ConfigError
from edgeav.schema import load_config
from edgeav.train.loop import train
from edgeav.train.robustness import parse_snr_db, robustness_eval
from edgeav.train.synthetic import make_paired_set

MODES = ("both", "audio_only", "image_only")


def _noise(tmp: Path) -> Path:
    """The bird soundscape of ../shared/data/streams when it is there (a field recording the model never heard),
    else generated wind-like noise."""
    from conftest import shared_data_path

    shared = shared_data_path()
    if shared is not None and (shared / "streams" / "birdnet_soundscape_120s.flac").is_file():
        return shared / "streams" / "birdnet_soundscape_120s.flac"
    return write_noise(tmp / "wind.wav", 3.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("robust")
    data = make_paired_set(tmp / "data", n_classes=3, per_class=8, seconds=1.0, size_px=64)
    train(load_config(None, tiny(tmp, "train.epochs=8", "train.eval_test=false")), data, tmp / "run")
    return tmp / "run" / "best.pt", data, _noise(tmp)


def _eval_argv(trained: tuple[Path, Path, Path], out: Path, *more: str) -> list[str]:
    """`edgeav eval CKPT --data DATA --noise NOISE --out OUT MORE...` on the trained checkpoint and its set."""
    ckpt, data, noise = trained
    return ["eval", str(ckpt), "--data", str(data), "--noise", str(noise), "--out", str(out), *more]


def test_cli_report_has_the_clean_row_every_snr_and_three_inputs(trained, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(_eval_argv(trained, out, "--split", "all", "--snr-db=10,0,-20", "--json"))
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("robustness.json", "robustness.md", "robustness.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "robustness.json").read_text())["rows"] == report["rows"]
    rows = {r["condition"]: r for r in report["rows"]}
    assert list(rows) == ["clean", "10 dB", "0 dB", "-20 dB"]
    for r in report["rows"]:
        for m in MODES:
            assert 0.0 <= r[m]["accuracy"] <= 1.0 and 0.0 <= r[m]["macro_f1"] <= 1.0
    # the picture is untouched: picture-only figures are the same at every SNR
    assert len({json.dumps(r["image_only"]) for r in report["rows"]}) == 1
    # at -20 dB the sound is mostly noise: audio-only accuracy is not above clean
    assert rows["-20 dB"]["audio_only"]["accuracy"] <= rows["clean"]["audio_only"]["accuracy"]
    assert report["n"] > 0
    md = (out / "robustness.md").read_text()
    assert "| clean |" in md and "| -20 dB |" in md and "picture only acc" in md


def test_noise_is_seeded_and_the_table_is_printed(trained, tmp_path, capsys):
    ckpt, data, noise = trained
    a = robustness_eval(ckpt, data, noise, [0.0], split="all", out_dir=tmp_path / "a", seed=3)
    b = robustness_eval(ckpt, data, noise, [0.0], split="all", out_dir=tmp_path / "b", seed=3)
    assert a["rows"] == b["rows"]
    assert main(_eval_argv(trained, tmp_path / "c", "--split", "all", "--snr-db", "5")) == 0
    text = capsys.readouterr().out
    assert "| SNR |" in text and "| clean |" in text and "| 5 dB |" in text


@pytest.mark.parametrize("bad", ["ten", "10,,0", "10,nan", "10,10", "500", ""])
def test_bad_snr_db_is_exit_2_with_one_line(trained, tmp_path, capsys, bad):
    code = main(_eval_argv(trained, tmp_path / "ev", f"--snr-db={bad}"))
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--snr-db" in err, err
    assert not (tmp_path / "ev").exists()


def test_snr_without_noise_and_bad_noise_path(trained, tmp_path, capsys):
    ckpt, data, _ = trained
    assert main(["eval", str(ckpt), "--data", str(data), "--snr-db", "10"]) == 2
    assert "--noise" in capsys.readouterr().err
    assert main(["eval", str(ckpt), "--data", str(data), "--noise", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "noise path not found" in err


def test_parse_snr_db():
    assert parse_snr_db(None) == [20.0, 10.0, 0.0, -5.0]
    assert parse_snr_db("20, 10,0,-5.5") == [20.0, 10.0, 0.0, -5.5]
    with pytest.raises(ConfigError):
        parse_snr_db("inf")


def test_bench_writes_json_and_one_line(trained, tmp_path):
    ckpt, data, noise = trained
    out = tmp_path / "robustness.json"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "robustness.py"),
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--noise",
            str(noise),
            "--snr-db",
            "0",
            "--split",
            "all",
            "--eval-out",
            str(tmp_path / "ev"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "clean: fused" in r.stdout
    result = json.loads(out.read_text())
    assert result["bench"] == "robustness" and [row["condition"] for row in result["rows"]] == ["clean", "0 dB"]
    assert (tmp_path / "ev" / "robustness.png").is_file()
