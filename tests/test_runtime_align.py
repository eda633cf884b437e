"""Alignment core: synthetic clapper, an hour without drift, gaps and missing modalities reported."""

from __future__ import annotations

import numpy as np
import pytest

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import SensorError
from edgeav.runtime.align import Aligner
from edgeav.schema.runtime import AlignConfig
from edgeav.timebase import NS_PER_MS, NS_PER_S, ns_for_samples, s_to_ns, samples_for_ns


def _contract(
    rate_hz: int = 8000, window_s: float = 1.0, n_frames: int = 1, frame_rate_hz: float | None = None
) -> InputContract:
    return InputContract(
        audio=AudioContract(
            sample_rate_hz=rate_hz, window_s=window_s, fmax_hz=rate_hz / 2, n_fft=256, win_length=200, hop_length=80
        ),
        image=ImageContract(height_px=32, width_px=32, n_frames=n_frames, frame_rate_hz=frame_rate_hz),
    )


def _frame(value: int) -> np.ndarray:
    return np.full((32, 32, 3), value, dtype=np.uint8)


class Clapper:
    """A synthetic sensor pair: audio clicks and bright frames at known true times, each sensor late by its latency."""

    def __init__(
        self, rate_hz: int, chunk: int, fps: float, events_ns: list[int], audio_lat_ns: int, video_lat_ns: int
    ):
        self.rate_hz, self.chunk, self.fps = rate_hz, chunk, fps
        self.events_ns = events_ns
        self.audio_lat_ns, self.video_lat_ns = audio_lat_ns, video_lat_ns

    def audio_chunks(self, duration_ns: int, skip: tuple[int, int] | None = None):
        total = samples_for_ns(duration_ns, self.rate_hz)
        click_idx = {samples_for_ns(e, self.rate_hz) for e in self.events_ns}
        for i0 in range(0, total, self.chunk):
            n = min(self.chunk, total - i0)
            pts = ns_for_samples(i0, self.rate_hz)  # as GStreamer: PTS from the cumulative sample count
            if skip and skip[0] <= pts < skip[1]:
                continue
            x = np.zeros(n, dtype=np.float32)
            for c in click_idx:
                if i0 <= c < i0 + n:
                    x[c - i0] = 1.0
            yield pts + self.audio_lat_ns, x

    def frames(self, duration_ns: int):
        period_ns = int(round(NS_PER_S / self.fps))
        events = set(self.events_ns)
        for t in range(0, duration_ns, period_ns):
            yield t + self.video_lat_ns, _frame(255 if t in events else 10)


def _run(aligner: Aligner, clap: Clapper, duration_ns: int, skip=None):
    """Feed both sensors merged by PTS (as a pipeline delivers them), collecting every window."""
    audio = [("a", pts, x) for pts, x in clap.audio_chunks(duration_ns, skip)]
    frames = [("v", pts, x) for pts, x in clap.frames(duration_ns)]
    out = []
    for kind, pts, x in sorted(audio + frames, key=lambda r: r[1]):
        if kind == "a":
            aligner.push_audio(pts, x, clap.rate_hz)
        else:
            aligner.push_frame(pts, x)
        out.extend(aligner.ready())
    out.extend(aligner.flush())
    return out


def _click_time_ns(w) -> int:
    i = int(np.argmax(w.audio))
    assert w.audio[i] == 1.0
    return w.start_ns + ns_for_samples(i, 8000)


