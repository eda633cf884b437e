"""Fusion that pays when the sound is bad (issue 11), on real data: the moving-picture GRID recipe
(`train/grid_motion.yaml`: 40 frames of the mouth box + sound, trained with the dawn-chorus recording as field
noise) scored on the held-out clips with the OTHER field recording (the bird soundscape) mixed into the sound.
Trains the whole recipe (about 7 minutes on a quiet 2-core machine): marked slow."""

from __future__ import annotations

import subprocess

import pytest
from _train_fixtures import REPO, train_cmd


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.timeout(40 * 60)
def test_motion_recipe_fused_holds_under_noise_it_never_trained_on(shared_data, tmp_path):
    from edgeav.train.robustness import robustness_eval

    grid = shared_data / "grid"
    subprocess.run(
        train_cmd(
            REPO / "train" / "grid_motion.yaml",
            grid,
            tmp_path / "run",
            [
                f"data.cache_dir={tmp_path / 'cache'}",
                f"train.augment.noise.path={shared_data / 'streams' / 'opensoundscape_1min.wav'}",
            ],
        ),
        check=True,
        timeout=35 * 60,
    )
    rob = robustness_eval(
        tmp_path / "run" / "best.pt",
        grid,
        shared_data / "streams" / "birdnet_soundscape_120s.flac",
        [0.0, -5.0],
        out_dir=tmp_path / "robust",
    )
    by = {r["condition"]: r for r in rob["rows"]}
    assert by["clean"]["both"]["accuracy"] >= 0.95 and by["clean"]["image_only"]["accuracy"] >= 0.85, by["clean"]
    assert by["0 dB"]["both"]["accuracy"] >= 0.925 and by["-5 dB"]["both"]["accuracy"] >= 0.90, rob["rows"]
    for r in rob["rows"]:  # fused never below the better single sense (one clip of 40 of slack)
        assert r["fused_minus_best_single"] >= -0.025, r
