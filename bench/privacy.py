"""The privacy filter on real recordings: how much speech it catches, how many bird windows it wrongly drops.

    .venv/bin/python bench/privacy.py [--data ../shared/data] [--window-s 1.0] [--hop-s 0.5] [--out bench/results/privacy.json]

Speech: the 160 GRID clips (one speaker, 3 s each). A window of `--window-s` every `--hop-s` is a speech window when
the clip's .align file puts at least half a window of spoken words (not `sil` / `sp`) in it; each clip whole (3 s) is
reported too. Birds: the 45 field recordings of birds/, cut into back-to-back windows of `--window-s`. Each
recording is fed once through the daemon's filter (edgeav.runtime.privacy.PrivacyFilter, the `daemon.privacy`
defaults unless set), audio decoded to 16 kHz mono; a window is flagged as the daemon flags a detection's span.
Targets: >= 95 % of speech windows caught, <= 5 % of bird windows dropped. Writes JSON and one line.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_common import DATA, machine, write_result  # noqa: E402

RATE = 16_000
NS = 1_000_000_000


def words(align: Path) -> list[tuple[float, float]]:
    """(start_s, end_s) of each spoken word (not sil / sp) of a GRID .align file (times in 1/25000 s)."""
    spans = []
    for line in align.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] not in ("sil", "sp"):
            spans.append((int(parts[0]) / 25000, int(parts[1]) / 25000))
    return spans


def spoken_s(spans: list[tuple[float, float]], a_s: float, b_s: float) -> float:
    """Seconds of the words in [a_s, b_s)."""
    return sum(max(0.0, min(e, b_s) - max(s, a_s)) for s, e in spans)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--window-s", type=float, default=1.0)
    p.add_argument("--hop-s", type=float, default=0.5)
    p.add_argument("--threshold", type=float, default=None, help="daemon.privacy.threshold (default: the schema's)")
    p.add_argument("--out", default=None, help="JSON result (default bench/results/privacy.json)")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "grid" / "manifest.csv").is_file() or not (data / "birds" / "recordings.csv").is_file():
        print(f"privacy: no GRID / birds data under {data} (set --data or EDGEAV_DATA)", file=sys.stderr)
        return 2
    from edgeav.runtime.privacy import FRAME_SAMPLES, PrivacyFilter
    from edgeav.schema.integrations import PrivacyConfig
    from edgeav.train.data.media import decode_audio

    cfg = PrivacyConfig(mode="drop_audio", **({"threshold": args.threshold} if args.threshold is not None else {}))
    filt = PrivacyFilter(cfg, keep_s=3600.0)
    win_ns, hop_ns = int(args.window_s * NS), int(args.hop_s * NS)
    frames = 0
    vad_s = 0.0

    def feed(audio) -> None:
        nonlocal frames, vad_s
        filt.vad.reset()
        filt.vad.frames.clear()
        t0 = time.perf_counter()
        frames += filt.vad.feed(audio, RATE, 0)
        vad_s += time.perf_counter() - t0

    speech_windows = speech_caught = clips = clips_caught = 0
    missed: list[str] = []
    for row in csv.DictReader(open(data / "grid" / "manifest.csv")):
        clip = data / "grid" / row["clip"]
        audio = decode_audio(clip, RATE)
        feed(audio)
        dur_ns = audio.size * NS // RATE
        clips += 1
        clips_caught += filt.is_speech(0, dur_ns)
        spans = words(clip.with_suffix(".align"))  # read once per clip
        for a in range(0, max(1, dur_ns - win_ns + 1), hop_ns):
            if spoken_s(spans, a / NS, (a + win_ns) / NS) < args.window_s / 2:
                continue
            speech_windows += 1
            hit = filt.is_speech(a, a + win_ns)
            speech_caught += hit
            if not hit:
                missed.append(f"{row['clip']}@{a / NS:g}s")
    bird_windows = bird_dropped = 0
    per_recording: dict[str, list[int]] = {}
    for row in csv.DictReader(open(data / "birds" / "recordings.csv")):
        audio = decode_audio(data / "birds" / row["file"], RATE)
        feed(audio)
        dur_ns = audio.size * NS // RATE
        n = d = 0
        for a in range(0, dur_ns - win_ns + 1, win_ns):
            n += 1
            d += filt.is_speech(a, a + win_ns)
        bird_windows += n
        bird_dropped += d
        per_recording[row["file"]] = [d, n]
    caught = speech_caught / max(1, speech_windows)
    dropped = bird_dropped / max(1, bird_windows)
    result = {
        "config": cfg.model_dump(),
        "window_s": args.window_s,
        "hop_s": args.hop_s,
        "speech_windows": speech_windows,
        "speech_caught": speech_caught,
        "speech_caught_rate": round(caught, 4),
        "speech_missed": missed,
        "grid_clips": clips,
        "grid_clips_caught": clips_caught,
        "bird_windows": bird_windows,
        "bird_dropped": bird_dropped,
        "bird_dropped_rate": round(dropped, 4),
        "bird_dropped_per_recording": {k: v for k, v in per_recording.items() if v[0]},
        "vad_frames": frames,
        "vad_ms_per_frame": round(vad_s / max(1, frames) * 1e3, 4),
        "vad_frame_ms_of_audio": FRAME_SAMPLES / RATE * 1e3,
        "pass_speech": caught >= 0.95,
        "pass_birds": dropped <= 0.05,
        "machine": machine(),
    }
    result["pass"] = result["pass_speech"] and result["pass_birds"]
    write_result(
        "privacy",
        result,
        f"privacy (Silero VAD, p >= {cfg.threshold}, >= {cfg.min_speech_s} s of speech): GRID speech windows caught "
        f"{speech_caught}/{speech_windows} = {caught:.1%} (whole clips {clips_caught}/{clips}); bird windows dropped "
        f"{bird_dropped}/{bird_windows} = {dropped:.1%}; {result['vad_ms_per_frame']} ms per 32 ms frame: "
        f"{'PASS' if result['pass'] else 'FAIL'}",
        args.out,
    )
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
