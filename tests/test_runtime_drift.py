"""Split sensors on two clocks: a microphone whose crystal runs 200 ppm fast must stay aligned with the camera for
days. 24 h of synthetic buffer times (at full speed) through `DriftCorrector`; a short real run of the two
pipelines (camera and microphone apart) shows they share one clock and base time."""

from __future__ import annotations

import math
import random
import time

import pytest

from edgeav.timebase import NS_PER_MS, NS_PER_S, DriftCorrector

CHUNK_NS = 100 * NS_PER_MS  # 100 ms audio buffers (1600 samples at 16 kHz)
DAY_NS = 86_400 * NS_PER_S


def simulate(hours: float, ppm: float, seed: int = 0, wander_ppm: float = 0.0, correct: bool = True):
    """A microphone `ppm` fast (+ a slow temperature wander of +-`wander_ppm` over the day): buffer k holds the
    samples the card counted as stream time [k, k+1) * CHUNK_NS, captured (true time, the camera's clock) earlier
    than that by the accumulated drift, and delivered with a latency of 2 ms + exponential jitter (mean 3 ms),
    1 % of buffers held up to 0.8 s, and every 10 min a 2 s stall after which the queued buffers arrive together.
    Returns (max |mapped - true| in ns after the first minute, the same over the last hour, the corrector)."""
    rng = random.Random(seed)
    dc = DriftCorrector()
    n = int(hours * 3600 * NS_PER_S // CHUNK_NS)
    true_ns = 0.0  # true capture time of the chunk's first sample
    stall_until = 0.0
    worst = worst_last_hour = 0
    last_hour = n - int(3600 * NS_PER_S // CHUNK_NS)
    for k in range(n):
        pts = k * CHUNK_NS  # the card's sample count, as stream time
        rate = 1.0 + (ppm + wander_ppm * math.sin(2 * math.pi * true_ns / DAY_NS)) * 1e-6
        dur_true = CHUNK_NS / rate  # the chunk's samples took this long in true time
        end_true = true_ns + dur_true
        arrival = end_true + 2 * NS_PER_MS + rng.expovariate(1 / (3 * NS_PER_MS))
        if rng.random() < 0.01:
            arrival += rng.uniform(0, 800 * NS_PER_MS)
        if k % 6000 == 3000:  # every 10 min: the loop stalls for 2 s
            stall_until = end_true + 2 * NS_PER_S
        arrival = max(arrival, stall_until)
        mapped = dc.map(pts, CHUNK_NS, int(arrival)) if correct else pts
        if k >= 600:  # after the first minute
            err = abs(mapped - int(true_ns))
            worst = max(worst, err)
            if k >= last_hour:
                worst_last_hour = max(worst_last_hour, err)
        true_ns = end_true
    return worst, worst_last_hour, dc


def test_200_ppm_fast_microphone_stays_aligned_for_24_hours() -> None:
    worst, last, dc = simulate(24.0, 200.0, wander_ppm=20.0)
    print(
        f"24 h, 200 ppm (+-20 ppm wander): max alignment error {worst / 1e6:.2f} ms, last hour {last / 1e6:.2f} ms, "
        f"fitted rate error {dc.rate_error_ppm:.1f} ppm"
    )
    assert worst < 20 * NS_PER_MS, f"alignment error {worst / 1e6:.1f} ms after 24 h"
    assert 170 < dc.rate_error_ppm < 230


def test_without_re_basing_the_drift_exceeds_the_frame_tolerance() -> None:
    # what an offset measured once at start gives: 200 ppm of 3 h = 2.16 s, past the 500 ms frame matching
    worst, _, _ = simulate(3.0, 200.0, correct=False)
    assert worst > 2.0 * NS_PER_S


def test_a_clock_that_does_not_drift_is_left_as_it_was() -> None:
    worst, _, dc = simulate(1.0, 0.0, seed=3)
    assert worst < 5 * NS_PER_MS and abs(dc.rate_error_ppm) < 5


def test_bad_arguments_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="min_blocks"):
        DriftCorrector(fit_blocks=2, min_blocks=3)


# -- the real pipelines -------------------------------------------------------------------------------------------


@pytest.mark.gstreamer
def test_split_pipelines_share_one_clock_and_base_time() -> None:
    pytest.importorskip("gi", reason="capture needs GStreamer")
    from _daemon_fixtures import contract

    from edgeav.runtime.capture import Capture, ReadStatus, _gst
    from edgeav.schema.runtime import SourceConfig

    Gst = _gst()
    base = time.monotonic_ns()
    uri = "test://?live=1&pattern=ball&wave=ticks"
    cam = Capture(SourceConfig(uri=uri, streams=["video"], fps=10), contract(), streams=("video",), clock_base_ns=base)
    mic = Capture(SourceConfig(uri=uri, streams=["audio"]), contract(), streams=("audio",), clock_base_ns=base)
    with cam, mic:
        clocks = [c._pipeline.get_clock() for c in (cam, mic)]
        assert clocks[0] is not None and clocks[0] == clocks[1] == Gst.SystemClock.obtain()
        assert clocks[0].get_property("clock-type") == Gst.ClockType.MONOTONIC
        assert cam._pipeline.get_base_time() == mic._pipeline.get_base_time() == base
        assert mic.audio_drift is not None and cam.audio_drift is None  # the microphone is also re-based per buffer
        # running time on both = monotonic time since `base`: each item's time is near when it arrived
        lags: dict[str, list[int]] = {"video": [], "audio": []}
        deadline = time.monotonic() + 30
        while min(len(v) for v in lags.values()) < 10 and time.monotonic() < deadline:
            for c in (cam, mic):
                status, item = c.read(50_000_000)
                if status is ReadStatus.OK and item.kind in lags:
                    lags[item.kind].append(time.monotonic_ns() - base - item.pts_ns)  # test sources push at pts
        assert min(len(v) for v in lags.values()) >= 10, lags
        for kind, v in lags.items():
            assert -50 * NS_PER_MS < min(v) < 500 * NS_PER_MS, (kind, v)  # nothing from the future, nothing stale
