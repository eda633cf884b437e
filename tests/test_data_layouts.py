"""Data layer on tiny generated data sets: layouts, windows, splits by group, pairing, the cache, bad input."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest
from _data_fixtures import LAYOUT_SETS, make_paired, write_image, write_video, write_wav

from edgeav.errors import DataError, MediaError, UnknownNameError
from edgeav.schema import DataConfig
from edgeav.timebase import s_to_ns, samples_for_ns
from edgeav.train.data import LAYOUTS, detect_kind, load_dataset, media
from edgeav.train.data.splits import pick_groups

RATE = 16_000
WIN = samples_for_ns(s_to_ns(2.0), RATE)


def cfg(tmp_path: Path, **kw) -> DataConfig:
    base = dict(window_s=2.0, hop_s=1.0, image_size_px=32, cache_dir=str(tmp_path / "cache"), sample_rate_hz=RATE)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture
def paired(tmp_path: Path) -> Path:
    # durations chosen so that windows are easy to count: 2 s window, 1 s hop
    return make_paired(
        tmp_path / "ds",
        {
            "crow": [4.0, 1.0, 3.0],  # 3 + 1 (padded) + 2 windows
            "owl": [2.0, 5.5, 2.5],  # 1 + 4 + 1
            "wren": [3.0, 3.0, 3.0],
        },
    )


# ------------------------------------------------------------------------------------------------- paired


def test_paired_windows_labels_and_shapes(paired: Path, tmp_path: Path) -> None:
    ds = load_dataset(cfg(tmp_path, test_image_names=["5.png"]), paired)
    assert ds.kind == "paired"
    assert ds.classes == ["crow", "owl", "wren"]
    audio = [s for s in ds.samples() if s.audio is not None]
    per_file = {}
    for s in audio:
        per_file.setdefault(Path(s.audio.file).relative_to(paired.resolve()).as_posix(), []).append(s.audio.start_ns)
    assert len(per_file["audio/crow/r0.wav"]) == 3 and len(per_file["audio/crow/r1.wav"]) == 1
    assert per_file["audio/owl/r1.wav"] == [0, 1_000_000_000, 2_000_000_000, 3_000_000_000]
    # every audio window loads as exactly `window` samples at the configured rate, whatever the file's rate/channels
    for s in audio[:6] + [a for a in audio if a.audio.file.endswith("crow/r1.wav")]:
        a, v = ds.load(s)
        assert a.dtype == np.float32 and a.shape == (WIN,)
        assert v is None
        assert ds.classes[s.label] == s.class_name
    short = next(a for a in audio if a.audio.file.endswith("crow/r1.wav"))
    a, _ = ds.load(short)  # 1 s recording in a 2 s window: sound, then zeros
    assert np.abs(a[: RATE // 2]).max() > 0.1 and np.all(a[RATE + 50 :] == 0)
    img = next(s for s in ds.samples() if s.image is not None)
    _, v = ds.load(img)
    assert v.dtype == np.uint8 and v.shape == (3, 32, 32)
    assert {s.split for s in ds.samples() if s.image is not None and s.image.file.endswith("5.png")} == {"test"}
    summary = ds.summary()
    assert summary["n_classes"] == 3 and summary["sample_rates_hz"] == {"22050": 3, "44100": 3, "8000": 3}
    json.dumps(summary)  # serialisable for --json


def test_recordings_folder_is_accepted(tmp_path: Path) -> None:
    root = make_paired(tmp_path / "ds", {"a": [2.0, 2.0], "b": [2.0, 2.0]}, audio_dir="recordings")
    assert load_dataset(cfg(tmp_path), root).kind == "paired"


def test_pairs_by_class_reshuffled_every_epoch(paired: Path, tmp_path: Path) -> None:
    ds = load_dataset(cfg(tmp_path, test_fraction=0.34, val_fraction=0.0), paired)
    p0, p0b, p1 = ds.pairs("train", 0), ds.pairs("train", 0), ds.pairs("train", 1)
    assert p0 == p0b  # a pure function of (seed, epoch)
    assert p0 != p1
    train = ds.samples("train")
    for a, v in p0:
        assert a is not None and v is not None and a.label == v.label and a.split == v.split == "train"
    # every train window and every train photo appears at least once per epoch
    assert {a.id for a, _ in p0} == {s.id for s in train if s.audio is not None}
    assert {v.id for _, v in p0} == {s.id for s in train if s.image is not None}


def test_torch_dataset_items_and_set_epoch(paired: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from edgeav.train.data.torch_dataset import TorchAVDataset

    ds = load_dataset(cfg(tmp_path), paired)
    td = TorchAVDataset(ds, "train", epoch=0)
    item = td[0]
    assert item["audio"].shape == (WIN,) and item["audio"].dtype == torch.float32
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert item["mask"].tolist() == [1.0, 1.0] and isinstance(item["label"], int)
    before = list(td.items)
    td.set_epoch(1)
    assert td.items != before and len(td) == len(before)


# ------------------------------------------------------------------------------------------------- splits


def test_no_group_crosses_splits_and_split_is_deterministic(tmp_path: Path) -> None:
    classes = {f"c{i}": [2.0] * 5 for i in range(4)}
    root = make_paired(tmp_path / "ds", classes, n_images=3)
    a = load_dataset(cfg(tmp_path, test_fraction=0.2, val_fraction=0.25, seed=3), root)
    b = load_dataset(cfg(tmp_path, test_fraction=0.2, val_fraction=0.25, seed=3), root)
    c = load_dataset(cfg(tmp_path, test_fraction=0.2, val_fraction=0.25, seed=4), root)
    split_of = {}
    for s in a.samples():
        assert split_of.setdefault(s.group, s.split) == s.split, f"group {s.group} crosses splits"
    assert [(s.id, s.split) for s in a.samples()] == [(s.id, s.split) for s in b.samples()]
    assert [(s.id, s.split) for s in a.samples()] != [(s.id, s.split) for s in c.samples()]
    for split in ("train", "val", "test"):  # every class keeps train data and is held out somewhere
        assert {s.class_name for s in a.samples(split) if s.audio is not None} == set(classes)


def test_pick_groups_keeps_a_group_per_class_and_ignores_listing_order() -> None:
    groups = {f"g{i}": {"a" if i < 6 else "b"} for i in range(8)}
    chosen = pick_groups(groups, 0.5, seed=1)
    assert len(chosen) == 4 and any(g in chosen for g in ("g6", "g7"))
    assert pick_groups(dict(reversed(list(groups.items()))), 0.5, seed=1) == chosen
    assert pick_groups({"only": {"a"}}, 0.5, 0) == set()


# ------------------------------------------------------------------------------------------------- videos


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    root = tmp_path / "vids"
    for cls in ("hi", "yo"):
        for spk in ("s1", "s2", "s3"):
            write_video(root / cls / f"{spk}_{cls}.mp4", duration_s=1.0)
    return root


def test_video_folder_frames_audio_and_speaker_groups(videos: Path, tmp_path: Path) -> None:
    c = cfg(tmp_path, frames_per_clip=4, group_regex=r"^(s\d)_", test_fraction=0.34, val_fraction=0.5)
    ds = load_dataset(c, videos)
    assert ds.kind == "video" and ds.classes == ["hi", "yo"]
    splits = {}
    for s in ds.samples():
        assert splits.setdefault(s.group, s.split) == s.split  # a speaker is in one split only
    assert sorted(splits.values()) == ["test", "train", "val"]
    s = ds.samples("train")[0]
    assert s.video is not None and len(s.video.frame_times_ns) == 4
    audio, frames = ds.load(s)
    assert audio.shape == (WIN,) and np.all(audio[RATE + RATE // 10 :] == 0)  # 1 s of sound padded to 2 s
    assert frames.shape == (4, 3, 32, 32) and frames.dtype == np.uint8
    assert frames[0].mean() < frames[-1].mean()  # frames spread over the clip (gray level rises with time)


def test_flat_folder_label_from_file_name(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for name in ("1001_DFA_ANG_XX", "1001_DFA_HAP_XX", "1002_IEO_ANG_HI"):
        write_video(root / f"{name}.mp4", duration_s=0.5)
    with pytest.raises(DataError, match="label_regex"):
        load_dataset(cfg(tmp_path), root)
    ds = load_dataset(cfg(tmp_path, label_regex=r"^\d+_[A-Z]+_([A-Z]+)_", group_regex=r"^(\d+)_"), root)
    assert ds.classes == ["ANG", "HAP"]
    assert sorted(s.group for s in ds.samples()) == ["1001", "1001", "1002"]


def test_video_manifest_split_column_and_single_speaker_val_by_clip(tmp_path: Path, caplog) -> None:
    root = tmp_path / "grid"
    lines = ["clip,label,split,speaker,transcript"]
    for cls in ("bin", "lay"):
        for k in range(5):
            write_video(root / "clips" / cls / f"{cls}{k}.mp4", duration_s=0.5)
            lines.append(f"clips/{cls}/{cls}{k}.mp4,{cls},{'test' if k == 0 else 'train'},s1,{cls} blue")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        ds = load_dataset(cfg(tmp_path, val_fraction=0.25), root)
    assert ds.kind == "video"
    assert [s.id for s in ds.samples("test")] == ["clips/bin/bin0.mp4@0", "clips/lay/lay0.mp4@0"]
    assert {s.class_name for s in ds.samples("val")} == {"bin", "lay"}
    assert any("BY CLIP" in n for n in ds.summary()["notes"])
    assert "BY CLIP" in caplog.text


# ------------------------------------------------------------------------------------------------- manifest


def test_manifest_csv_and_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "m"
    rows = []
    for i in range(4):
        write_wav(root / f"a{i}.flac", 2.0, rate_hz=48_000)
        write_image(root / f"i{i}.jpg", (10 * i, 0, 0))
        rows.append(
            {
                "image": f"i{i}.jpg",
                "audio": f"a{i}.flac",
                "label": "x" if i % 2 else "y",
                "split": "test" if i < 2 else "train",
                "group": f"site{i // 2}",
            }
        )
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(cfg(tmp_path, val_fraction=0.0), root / "manifest.jsonl")
    assert ds.kind == "manifest" and ds.classes == ["x", "y"]
    s = ds.samples("test")[0]
    a, v = ds.load(s)
    assert a.shape == (WIN,) and v.shape == (3, 32, 32)
    csv = "image,audio,label,split,group\n" + "".join(
        f"{r['image']},{r['audio']},{r['label']},{r['split']},{r['group']}\n" for r in rows
    )
    (root / "manifest.jsonl").unlink()
    (root / "manifest.csv").write_text(csv)
    ds2 = load_dataset(cfg(tmp_path, val_fraction=0.0), root)
    assert [x.id for x in ds2.samples()] == [x.id for x in ds.samples()]


def test_unknown_column_is_counted_or_strict_error(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_wav(root / "a.wav", 2.0)
    write_wav(root / "b.wav", 2.0)
    (root / "manifest.csv").write_text("audio,label,colour\na.wav,x,red\nb.wav,y,blue\n")
    ds = load_dataset(cfg(tmp_path), root)
    assert any("unknown column 'colour'" in s["reason"] for s in ds.summary()["skipped"])
    assert len(ds.samples()) == 2
    with pytest.raises(DataError, match="colour"):
        load_dataset(cfg(tmp_path, strict=True), root)


# ------------------------------------------------------------------------------------------------- cache


def test_cache_second_run_decodes_nothing(paired: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"audio": 0, "image": 0}
    real_audio, real_image = media.decode_audio, media.read_image

    def count_audio(*a, **k):
        calls["audio"] += 1
        return real_audio(*a, **k)

    def count_image(*a, **k):
        calls["image"] += 1
        return real_image(*a, **k)

    monkeypatch.setattr(media, "decode_audio", count_audio)
    monkeypatch.setattr(media, "read_image", count_image)
    first = load_dataset(cfg(tmp_path), paired)
    samples = first.samples()
    out1 = [first.load(s) for s in samples]
    assert calls == {"audio": 9, "image": 15}  # each file decoded once, not once per window
    calls.update(audio=0, image=0)
    second = load_dataset(cfg(tmp_path), paired)  # a later run: new object, same cache folder
    out2 = [second.load(s) for s in second.samples()]
    assert calls == {"audio": 0, "image": 0}
    for (a1, v1), (a2, v2) in zip(out1, out2):
        assert (a1 is None or np.array_equal(a1, a2)) and (v1 is None or np.array_equal(v1, v2))
    cache = tmp_path / "cache"
    assert list(cache.rglob("*.npy")) and not list(cache.rglob("*.tmp"))
    # other preprocessing parameters are another key: decoding again
    third = load_dataset(cfg(tmp_path, sample_rate_hz=8_000), paired)
    third.load(next(s for s in third.samples() if s.audio is not None))
    assert calls["audio"] == 1


def test_cache_follows_file_content(tmp_path: Path) -> None:
    root = make_paired(tmp_path / "ds", {"a": [2.0], "b": [2.0]}, n_images=2)
    ds = load_dataset(cfg(tmp_path, test_fraction=0.0, val_fraction=0.0), root)
    s = next(x for x in ds.samples() if x.audio is not None and x.class_name == "a")
    loud = ds.load(s).audio
    write_wav(root / "audio" / "a" / "r0.wav", 2.0, rate_hz=22_050, freq_hz=300.0)  # same name, new content
    again = load_dataset(cfg(tmp_path, test_fraction=0.0, val_fraction=0.0), root).load(s).audio
    assert not np.array_equal(loud, again)


# ------------------------------------------------------------------------------------------------- bad input


def test_bad_files_are_skipped_and_reported(paired: Path, tmp_path: Path) -> None:
    (paired / "audio" / "crow" / "garbage.wav").write_bytes(b"RIFF not really a wav file" * 10)
    write_wav(paired / "audio" / "owl" / "empty.wav", 0.0)
    (paired / "images" / "wren" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    write_image(paired / "images" / "heron" / "1.png", (1, 2, 3))  # a class with images but no audio
    ds = load_dataset(cfg(tmp_path), paired)
    reasons = {Path(s["file"]).name: s["reason"] for s in ds.summary()["skipped"]}
    assert "cannot open" in reasons["garbage.wav"]
    assert "empty.wav" in reasons
    assert "no audio" in reasons["heron"] and "heron" not in ds.classes
    # the broken photo opens as a file but fails to decode: a missing modality at load time, counted, no crash
    broken = next(s for s in ds.samples() if s.image is not None and s.image.file.endswith("broken.png"))
    assert ds.load(broken).visual is None
    assert ds.prepare() == 1 and any("broken.png" in f for f in ds.summary()["load_failures"])
    with pytest.raises(DataError):
        load_dataset(cfg(tmp_path, strict=True), paired)


def test_truncated_recording(tmp_path: Path) -> None:
    root = make_paired(tmp_path / "ds", {"a": [2.0, 2.0], "b": [2.0, 2.0]}, n_images=2)
    full = root / "audio" / "a" / "long.flac"
    write_wav(full, 6.0, rate_hz=16_000)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 3])
    ds = load_dataset(cfg(tmp_path), root)
    windows = [s for s in ds.samples() if s.audio is not None and s.audio.file.endswith("long.flac")]
    assert windows  # header still says 6 s
    assert ds.load(windows[0]).audio is None
    assert "truncated" in ds.summary()["load_failures"][str(full.resolve())]
    with pytest.raises(MediaError, match="truncated"):
        load_dataset(cfg(tmp_path, strict=True), root).load(windows[0])


def test_video_without_audio_is_skipped(videos: Path, tmp_path: Path) -> None:
    write_video(videos / "hi" / "silent.mp4", with_audio=False)
    ds = load_dataset(cfg(tmp_path), videos)
    assert {Path(s["file"]).name: s["reason"] for s in ds.summary()["skipped"]} == {"silent.mp4": "no audio track"}
    with pytest.raises(MediaError, match="no audio track"):
        load_dataset(cfg(tmp_path, strict=True), videos)


# ------------------------------------------------------------------------------------------------- inspect


def test_inspect_cli_writes_sheet_and_json(paired: Path, tmp_path: Path, capsys) -> None:
    from edgeav.cli import main

    sheet = tmp_path / "sheet.png"
    rc = main(
        [
            "data",
            "inspect",
            str(paired),
            "--sheet",
            str(sheet),
            "--json",
            "--set",
            "data.window_s=2",
            "--set",
            f"data.cache_dir={tmp_path / 'c'}",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == ["crow", "owl", "wren"] and out["sheet"] == str(sheet)
    assert sheet.stat().st_size > 10_000 and sheet.read_bytes()[:4] == b"\x89PNG"
    rc = main(["data", "inspect", str(paired), "--sheet", str(sheet)])
    text = capsys.readouterr().out
    assert rc == 0 and "crow" in text and "train" in text and "Hz" in text


def test_inspect_strict_reports_one_line(paired: Path, tmp_path: Path, capsys) -> None:
    from edgeav.cli import main

    (paired / "audio" / "crow" / "garbage.wav").write_bytes(b"junk" * 40)
    rc = main(["data", "inspect", str(paired), "--strict", "--sheet", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and "garbage.wav" in err[-1] and "Traceback" not in "\n".join(err)


# ------------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", LAYOUTS.names())
def test_every_registered_layout_reads_its_tiny_set(name: str, tmp_path: Path) -> None:
    assert name in LAYOUT_SETS, f"layout {name!r} has no tiny set in tests/_data_fixtures.py LAYOUT_SETS"
    make, classes = LAYOUT_SETS[name]
    root = make(tmp_path / name)
    assert detect_kind(root, cfg(tmp_path)) == name  # "auto" finds it
    ds = load_dataset(cfg(tmp_path, kind=name, strict=True), root)  # strict: any skipped file raises
    assert ds.kind == name and ds.classes == classes
    assert ds.samples("train") and {s.class_name for s in ds.samples()} == set(classes)
    audio, visual = ds.load(ds.samples("train")[0])
    assert audio is None or audio.shape == (WIN,)
    assert visual is None or visual.shape[-3:] == (3, 32, 32)
    assert audio is not None or visual is not None


def test_config_kinds_are_the_registered_layouts() -> None:
    kinds = typing.get_args(DataConfig.model_fields["kind"].annotation)
    assert sorted(k for k in kinds if k != "auto") == LAYOUTS.names()


def test_unknown_layout_name_lists_the_valid_ones(tmp_path: Path) -> None:
    root = LAYOUT_SETS["images"][0](tmp_path / "ds")
    c = cfg(tmp_path).model_copy(update={"kind": "avis"})  # past the config's own check, as a caller could
    with pytest.raises(UnknownNameError) as e:
        load_dataset(c, root)
    assert str(e.value) == "unknown data set layout 'avis'; valid names: images, manifest, paired, video"
