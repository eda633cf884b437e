"""Data layer: data set layouts, splits by group, windows, the decode cache, and `edgeav data inspect`.

Training uses:

    from edgeav.train.data import load_dataset
    ds = load_dataset(cfg.data, path)           # headers only; bad files skipped and reported (strict: raise)
    ds.classes                                  # list[str], label i = ds.classes[i]
    ds.samples("train")                         # list[Sample]
    ds.pairs("train", epoch)                    # list[(audio Sample | None, visual Sample | None)]
    audio, visual = ds.load(sample)             # (T,) float32 / (3,H,W) or (N,3,H,W) uint8, via the cache
    ds.prepare()                                # decode everything into the cache once
    ds.summary()                                # dict for reports and `edgeav data inspect`

and, with torch, `edgeav.train.data.torch_dataset.TorchAVDataset(ds, "train")`.
"""

from edgeav.train.data.cache import DecodeCache
from edgeav.train.data.dataset import LAYOUTS, AVDataset, SampleMedia, detect_kind, load_dataset
from edgeav.train.data.records import SPLITS, AudioRef, ImageRef, Sample, Skipped, VideoRef

__all__ = [
    "AVDataset",
    "AudioRef",
    "DecodeCache",
    "ImageRef",
    "LAYOUTS",
    "SampleMedia",
    "SPLITS",
    "Sample",
    "Skipped",
    "VideoRef",
    "detect_kind",
    "load_dataset",
]