def test_clapper_pairs_within_1ms_with_sensor_offsets():
    contract = _contract()
    # The camera is 120 ms late, the mic 35 ms late; the offsets say so.
    cfg = AlignConfig(hop_s=0.5, audio_offset_ns=35 * NS_PER_MS, video_offset_ns=120 * NS_PER_MS, frame_tolerance_ms=30)
    events = [s_to_ns(4.0), s_to_ns(9.0)]  # on the 25 fps frame grid
    clap = Clapper(8000, 400, 25.0, events, 35 * NS_PER_MS, 120 * NS_PER_MS)
    wins = _run(Aligner(contract, cfg), clap, s_to_ns(12.0))
    ends = [w.end_ns for w in wins]
    assert ends == sorted(ends) and all(e % s_to_ns(0.5) == 0 for e in ends)
    assert all(b - a == s_to_ns(0.5) for a, b in zip(ends, ends[1:]))
    for ev in events:
        w = next(w for w in wins if w.centre_ns == ev)
        assert not w.missing, w.missing
        assert w.frames.shape == (1, 32, 32, 3) and w.frames[0, 0, 0, 0] == 255
        assert abs(w.frame_pts_ns[0] - ev) <= NS_PER_MS
        assert abs(_click_time_ns(w) - ev) <= NS_PER_MS
        assert w.mask().tolist() == [1.0, 1.0]


def test_without_offsets_the_pair_is_off_by_the_latency():
    contract = _contract()
    cfg = AlignConfig(hop_s=0.5, frame_tolerance_ms=30)
    clap = Clapper(8000, 400, 25.0, [s_to_ns(4.0)], 35 * NS_PER_MS, 120 * NS_PER_MS)
    wins = _run(Aligner(contract, cfg), clap, s_to_ns(8.0))
    w = next(w for w in wins if w.centre_ns == s_to_ns(4.0))
    assert abs(_click_time_ns(w) - s_to_ns(4.0) - 35 * NS_PER_MS) <= NS_PER_MS
    assert w.frames[0, 0, 0, 0] != 255  # the bright frame is 120 ms after the centre; the 4.00 s frame (pts) wins


def test_no_drift_over_an_hour():
    rate = 11025  # 1000-sample chunks last 90702947.8 ns: PTS rounding would drift if chunks were counted, not placed
    contract = InputContract(
        audio=AudioContract(sample_rate_hz=rate, window_s=1.0, fmax_hz=5000, n_fft=256, win_length=200, hop_length=80),
        image=ImageContract(height_px=32, width_px=32),
    )
    cfg = AlignConfig(hop_s=1.0, audio_offset_ns=7 * NS_PER_MS, video_offset_ns=0, frame_tolerance_ms=100)
    events = [s_to_ns(t + 0.5) for t in range(0, 3600, 300)] + [s_to_ns(3598.5)]
    aligner = Aligner(contract, cfg)
    total = samples_for_ns(s_to_ns(3600.0), rate)
    click_idx = [samples_for_ns(e, rate) for e in events]
    checked = []
    frame_t = 0
    frame_period = s_to_ns(0.5)
    for i0 in range(0, total, 1000):
        n = min(1000, total - i0)
        x = np.zeros(n, dtype=np.float32)
        for c in click_idx:
            if i0 <= c < i0 + n:
                x[c - i0] = 1.0
        end_pts = ns_for_samples(i0 + n, rate)
        aligner.push_audio(ns_for_samples(i0, rate) + 7 * NS_PER_MS, x, rate)
        while frame_t < end_pts:
            aligner.push_frame(frame_t, _frame(255 if frame_t in events else 0))
            frame_t += frame_period
        for w in aligner.ready():
            if w.centre_ns in events:
                i = int(np.argmax(w.audio))
                checked.append(
                    (w.centre_ns, w.start_ns + ns_for_samples(i, rate), w.frame_pts_ns[0], w.frames[0, 0, 0, 0])
                )
            else:
                assert not w.missing
        assert aligner.buffered()["audio_chunks"] < 100  # bounded memory
    assert len(checked) == len(events)
    for centre, click_t, frame_pts, bright in checked:
        assert abs(click_t - centre) <= NS_PER_MS
        assert frame_pts == centre and bright == 255
    assert aligner.counters["windows"] >= 3598


