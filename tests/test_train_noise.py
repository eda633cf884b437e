"""Training against recorded noise: `mix_at_snr` hits its SNR, the `NoiseBank` loops a short file, a bad noise path
is a one-line error at the start of a run, and `train.augment.noise` changes the sound the model is fed."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_fixtures import (
    REPO,
    syn,  # noqa: F401 (syn: the shared synthetic set fixture)
    train_cmd,
    write_noise,
)
from _train_fixtures import tiny as tiny_run

from edgeav.errors import ConfigError, DataError
from edgeav.schema import load_config
from edgeav.train.augment import FieldNoise, build_field_noise
from edgeav.train.loop import Trainer, seed_epoch, train
from edgeav.train.noise import NoiseBank, mix_at_snr

SNRS_DB = (30.0, 20.0, 10.0, 0.0, -5.0, -20.0)


def _snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    noise = mixed.astype(np.float64) - clean.astype(np.float64)
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2)))


def tiny(tmp: Path, *extra: str) -> list[str]:
    """The fast run of _train_fixtures, without the test-split evaluation."""
    return tiny_run(tmp, "train.eval_test=false", *extra)


# ---------------------------------------------------------------- mixing


@pytest.mark.data
def test_mix_at_snr_hits_the_snr_on_real_recordings(shared_data):
    """A GRID clip's sound with the bird soundscape at each SNR: the measured SNR is within 0.1 dB."""
    from edgeav.train.data import media

    soundscape = shared_data / "streams" / "birdnet_soundscape_120s.flac"
    clips = sorted((shared_data / "grid").rglob("*.mpg"))
    if not soundscape.is_file() or not clips:
        pytest.skip(f"needs {soundscape} and GRID clips under {shared_data / 'grid'}")
    clean = media.decode_audio(clips[0], 16_000)  # (T,) a spoken sentence
    bank = NoiseBank(soundscape, 16_000)
    rng = np.random.default_rng(0)
    for snr in SNRS_DB:
        mixed = mix_at_snr(clean, bank.segment(clean.size, rng), snr)
        assert abs(_snr_db(clean, mixed) - snr) < 0.1, snr


def test_mix_at_snr_hits_the_snr_per_window_of_a_batch(tmp_path):
    """Generated signals (a tone with a loudness envelope, and wind-like noise), a batch of windows of
    different loudness: each window's SNR is within 0.1 dB of the one asked."""
    rate = 16_000
    t = np.arange(rate) / rate
    clean = np.stack(
        [
            a * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            for a, f in ((0.5, 220.0), (0.01, 880.0), (0.2, 3000.0))
        ]
    ).astype(np.float32)  # (3, T)
    bank = NoiseBank(write_noise(tmp_path / "wind.wav", 3.0), rate)
    rng = np.random.default_rng(1)
    noise = np.stack([bank.segment(rate, rng) for _ in range(3)])  # (3, T)
    for snr in SNRS_DB:
        mixed = mix_at_snr(clean, noise, snr)
        assert mixed.shape == clean.shape and mixed.dtype == np.float32
        for i in range(3):
            assert abs(_snr_db(clean[i], mixed[i]) - snr) < 0.1, (snr, i)


def test_silent_window_still_gets_noise(tmp_path):
    bank = NoiseBank(write_noise(tmp_path / "wind.wav", 1.0), 16_000)
    mixed = mix_at_snr(np.zeros(16_000, np.float32), bank.segment(16_000, np.random.default_rng(0)), 10.0)
    assert np.sqrt(np.mean(mixed.astype(np.float64) ** 2)) > 0


# ---------------------------------------------------------------- the bank


def test_bank_loops_a_short_file_and_resamples(tmp_path):
    """A 0.6 s file at 8 kHz, read at 16 kHz, cut into a 3 s segment: the segment repeats every 0.6 s."""
    f = write_noise(tmp_path / "short.wav", 0.6, rate_hz=8_000)
    bank = NoiseBank(f, 16_000)
    period = bank.tracks[0].size
    assert abs(period - 0.6 * 16_000) <= 16  # resampled to the asked rate
    seg = bank.segment(3 * 16_000, np.random.default_rng(3))
    assert seg.shape == (48_000,) and seg.dtype == np.float32
    np.testing.assert_array_equal(seg[:-period], seg[period:])
    again = bank.segment(3 * 16_000, np.random.default_rng(3))
    np.testing.assert_array_equal(seg, again)  # seeded


