"""Sources chosen by URI: the pipeline description as a string, credentials masked, bounded queues that count."""

from __future__ import annotations

import threading
import time

import pytest

from edgeav.contract import AudioContract, ImageContract, InputContract
from edgeav.errors import ConfigError
from edgeav.runtime.queues import BoundedQueue
from edgeav.runtime.sources import build_pipeline_description, mask_credentials, parse_source_uri
from edgeav.schema.runtime import RuntimeConfig, SourceConfig

C = InputContract(audio=AudioContract(sample_rate_hz=16000), image=ImageContract(height_px=224, width_px=160))
VIDEO_TAIL = (
    "videorate ! video/x-raw,framerate=5/1 ! videoscale method=bilinear2 add-borders=false ! "
    "video/x-raw,width=160,height=224,pixel-aspect-ratio=1/1 ! videoconvert ! "
    "video/x-raw,format=RGB,width=160,height=224,pixel-aspect-ratio=1/1,framerate=5/1 ! "
)
AUDIO_TAIL = "audioconvert ! audioresample ! audio/x-raw,format=F32LE,layout=interleaved,channels=1,rate=16000 ! "
LIVE_SINK = "emit-signals=true max-buffers=8 drop=false sync=false async=false"
LIVE_Q = "max-size-buffers=4 max-size-bytes=0 max-size-time=0 leaky=downstream"


def test_file_description_exact():
    d = build_pipeline_description(SourceConfig(uri="file:///data/clip one.mp4"), C)
    assert d == (
        'uridecodebin uri="file:///data/clip%20one.mp4" name=src  '
        f"src. ! video/x-raw ! queue ! {VIDEO_TAIL}appsink name=video_sink emit-signals=true max-buffers=8 drop=false sync=false  "
        f"src. ! audio/x-raw ! queue ! {AUDIO_TAIL}appsink name=audio_sink emit-signals=true max-buffers=8 drop=false sync=false"
    )
    assert "sync=true" in build_pipeline_description("file:///a.mkv", C, realtime=True)
    only_audio = build_pipeline_description("file:///a.wav", C, streams=("audio",))
    assert "video_sink" not in only_audio and "audio_sink" in only_audio


def test_live_camera_and_mic_descriptions_exact():
    d = build_pipeline_description(SourceConfig(uri="v4l2:///dev/video0", audio_uri="alsa://hw:1,0"), C)
    assert d == (
        f'v4l2src device="/dev/video0" do-timestamp=true ! queue name=video_queue {LIVE_Q} ! {VIDEO_TAIL}'
        f"appsink name=video_sink {LIVE_SINK}  "
        f'alsasrc device="hw:1,0" buffer-time=400000 latency-time=100000 ! queue name=audio_queue {LIVE_Q} ! '
        f"{AUDIO_TAIL}appsink name=audio_sink {LIVE_SINK}"
    )
    csi = build_pipeline_description("csi://1", C)
    assert csi.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)") and "nvvidconv" in csi
    assert build_pipeline_description("pulse://default", C).startswith("pulsesrc buffer-time=")
    assert 'pulsesrc device="alsa_input.usb"' in build_pipeline_description("pulse://alsa_input.usb", C)


def test_rtsp_description_and_masking():
    d = build_pipeline_description(SourceConfig(uri="rtsp://admin:s3cret@10.0.0.7:554/stream1", rtsp_latency_ms=300), C)
    assert d.startswith(
        'rtspsrc location="rtsp://admin:s3cret@10.0.0.7:554/stream1" latency=300 protocols=tcp ! decodebin ! '
    )
    masked = mask_credentials(d)
    assert "s3cret" not in masked and 'location="rtsp://admin:***@10.0.0.7:554/stream1"' in masked
    assert mask_credentials("rtsp://u:p@h/x?token=abc&x=1") == "rtsp://u:***@h/x?token=***&x=1"
    assert mask_credentials("rtsp://host/path") == "rtsp://host/path"
    assert mask_credentials("file:///a/b.mp4") == "file:///a/b.mp4"