def test_gap_and_discontinuity_reported_as_gap():
    contract = _contract()
    cfg = AlignConfig(hop_s=0.5, max_gap_ms=20, frame_tolerance_ms=30)
    clap = Clapper(8000, 400, 25.0, [], 0, 0)
    # 300 ms of audio never arrives: the next chunk's PTS jumps (a discontinuity).
    wins = _run(Aligner(contract, cfg), clap, s_to_ns(6.0), skip=(s_to_ns(3.0), s_to_ns(3.3)))
    bad = [w for w in wins if "audio" in w.missing]
    assert bad and all(w.start_ns < s_to_ns(3.3) and w.end_ns > s_to_ns(3.0) for w in bad)
    assert all("gap of 300.0 ms" in w.missing["audio"] for w in bad)
    assert all(w.audio is None and w.frames is not None and w.mask().tolist() == [0.0, 1.0] for w in bad)
    good = [w for w in wins if w not in bad]
    assert good and all(not w.missing for w in good)


def test_small_gap_is_zero_filled():
    contract = _contract()
    cfg = AlignConfig(hop_s=0.5, max_gap_ms=60, frame_tolerance_ms=30)
    clap = Clapper(8000, 400, 25.0, [], 0, 0)
    wins = _run(Aligner(contract, cfg), clap, s_to_ns(4.0), skip=(s_to_ns(2.0), s_to_ns(2.05)))
    w = next(w for w in wins if w.end_ns == s_to_ns(2.5))
    assert w.audio is not None and w.audio_filled_ns == s_to_ns(0.05) and not w.missing


def test_video_stops_window_waits_then_reports_missing_frame():
    contract = _contract()
    cfg = AlignConfig(hop_s=0.5, frame_tolerance_ms=50, max_wait_s=1.0)
    aligner = Aligner(contract, cfg)
    out = []
    for k in range(80):  # 8 s of audio in 100 ms chunks; frames only for the first 3 s
        t = k * s_to_ns(0.1)
        aligner.push_audio(t, np.zeros(800, np.float32), 8000)
        if t < s_to_ns(3.0):
            aligner.push_frame(t, _frame(1))
        out.extend(aligner.ready())
    ends = [w.end_ns for w in out]
    assert ends[-1] == s_to_ns(7.0)  # stream time 8.0 s, max wait 1.0 s
    late = [w for w in out if w.centre_ns > s_to_ns(2.9) + s_to_ns(0.05)]
    assert late and all(
        w.frames is None and "nearest frame" in w.missing["image"] and "> tolerance 50.0 ms" in w.missing["image"]
        for w in late
    )
    assert all(w.audio is not None for w in out)


def test_audio_only_source_and_rate_check():
    contract = _contract()
    aligner = Aligner(contract, AlignConfig(hop_s=0.5), streams=("audio",))
    for k in range(30):
        aligner.push_audio(k * s_to_ns(0.1), np.ones(800, np.float32), 8000)
    wins = aligner.ready()
    assert wins and all(w.missing == {"image": "source has no video stream"} and w.audio is not None for w in wins)
    assert wins[-1].end_ns == s_to_ns(3.0)
    with pytest.raises(SensorError, match="16000 Hz"):
        aligner.push_audio(0, np.zeros(10, np.float32), 16000)


def test_several_frames_per_window():
    contract = _contract(n_frames=4, frame_rate_hz=10.0)
    aligner = Aligner(contract, AlignConfig(hop_s=1.0, frame_tolerance_ms=60), streams=("video", "audio"))
    for k in range(40):
        t = k * s_to_ns(0.1)
        aligner.push_audio(t, np.zeros(800, np.float32), 8000)
        aligner.push_frame(t + 3 * NS_PER_MS, _frame(k))  # 3 ms of jitter: inside the 50 ms (half a period) tolerance
    w = aligner.ready()[0]
    assert w.end_ns == s_to_ns(1.0)
    assert w.frames.shape == (4, 32, 32, 3) and w.frames_present == (True,) * 4
    # targets at 0, 100, 200, 300 ms from the window start (k / 10 Hz); frames every 100 ms
    assert list(w.frame_pts_ns) == [s_to_ns(0.1 * k) + 3 * NS_PER_MS for k in range(4)]
    assert [int(f[0, 0, 0]) for f in w.frames] == [0, 1, 2, 3]


