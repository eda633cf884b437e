"""The common records every data set layout produces, and training reads.

A `Sample` is one example of one split: a label, the group it belongs to (recording, speaker: splits never cut
a group), and references to its media, not the media itself. `AVDataset.load(sample)` turns the references into
arrays through the decode cache.

- `AudioRef(file, start_ns, duration_ns)`: a window of a recording or of a video's sound track. A window that
  runs past the end of the file is padded with zeros to `duration_ns` (a 3 s GRID clip in a 5 s window is 3 s of
  sound and 2 s of zeros).
- `ImageRef(file)`: a photo.
- `VideoRef(file, frame_times_ns)`: frames of a video at these times, relative to the start of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class AudioRef:
    file: str  # absolute path
    start_ns: int  # window start, from the start of the file
    duration_ns: int  # window length (cfg.window_s)


@dataclass(frozen=True)
class ImageRef:
    file: str  # absolute path


@dataclass(frozen=True)
class VideoRef:
    file: str  # absolute path
    frame_times_ns: tuple[int, ...]  # frames sampled evenly over the window, from the start of the clip


@dataclass(frozen=True)
class Sample:
    """One example. Species-paired data has audio-only and image-only samples (combined by `AVDataset.pairs`);
    videos and manifests give samples that carry both modalities."""

    id: str  # stable: "<path relative to the data root>@<start_ns>"
    label: int  # index into AVDataset.classes
    class_name: str
    group: str  # recording / speaker / file; never split across train, val and test
    split: str  # "train" | "val" | "test"
    audio: AudioRef | None = None
    image: ImageRef | None = None
    video: VideoRef | None = None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def has_visual(self) -> bool:
        return self.image is not None or self.video is not None


@dataclass(frozen=True)
class Skipped:
    """A file or row left out of the data set, and why (reported by `summary()`; an error under `strict`)."""

    file: str
    reason: str