def test_bank_reads_a_folder_recursively(tmp_path):
    write_noise(tmp_path / "site" / "a.wav", 1.0)
    write_noise(tmp_path / "site" / "night" / "b.flac", 2.0, seed=1)
    (tmp_path / "site" / "notes.txt").write_text("recorded at the feeder")
    bank = NoiseBank(tmp_path / "site", 16_000)
    assert [p.name for p in bank.files] == ["a.wav", "b.flac"]
    assert bank.duration_s == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("case", ["missing", "empty_folder", "undecodable", "empty_file"])
def test_bad_noise_path_is_a_one_line_data_error(tmp_path, case):
    path = {
        "missing": tmp_path / "nope",
        "empty_folder": tmp_path / "empty",
        "undecodable": tmp_path / "bad.wav",
        "empty_file": tmp_path / "zero.wav",
    }[case]
    if case == "empty_folder":
        path.mkdir()
    elif case == "undecodable":
        path.write_bytes(b"RIFF not really a wave file" * 10)
    elif case == "empty_file":
        path.write_bytes(b"")
    with pytest.raises(DataError) as e:
        NoiseBank(path, 16_000)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_noise_config_needs_a_path_and_an_ordered_range():
    with pytest.raises(ConfigError, match="needs train.augment.noise.path"):
        load_config(None, ["train.augment.noise.enabled=true"])
    with pytest.raises(ConfigError, match="snr_db_min"):
        load_config(None, ["train.augment.noise.snr_db_min=10", "train.augment.noise.snr_db_max=0"])
    with pytest.raises(ConfigError):
        load_config(None, ["train.augment.noise.colour=pink"])  # extra=forbid
    assert load_config(None, []).train.augment.noise.enabled is False


def test_bad_noise_path_stops_a_run_before_the_data_is_read(tmp_path):
    """The noise bank is decoded first: with a missing noise path AND a missing data path, the error is the noise."""
    cfg = load_config(
        None,
        tiny(tmp_path, "train.augment.noise.enabled=true", f"train.augment.noise.path={tmp_path / 'no_noise_here'}"),
    )
    with pytest.raises(DataError, match="noise path not found"):
        Trainer(cfg, tmp_path / "no_data_here", tmp_path / "run")


