"""Post-processing: softmax, smoothing, thresholds, confirmation, minimum gap, detection records."""

from __future__ import annotations

import numpy as np
import pytest

from edgeav.errors import ConfigError
from edgeav.runtime.postprocess import Detection, PostProcessor, softmax, utc_iso
from edgeav.schema.runtime import PostprocessConfig
from edgeav.timebase import s_to_ns

LABELS = ["background", "bird", "car"]
HOP = s_to_ns(0.5)
WIN = s_to_ns(2.0)


def _logits(p: list[float]) -> dict[str, np.ndarray]:
    lg = np.log(np.asarray(p, dtype=np.float32))
    return {"logits": lg, "logits_audio": lg + 0.0, "logits_image": np.roll(lg, 1)}


def _feed(pp: PostProcessor, seq: list[list[float]], mask=(1.0, 1.0)):
    out = []
    for k, p in enumerate(seq):
        end = WIN + k * HOP
        out.append(pp.update(end - WIN, end, _logits(p), np.array(mask, np.float32)))
    return out


def test_softmax_and_utc():
    p = softmax(np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert p[1, 0] == pytest.approx(1.0)
    assert utc_iso(1_700_000_000_250_000_000) == "2023-11-14T22:13:20.250Z"
    assert utc_iso(None) is None


@pytest.mark.parametrize(
    "smoothing,expected", [("none", 0.9), ("mean", (0.1 + 0.1 + 0.9) / 3), ("ema", 0.5 * 0.9 + 0.5 * 0.1)]
)
def test_smoothing(smoothing, expected):
    pp = PostProcessor(LABELS, PostprocessConfig(smoothing=smoothing, mean_windows=3, ema_alpha=0.5, threshold=0.99))
    res = _feed(pp, [[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.05, 0.9, 0.05]])
    assert res[-1][0].smoothed[1] == pytest.approx(expected, abs=1e-5)
    assert res[-1][0].fused[1] == pytest.approx(0.9, abs=1e-5)


def test_confirmation_needs_n_hits_within_t():
    cfg = PostprocessConfig(smoothing="none", threshold=0.6, confirm_hits=3, confirm_window_s=1.5, min_gap_s=0.0)
    bird, bg = [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]
    # hits at windows 0, 1, then a miss, then 4: window 4 ends 2 s after window 0 -> too far apart for 3 in 1.5 s
    res = _feed(PostProcessor(LABELS, cfg), [bird, bird, bg, bg, bird])
    assert sum(len(d) for _, d in res) == 0
    res = _feed(PostProcessor(LABELS, cfg), [bg, bird, bird, bird, bird])
    dets = [d for _, ds in res for d in ds]
    assert len(dets) == 1 and dets[0].label == "bird" and dets[0].hits == 3
    assert dets[0].start_ns == HOP and dets[0].end_ns == WIN + 3 * HOP  # first confirming window's start .. this end


def test_min_gap_and_per_class_thresholds_and_ignore():
    cfg = PostprocessConfig(
        smoothing="none", threshold=0.5, class_thresholds={"car": 0.95}, ignore_labels=["background"], min_gap_s=1.2
    )
    pp = PostProcessor(LABELS, cfg, model_sha256="ab" * 32, utc_ns_for=lambda pts: 1_700_000_000_000_000_000 + pts)
    seq = [[0.1, 0.8, 0.1]] * 6 + [[0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]
    res = _feed(pp, seq)
    dets = [d for _, ds in res for d in ds]
    # bird at windows 0, 3 (gap 1.5 s >= 1.2; 1.0 s after window 0 is too soon), car 0.9 < 0.95, background ignored
    assert [d.label for d in dets] == ["bird", "bird"]
    assert dets[1].end_ns - dets[0].end_ns == 3 * HOP
    d = dets[0]
    assert isinstance(d, Detection)
    assert d.confidence == pytest.approx(0.8, abs=1e-5)
    assert d.audio_confidence == pytest.approx(0.8, abs=1e-5) and d.image_confidence == pytest.approx(0.1, abs=1e-5)
    assert d.modalities == ("audio", "image") and d.model_sha256 == "ab" * 32
    assert d.start_utc == "2023-11-14T22:13:20.000Z" and d.end_utc == "2023-11-14T22:13:22.000Z"
    assert d.to_dict()["modalities"] == ["audio", "image"]


def test_missing_modality_gives_no_confidence_for_it():
    pp = PostProcessor(LABELS, PostprocessConfig(smoothing="none", threshold=0.5, min_gap_s=0.0))
    ((_, dets),) = _feed(pp, [[0.1, 0.8, 0.1]], mask=(1.0, 0.0))
    assert (
        dets[0].modalities == ("audio",) and dets[0].image_confidence is None and dets[0].audio_confidence is not None
    )


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown label"):
        PostProcessor(LABELS, PostprocessConfig(class_thresholds={"cat": 0.5}))
    with pytest.raises(ValueError):
        PostprocessConfig(class_thresholds={"car": 1.5})
    pp = PostProcessor(LABELS[:2], PostprocessConfig())
    with pytest.raises(ConfigError, match="3 classes, 2 labels"):
        _feed(pp, [[0.1, 0.8, 0.1]])