def test_test_source_params():
    cfg = SourceConfig(uri="test://?pattern=ball&freq_hz=880&live=1&duration_s=2", fps=10, audio_chunk_s=0.05)
    d = build_pipeline_description(cfg, C)
    assert (
        "videotestsrc pattern=ball is-live=true num-buffers=20 ! video/x-raw,width=160,height=224,framerate=10/1" in d
    )
    assert "audiotestsrc wave=sine freq=880 volume=0.5 samplesperbuffer=800 is-live=true num-buffers=40" in d
    assert parse_source_uri(cfg.uri).is_live and not parse_source_uri("test://").is_live
    d = build_pipeline_description("test://?streams=audio", C)
    assert "videotestsrc" not in d and "audio_sink" in d
    assert "framerate=30000/1001" in build_pipeline_description(SourceConfig(uri="test://", fps=29.97), C)


@pytest.mark.parametrize(
    "uri,match",
    [
        ("/dev/video0", "not a URI"),
        ("http://x/y", "unknown source scheme 'http'"),
        ("file://relative.mp4", "absolute"),
        ("v4l2://video0", "v4l2:///dev/videoN"),
        ("csi://front", "csi://N"),
        ("test://?colour=red", "unknown test:// parameter"),
        ("rtsp:///nohost", "needs a host"),
    ],
)
def test_bad_uris(uri, match):
    with pytest.raises(ConfigError, match=match):
        parse_source_uri(uri)


def test_stream_a_source_lacks_is_an_error():
    with pytest.raises(ConfigError, match="no audio stream"):
        build_pipeline_description(SourceConfig(uri="v4l2:///dev/video0", streams=["video", "audio"]), C)
    with pytest.raises(ConfigError, match="must be alsa"):
        build_pipeline_description(SourceConfig(uri="v4l2:///dev/video0", audio_uri="rtsp://h/x"), C)


def test_runtime_config_forbids_unknown_keys_and_checks_bounds():
    cfg = RuntimeConfig()
    assert cfg.align.hop_s == 0.5 and cfg.backend.name == "onnxruntime" and cfg.backend.providers == ["cpu"]
    with pytest.raises(ValueError):
        RuntimeConfig.model_validate({"align": {"hop_ms": 500}})
    with pytest.raises(ValueError):
        RuntimeConfig.model_validate({"source": {"fps": 0}})
    for name, f in RuntimeConfig.model_fields.items():
        assert f.description, name
    for section in (cfg.source, cfg.align, cfg.backend, cfg.postprocess):
        for name, f in type(section).model_fields.items():
            assert f.description, name


def test_bounded_queue_drop_oldest_counts():
    q: BoundedQueue[int] = BoundedQueue(3, "drop_oldest")
    for i in range(10):
        assert q.put(i)
    assert q.dropped == 7 and len(q) == 3
    assert [q.get(0)[1] for _ in range(3)] == [7, 8, 9]
    assert q.get(0.01) == (False, None)
    assert q.stats()["high_water"] == 3 and q.stats()["put"] == 10


def test_bounded_queue_drop_newest_and_block():
    q: BoundedQueue[int] = BoundedQueue(2, "drop_newest")
    assert [q.put(i) for i in range(4)] == [True, True, False, False]
    assert q.dropped == 2 and q.get(0) == (True, 0)

    b: BoundedQueue[int] = BoundedQueue(1, "block")
    assert b.put(1)
    t0 = time.monotonic()
    assert not b.put(2, timeout_s=0.05) and b.dropped == 1 and time.monotonic() - t0 >= 0.04
    got = []
    th = threading.Thread(target=lambda: got.append(b.put(3, timeout_s=2.0)))
    th.start()
    assert b.get(1.0) == (True, 1)
    th.join(2.0)
    assert got == [True] and b.get(0) == (True, 3)
    b.close()
    assert b.get(1.0) == (False, None) and not b.put(4)