def test_cli_bad_noise_path_is_one_line_and_nonzero(tmp_path):
    r = subprocess.run(
        train_cmd(
            REPO / "train" / "grid.yaml",
            tmp_path / "nodata",
            tmp_path / "run",
            ["train.augment.noise.enabled=true", f"train.augment.noise.path={tmp_path / 'nope'}"],
            quiet=False,
        ),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "noise path not found" in err[0], r.stderr


# ---------------------------------------------------------------- in training


def test_field_noise_mixes_at_the_drawn_snr_and_is_seeded(tmp_path):
    cfg = load_config(
        None,
        [
            "train.augment.noise.enabled=true",
            f"train.augment.noise.path={tmp_path / 'w.wav'}",
            "train.augment.noise.snr_db_min=5",
            "train.augment.noise.snr_db_max=5",
            "train.augment.noise.prob=1.0",
        ],
    ).train
    write_noise(tmp_path / "w.wav", 2.0)
    fn = build_field_noise(cfg, 16_000)
    t = torch.arange(16_000) / 16_000
    audio = torch.stack(
        [0.3 * torch.sin(2 * torch.pi * 440 * t), torch.zeros(16_000), 0.1 * torch.sin(2 * torch.pi * 300 * t)]
    )
    present = torch.tensor([1.0, 0.0, 1.0])  # the middle example has no sound: left alone
    out = fn(audio, torch.Generator().manual_seed(7), present)
    again = fn(audio, torch.Generator().manual_seed(7), present)
    assert torch.equal(out, again)
    assert torch.equal(out[1], audio[1])
    for i in (0, 2):
        assert abs(_snr_db(audio[i].numpy(), out[i].numpy()) - 5.0) < 0.1
    assert fn(audio, torch.Generator().manual_seed(8), present).sub(out).abs().max() > 0  # another epoch, other noise
    off = build_field_noise(load_config(None, []).train, 16_000)
    assert isinstance(off, FieldNoise) and off(audio, torch.Generator()) is audio


def test_two_phase_warns_where_the_noise_does_not_reach(tmp_path, caplog):
    write_noise(tmp_path / "w.wav", 1.0)
    sets = [
        "train.mode=two_phase",
        "train.augment.noise.enabled=true",
        f"train.augment.noise.path={tmp_path / 'w.wav'}",
    ]
    with caplog.at_level(logging.WARNING, logger="edgeav.train.augment"):
        build_field_noise(load_config(None, sets).train, 16_000)  # default: phase II caches noisy copies too
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeav.train.augment"):
        build_field_noise(load_config(None, [*sets, "train.augment.noise.phase2_variants=0"]).train, 16_000)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CLEAN" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeav.train.augment"):
        build_field_noise(load_config(None, [*sets, f"train.phase1_from={tmp_path}"]).train, 16_000)
    assert any("NOT APPLIED to phase I" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeav.train.augment"):
        build_field_noise(load_config(None, sets[1:]).train, 16_000)  # joint: nothing to warn about
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_training_with_noise_runs_and_changes_the_audio_fed_to_the_model(syn, tmp_path):
    noise = write_noise(tmp_path / "site" / "wind.wav", 2.0)
    only_noise = [
        "train.augment.wave.enabled=false",
        "train.augment.mixup.enabled=false",
        "train.augment.modality_dropout=false",
        "train.augment.spec_augment.enabled=false",
    ]
    on = [
        "train.augment.noise.enabled=true",
        f"train.augment.noise.path={noise.parent}",
        "train.augment.noise.prob=1.0",
        "train.augment.noise.snr_db_min=0",
        "train.augment.noise.snr_db_max=10",
    ]

    def fed(sets: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio of the first training batch, the audio `WindowBatches.inputs` feeds the model for it)."""
        trainer = Trainer(load_config(None, tiny(tmp_path, *sets)), syn, tmp_path / "probe")
        batch = next(iter(trainer.windows.train_loader("joint", 0)[0]))
        inputs, _, _ = trainer.windows.inputs(batch, "joint", seed_epoch(0, 0), train=True)
        return batch["audio"], inputs[0].cpu()

    clean, same = fed(only_noise)
    assert torch.equal(clean, same)  # control: noise off, nothing else on -> the sound is fed as read
    clean, noisy = fed([*only_noise, *on])
    assert noisy.shape == clean.shape and not torch.equal(clean, noisy)
    for i in range(clean.shape[0]):
        snr = _snr_db(clean[i].numpy(), noisy[i].numpy())
        assert -0.1 < snr < 10.1, snr
    _, noisy_again = fed([*only_noise, *on])
    assert torch.equal(noisy, noisy_again)  # seeded by the loop's generator

    report = train(load_config(None, tiny(tmp_path, "train.epochs=1", *on)), syn, tmp_path / "run")
    assert (tmp_path / "run" / "best.pt").is_file() and report["epochs_run"] == {"joint": 1}


def test_phase_two_caches_noisy_copies_and_examples_take_them(syn, tmp_path):
    """two_phase: phase II caches the frozen audio features of the clean windows and of phase2_variants noisy
    copies; a noisy copy's features differ from the clean ones, and an epoch draws noisy copies at about `prob`."""
    from edgeav.train.loop import Phase2Cache

    noise = write_noise(tmp_path / "wind.wav", 2.0)
    cfg = load_config(
        None,
        tiny(
            tmp_path,
            "train.mode=two_phase",
            "train.augment.noise.enabled=true",
            f"train.augment.noise.path={noise}",
            "train.augment.noise.prob=0.5",
            "train.augment.noise.snr_db_min=-5",
            "train.augment.noise.snr_db_max=0",
            "train.augment.noise.phase2_variants=3",
        ),
    )
    trainer = Trainer(cfg, syn, tmp_path / "probe")
    cache = Phase2Cache(trainer.model, trainer.data, "train", 0, torch.device("cpu"), 8, trainer.field_noise, 3)
    n = cache.n_audio
    assert cache.variants == 4 and cache.a_emb.shape[0] == 4 * n
    for copy in (1, 2, 3):
        assert not torch.allclose(cache.a_emb[:n], cache.a_emb[copy * n : (copy + 1) * n])
    ai, _, _ = cache.epoch_items(0)
    noisy_share = float((ai[ai >= 0] >= n).float().mean())
    assert 0.2 < noisy_share < 0.8, noisy_share
    clean_only = Phase2Cache(trainer.model, trainer.data, "train", 0, torch.device("cpu"), 8, trainer.field_noise, 0)
    assert clean_only.variants == 1 and torch.allclose(clean_only.a_emb, cache.a_emb[:n])
