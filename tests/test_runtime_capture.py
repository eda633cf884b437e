"""GStreamer capture: test:// and file:// sources, PTS on the pipeline clock, explicit read status, errors surfaced."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

gi = pytest.importorskip("gi", reason="capture needs PyGObject (pip install 'edgeav[runtime]')")
try:
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst
except (ValueError, ImportError) as e:  # pragma: no cover
    pytest.skip(f"GStreamer 1.0 is not available: {e}", allow_module_level=True)

from edgeav.contract import AudioContract, ImageContract, InputContract  # noqa: E402
from edgeav.errors import SensorError  # noqa: E402
from edgeav.runtime.capture import AudioChunk, Capture, ReadStatus, StreamEnd, VideoFrame, probe_streams  # noqa: E402
from edgeav.schema.runtime import SourceConfig  # noqa: E402
from edgeav.timebase import NS_PER_MS, NS_PER_S, ns_for_samples  # noqa: E402

pytestmark = pytest.mark.gstreamer

C = InputContract(
    audio=AudioContract(sample_rate_hz=16000, window_s=1.0),
    image=ImageContract(height_px=32, width_px=48),
)


def write_clapper(
    path: Path,
    duration_s: float = 4.0,
    fps: int = 10,
    rate_hz: int = 16000,
    event_s: float = 2.0,
    video: bool = True,
    audio: bool = True,
) -> Path:
    """A Matroska file (MJPEG + FLAC) with a bright frame and a click both at `event_s`, written with appsrc."""
    Gst.init(None)
    parts = []
    if video:
        parts.append(
            f"appsrc name=vsrc format=time caps=video/x-raw,format=RGB,width=64,height=48,framerate={fps}/1 "
            "! videoconvert ! jpegenc ! queue ! mux."
        )
    if audio:
        parts.append(
            f"appsrc name=asrc format=time caps=audio/x-raw,format=S16LE,layout=interleaved,channels=1,rate={rate_hz} "
            "! audioconvert ! flacenc ! queue ! mux."
        )
    parts.append(f'matroskamux name=mux ! filesink location="{path}"')
    p = Gst.parse_launch("  ".join(parts))
    p.set_state(Gst.State.PLAYING)
    event_ns = int(round(event_s * NS_PER_S))
    if video:
        src = p.get_by_name("vsrc")
        for k in range(int(duration_s * fps)):
            t = k * NS_PER_S // fps
            img = np.full((48, 64, 3), 255 if t == event_ns else 20, np.uint8)
            b = Gst.Buffer.new_wrapped(img.tobytes())
            b.pts, b.duration = t, NS_PER_S // fps
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
    if audio:
        src = p.get_by_name("asrc")
        n = int(duration_s * rate_hz)
        x = np.zeros(n, np.int16)
        x[int(event_s * rate_hz)] = 30000
        chunk = rate_hz // 10
        for i in range(0, n, chunk):
            b = Gst.Buffer.new_wrapped(x[i : i + chunk].tobytes())
            b.pts, b.duration = ns_for_samples(i, rate_hz), ns_for_samples(chunk, rate_hz)
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
    msg = p.get_bus().timed_pop_filtered(10 * NS_PER_S, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    p.set_state(Gst.State.NULL)
    assert msg is not None and msg.type == Gst.MessageType.EOS, msg and msg.parse_error()
    return path


def read_all(cap: Capture, timeout_ns: int = 2 * NS_PER_S) -> tuple[list, ReadStatus]:
    items = []
    while True:
        status, item = cap.read(timeout_ns)
        if status is not ReadStatus.OK:
            return items, status
        items.append(item)


def test_test_source_gives_frames_and_audio_with_pts():
    cfg = SourceConfig(uri="test://?pattern=ball&freq_hz=440&duration_s=2", fps=5, audio_chunk_s=0.1)
    with Capture(cfg, C) as cap:
        assert cap.streams == ("video", "audio") and not cap.is_live
        items, status = read_all(cap)
        assert cap.stats()["dropped"] == 0
    assert status is ReadStatus.EOS
    frames = [i for i in items if isinstance(i, VideoFrame)]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert [f.pts_ns for f in frames] == [k * 200 * NS_PER_MS for k in range(10)]
    assert all(f.rgb.shape == (32, 48, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert [c.pts_ns for c in chunks] == [k * 100 * NS_PER_MS for k in range(20)]
    assert all(c.samples.dtype == np.float32 and c.samples.shape == (1600,) and c.rate_hz == 16000 for c in chunks)
    x = np.concatenate([c.samples for c in chunks])
    spectrum = np.abs(np.fft.rfft(x[:16000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins over one second


def test_live_test_source_reads_then_closes_fast():
    cfg = SourceConfig(uri="test://?live=1", fps=10, audio_chunk_s=0.05)
    t0 = time.monotonic()
    with Capture(cfg, C) as cap:
        assert cap.is_live
        kinds = set()
        while time.monotonic() - t0 < 1.0:
            status, item = cap.read(200 * NS_PER_MS)
            assert status in (ReadStatus.OK, ReadStatus.TIMEOUT)
            if item is not None:
                kinds.add(item.kind)
        assert kinds == {"video", "audio"}
        assert cap.utc_ns_for(0) is not None
    assert time.monotonic() - t0 < 5.0


def test_file_clapper_pts_match(tmp_path):
    path = write_clapper(tmp_path / "clap.mkv")
    assert probe_streams(path.as_uri()) == ("video", "audio")
    with Capture(SourceConfig(uri=path.as_uri(), fps=10), C) as cap:
        assert "uridecodebin" in cap.description
        items, status = read_all(cap)
    assert status is ReadStatus.EOS
    frames = [i for i in items if i.kind == "video"]
    chunks = [i for i in items if i.kind == "audio"]
    assert len(frames) == 40 and frames[0].pts_ns == 0
    bright = [f.pts_ns for f in frames if f.rgb.mean() > 200]
    assert bright == [2 * NS_PER_S]
    clicks = [
        c.pts_ns + ns_for_samples(int(np.argmax(np.abs(c.samples))), 16000)
        for c in chunks
        if np.abs(c.samples).max() > 0.5
    ]
    assert len(clicks) == 1 and abs(clicks[0] - 2 * NS_PER_S) <= NS_PER_MS
    assert sum(len(c.samples) for c in chunks) == 4 * 16000


def test_audio_only_file_is_probed(tmp_path):
    path = write_clapper(tmp_path / "audio.mkv", video=False)
    assert probe_streams(path.as_uri()) == ("audio",)
    with Capture(path.as_uri(), C) as cap:
        assert cap.streams == ("audio",) and "video_sink" not in cap.description
        items, status = read_all(cap)
    assert status is ReadStatus.EOS and items[-1] == StreamEnd("audio")
    assert items[:-1] and all(i.kind == "audio" for i in items[:-1])


def test_realtime_replay_is_paced(tmp_path):
    path = write_clapper(tmp_path / "clap.mkv", duration_s=1.5, event_s=0.5)
    t0 = time.monotonic()
    with Capture(SourceConfig(uri=path.as_uri(), fps=10), C, realtime=True) as cap:
        assert "sync=true" in cap.description
        _, status = read_all(cap)
    assert status is ReadStatus.EOS and time.monotonic() - t0 >= 1.2


def test_missing_and_broken_files_raise_sensor_error(tmp_path):
    with pytest.raises(SensorError, match="file not found"):
        Capture((tmp_path / "nope.mkv").as_uri(), C)
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"this is not a media file" * 100)
    with pytest.raises(SensorError):
        Capture(junk.as_uri(), C)  # the probe refuses it
    # Without the probe the pipeline itself fails: the bus error surfaces, no hang.
    t0 = time.monotonic()
    with pytest.raises(SensorError, match="junk.mkv|stream|type"):
        with Capture(junk.as_uri(), C, streams=("video", "audio")) as cap:
            while True:
                status, _ = cap.read_or_raise(NS_PER_S)
                assert status is not ReadStatus.EOS
    assert time.monotonic() - t0 < 8.0


def test_missing_element_is_a_sensor_error():
    with pytest.raises(SensorError, match="csi://0"):
        Capture("csi://0", C).start()  # no nvarguscamerasrc here


def test_live_source_with_a_slow_reader_drops_oldest_and_counts():
    cfg = SourceConfig(uri="test://?live=1", fps=30, audio_chunk_s=0.01, queue_max_items=8)
    with Capture(cfg, C) as cap:
        time.sleep(1.0)  # the reader is busy elsewhere: ~130 items arrive, 8 fit
        stats = cap.stats()
        assert stats["dropped"] >= 50 and stats["queue"]["maxsize"] == 8
        status, item = cap.read(NS_PER_S)
        assert status is ReadStatus.OK and item.pts_ns > 500 * NS_PER_MS  # the oldest ones were the ones dropped


def test_credentials_are_masked_in_the_log_and_the_error(caplog):
    cfg = SourceConfig(uri="rtsp://admin:s3cret@127.0.0.1:1/stream1", start_timeout_s=3)
    t0 = time.monotonic()
    with caplog.at_level("INFO", logger="edgeav.runtime.capture"):
        with pytest.raises(SensorError) as e:
            with Capture(cfg, C) as cap:
                while time.monotonic() - t0 < 5.0:
                    cap.read_or_raise(200 * NS_PER_MS)
    assert 'rtspsrc location="rtsp://admin:***@127.0.0.1:1/stream1"' in caplog.text
    assert "s3cret" not in caplog.text and "s3cret" not in str(e.value) and "admin:***@" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("uri,element", [("v4l2:///dev/video99", "v4l2src"), ("alsa://hw:9,0", "alsasrc")])
def test_absent_camera_or_microphone_is_a_one_line_sensor_error(uri, element):
    Gst.init(None)
    if Gst.ElementFactory.find(element) is None:
        pytest.skip(f"GStreamer lacks {element}")
    t0 = time.monotonic()
    with pytest.raises(SensorError, match=f"{uri}: {element}0") as e:
        with Capture(SourceConfig(uri=uri, start_timeout_s=3), C) as cap:
            cap.read_or_raise(NS_PER_S)
    assert "\n" not in str(e.value) and time.monotonic() - t0 < 4.0


def test_software_video_decoder_gets_the_configured_thread_count(tmp_path):
    from _runtime_media import missing_elements, write_av

    Gst.init(None)
    if missing_elements("mp4") or Gst.ElementFactory.find("avdec_h264") is None:
        pytest.skip("GStreamer lacks the H.264 encoder/decoder (openh264enc, avdec_h264)")
    path = write_av(tmp_path / "av.mp4", duration_s=1.0)
    for threads, expected in ((1, [1]), (0, [])):
        with Capture(SourceConfig(uri=path.as_uri(), fps=10, decoder_threads=threads), C) as cap:
            items, status = read_all(cap)
            assert status is ReadStatus.EOS and any(i.kind == "video" for i in items)
            assert list(cap.decoder_threads.values()) == expected
            assert all(k.startswith("avdec_h264") for k in cap.decoder_threads)
