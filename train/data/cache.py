"""On-disk cache of decoded inputs, so that later epochs and later runs decode no media.

Key = sha256 of (namespace, sha256 of the file's bytes, preprocessing parameters, cache format version). The file
hash itself is remembered under a fast key (absolute path, size, mtime_ns), so an unchanged file is hashed once.
Values are `.npy` files under `<root>/<namespace>/<kk>/<key>.npy`, written atomically (temporary file in the same
folder, then `os.replace`), so concurrent data-loader workers and interrupted runs never leave a half file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeav.atomic import atomic_write

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "edgeav"


class DecodeCache:
    """`get(namespace, file, params, compute)` returns the cached array or computes, stores and returns it.

    With `enabled=False` it only computes (nothing is read or written). Arrays come back memory-mapped read-only
    (`mmap=True`), so slicing a 5 s window out of an hour-long recording reads only that window.
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.enabled = enabled
        self._hashes: dict[tuple[str, int, int], str] = {}
        self.hits = 0
        self.misses = 0

    def file_hash(self, path: str | Path) -> str:
        """sha256 of the file's bytes, remembered (in memory and on disk) under (path, size, mtime_ns)."""
        p = Path(path).resolve()
        st = p.stat()
        fast = (str(p), st.st_size, st.st_mtime_ns)
        got = self._hashes.get(fast)
        if got is not None:
            return got
        index = None
        if self.enabled:
            fast_key = hashlib.sha256(json.dumps(fast).encode()).hexdigest()
            index = self.root / "hashes" / fast_key[:2] / fast_key
            if index.is_file():
                text = index.read_text(encoding="ascii").strip()
                if len(text) == 64:
                    self._hashes[fast] = text
                    return text
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
                h.update(chunk)
        digest = h.hexdigest()
        self._hashes[fast] = digest
        if index is not None:
            atomic_write(index, lambda f: f.write(digest.encode("ascii")), durable=False)
        return digest

    def key(self, namespace: str, path: str | Path, params: dict[str, Any]) -> str:
        blob = json.dumps(
            {"ns": namespace, "sha256": self.file_hash(path), "params": params, "v": CACHE_FORMAT_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def path_for(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.npy"

    def get(
        self,
        namespace: str,
        path: str | Path,
        params: dict[str, Any],
        compute: Callable[[], np.ndarray],
        mmap: bool = True,
    ) -> np.ndarray:
        if not self.enabled:
            self.misses += 1
            return compute()
        dest = self.path_for(namespace, self.key(namespace, path, params))
        if dest.is_file():
            try:
                arr = np.load(dest, mmap_mode="r" if mmap else None, allow_pickle=False)
                self.hits += 1
                return arr
            except (ValueError, OSError) as e:  # a damaged entry (disk full, manual edit): recompute, say so
                log.warning("cache entry %s is unreadable (%s); decoding %s again", dest, e, path)
        self.misses += 1
        arr = np.ascontiguousarray(compute())
        atomic_write(dest, lambda f: np.save(f, arr, allow_pickle=False), durable=False)
        return arr