def _frame_stream(aligner: Aligner, duration_s: float, fps: float, drop=lambda k: False):
    """Audio in 100 ms chunks and frames at `fps` (frame k has value k % 250 + 1, never 0), merged by PTS."""
    audio = [("a", k * s_to_ns(0.1), np.zeros(800, np.float32)) for k in range(int(round(duration_s * 10)))]
    period = NS_PER_S / fps
    frames = [
        ("v", int(round(k * period)), _frame(k % 250 + 1)) for k in range(int(round(duration_s * fps))) if not drop(k)
    ]
    out = []
    for kind, pts, x in sorted(audio + frames, key=lambda r: r[1]):
        (aligner.push_audio(pts, x, 8000) if kind == "a" else aligner.push_frame(pts, x))
        out.extend(aligner.ready())
    return out + aligner.flush()


def test_forty_frames_at_25_hz_from_the_capture_clock():
    contract = _contract(window_s=2.0, n_frames=40, frame_rate_hz=25.0)  # 1.6 s of frames in a 2 s window
    al = Aligner(contract, AlignConfig(hop_s=0.5))
    assert al.tolerance_ns == 20 * NS_PER_MS  # the 500 ms default is capped at half a frame period
    out = _frame_stream(al, 6.0, 25.0)
    assert [w.end_ns for w in out] == [s_to_ns(2.0) + k * s_to_ns(0.5) for k in range(9)]
    for w in out:
        assert not w.missing and w.frames.shape == (40, 32, 32, 3) and w.frames_present == (True,) * 40
        targets = [w.start_ns + k * s_to_ns(0.04) for k in range(40)]
        # every other window starts half a frame period off the 25 Hz grid: still 40 distinct consecutive frames
        assert all(abs(p - t) <= 20 * NS_PER_MS for p, t in zip(w.frame_pts_ns, targets))
        assert np.all(np.diff(w.frame_pts_ns) == s_to_ns(0.04))
        assert [int(f[0, 0, 0]) for f in w.frames] == [p // s_to_ns(0.04) % 250 + 1 for p in w.frame_pts_ns]
    assert al.counters["missing_frames"] == 0


def test_a_dropped_frame_is_a_zero_frame_never_a_copy():
    contract = _contract(window_s=2.0, n_frames=40, frame_rate_hz=25.0)
    al = Aligner(contract, AlignConfig(hop_s=0.4))  # windows start on the frame grid
    out = _frame_stream(al, 6.0, 25.0, drop=lambda k: k == 55)  # the frame at 2.20 s never arrives
    hit = [w for w in out if w.start_ns <= s_to_ns(2.2) < w.start_ns + s_to_ns(1.6)]
    assert [w.start_ns for w in hit] == [s_to_ns(0.8), s_to_ns(1.2), s_to_ns(1.6), s_to_ns(2.0)]
    for w in hit:
        i = (s_to_ns(2.2) - w.start_ns) // s_to_ns(0.04)
        assert not w.missing and w.mask().tolist() == [1.0, 1.0]  # 39 of 40 frames: the image is there
        assert w.frames_present[i] is False and sum(w.frames_present) == 39 and w.n_missing_frames == 1
        assert not w.frames[i].any()  # zeros, not the 2.16 s or 2.24 s frame
        assert int(w.frames[i - 1, 0, 0, 0]) == 55 and int(w.frames[i + 1, 0, 0, 0]) == 57  # neighbours untouched
        assert w.frame_pts_ns[i] == s_to_ns(2.2)  # the target time stands where the frame is missing
    assert all(all(w.frames_present) for w in out if w not in hit)
    assert al.counters["missing_frames"] == 4


def test_too_many_dropped_frames_is_no_image_with_a_reason():
    contract = _contract(window_s=2.0, n_frames=40, frame_rate_hz=25.0)
    al = Aligner(contract, AlignConfig(hop_s=0.4, min_frames_present_fraction=0.75))
    assert al.min_frames_present == 30
    out = _frame_stream(al, 8.0, 25.0, drop=lambda k: 100 <= k < 120)  # 0.8 s of video lost: 4.00 .. 4.76 s
    no_image = [w for w in out if "image" in w.missing]
    assert [w.start_ns for w in no_image] == [s_to_ns(3.2), s_to_ns(3.6), s_to_ns(4.0)]  # 20 of 40 frames each
    for w in no_image:
        assert w.frames is None and w.audio is not None and w.mask().tolist() == [1.0, 0.0]
        assert w.missing["image"] == (
            "20 of 40 frames within tolerance 20.0 ms of their targets (need 30: min_frames_present_fraction 0.75)"
        )
    partial = [w for w in out if w.frames is not None and not all(w.frames_present)]
    assert partial and all(sum(w.frames_present) >= 30 for w in partial)
    # from 2.8 s: 10 lost (30 present, just enough), 3.2 / 3.6 / 4.0 s: 20 each (no image), 4.4 s: 10 lost
    assert [w.start_ns for w in partial] == [s_to_ns(2.8), s_to_ns(4.4)]
    assert al.counters["missing_frames"] == 10 + 3 * 20 + 10


def test_replay_waits_for_a_lagging_decoder_and_for_stream_end():
    """A file replay: the audio decoder runs 6 s ahead of the video one. Live mode would give up on the frames
    (max_wait 2 s); replay mode waits, so every window has its frame. After the video ends, windows go on without it."""
    contract = _contract()
    cfg = AlignConfig(hop_s=0.5, frame_tolerance_ms=120, max_wait_s=2.0)
    audio = [("a", k * s_to_ns(0.1), np.zeros(800, np.float32)) for k in range(100)]  # 10 s
    frames = [("v", k * s_to_ns(0.2), _frame(k % 250)) for k in range(40)]  # 8 s, then the camera ends
    # arrival order: audio 6 s ahead of video
    order = sorted(audio + frames, key=lambda r: r[1] - (s_to_ns(6.0) if r[0] == "a" else 0))
    results = {}
    for live in (True, False):
        al = Aligner(contract, cfg, live=live)
        out = []
        for kind, pts, x in order:
            (al.push_audio(pts, x, 8000) if kind == "a" else al.push_frame(pts, x))
            out.extend(al.ready())
        if not live:
            before = len(out)
            al.end_stream("video")
            out.extend(al.ready())
            assert out[-1].end_ns == s_to_ns(10.0) and len(out) > before  # the audio no longer waits for video
        out.extend(al.flush())
        results[live] = (out, al.counters)
    live_out, live_counters = results[True]
    assert live_counters["late_frames"] > 0 and any("image" in w.missing for w in live_out if w.end_ns <= s_to_ns(8.0))
    out, counters = results[False]
    assert counters["late_frames"] == 0
    assert [w.end_ns for w in out] == [s_to_ns(1.0) + k * s_to_ns(0.5) for k in range(19)]  # 1.0 .. 10.0 s
    with_frames = [w for w in out if w.frames is not None]
    assert all(not w.missing for w in with_frames) and with_frames[-1].end_ns == s_to_ns(8.0)  # centre 7.5
    after = [w for w in out if w.end_ns > s_to_ns(8.0)]  # decided only once the video said it ended
    assert after and all(w.frames is None and w.audio is not None for w in after)
    with pytest.raises(ValueError, match="unknown stream"):
        Aligner(contract, cfg).end_stream("lidar")


def test_out_of_order_audio_chunks_are_placed_by_pts_and_pruned():
    contract = _contract()
    al = Aligner(contract, AlignConfig(hop_s=0.5, frame_tolerance_ms=60), streams=("audio",))
    order = list(range(40))
    order[10], order[11] = order[11], order[10]  # chunk 1.1 s arrives before chunk 1.0 s
    out = []
    for k in order:
        al.push_audio(k * s_to_ns(0.1), np.full(800, k, np.float32), 8000)
        out.extend(al.ready())
    out.extend(al.flush())
    w = next(w for w in out if w.end_ns == s_to_ns(1.5))
    assert w.audio is not None and w.audio[0] == 5 and w.audio[4000] == 10 and w.audio[4800] == 11
    assert al.buffered()["audio_chunks"] <= 12  # pruned although the buffer was once out of order
