"""The feature store: image features on disk, memory-mapped, keyed by what produced them.

Layout under the run folder::

    <out>/embed/features/<key>/
        meta.json                 # model name, weights digest, data config, flip (and crops), dim
        shard-00000.npy           # float32 (n_0, D), written whole then renamed
        shard-00000.hashes.npy    # the n_0 content hashes (SHA-256 hex) of its rows
        shard-00001.npy ...

``key`` is the first 16 hex of the SHA-256 of ``meta.json``'s content: model name, weights
digest, preprocessing (the timm data config), the flip setting and any crops. A row is identified by
the image's content hash (the audit's ``file_hash`` field: SHA-256 of the file bytes), so
a renamed or moved file keeps its features, and a changed file gets new ones.

Shards are append-only: a run writes the features it computed as new shards (one every
``shard_size`` images, so an interrupted pass keeps what it finished) and never rewrites
old ones. Reading opens every shard with ``np.load(mmap_mode="r")``: nothing is loaded
into memory until rows are gathered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vetset.core.atomic import atomic_write


def store_key(meta: dict[str, Any]) -> str:
    """First 16 hex of the SHA-256 of ``meta`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureStore:
    """Features of one backbone configuration, by content hash.

    Args:
        root: the folder holding every configuration (``<out>/embed/features``).
        meta: what produced the features (see the module docstring); must be JSON-able.
    """

    def __init__(self, root: str | Path, meta: dict[str, Any]):
        self.meta = meta
        self.key = store_key(meta)
        self.dir = Path(root) / self.key
        self._index: dict[str, tuple[int, int]] | None = None
        self._shards: list[np.ndarray] = []

    # -- reading ---------------------------------------------------------------------
    def _shard_paths(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("shard-*.npy") if not p.name.endswith(".hashes.npy"))

    def _load_index(self) -> dict[str, tuple[int, int]]:
        if self._index is None:
            self._index, self._shards = {}, []
            for path in self._shard_paths():
                hashes_path = path.with_name(path.stem + ".hashes.npy")
                if not hashes_path.is_file():
                    continue  # a shard whose hashes never landed: ignored, recomputed
                hashes = np.load(hashes_path, allow_pickle=False)
                feats = np.load(path, mmap_mode="r", allow_pickle=False)
                if feats.ndim != 2 or len(feats) != len(hashes):
                    continue
                s = len(self._shards)
                self._shards.append(feats)
                for r, h in enumerate(hashes.tolist()):
                    self._index.setdefault(h, (s, r))
        return self._index

    def __len__(self) -> int:
        return len(self._load_index())

    def has(self, hashes: Sequence[str]) -> np.ndarray:
        """``bool`` ``(n,)``: which content hashes have stored features."""
        index = self._load_index()
        return np.fromiter((h in index for h in hashes), dtype=bool, count=len(hashes))

    def get(self, hashes: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """``float32`` ``(n, D)`` rows for ``hashes``, in order (gathered from the memory maps).

        Args:
            out: an array (or ``np.memmap``) of shape ``(n, D)`` to fill instead of a new one.

        Raises:
            KeyError: a hash has no stored features.
        """
        index = self._load_index()
        dim = int(self.meta["dim"])
        out = np.empty((len(hashes), dim), dtype=np.float32) if out is None else out
        rows: dict[int, tuple[list[int], list[int]]] = {}
        for i, h in enumerate(hashes):
            s, r = index[h]
            rows.setdefault(s, ([], []))
            rows[s][0].append(i)
            rows[s][1].append(r)
        for s, (dst, src) in rows.items():
            out[np.asarray(dst)] = self._shards[s][np.asarray(src)]
        return out

    # -- writing ---------------------------------------------------------------------
    def append(self, hashes: Sequence[str], features: np.ndarray) -> Path:
        """Write one new shard (features first, then its hashes; each atomically renamed).

        Args:
            hashes: ``n`` content hashes.
            features: ``float32`` ``(n, D)`` with ``D == meta["dim"]``.

        Returns:
            The shard's path.
        """
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape != (len(hashes), int(self.meta["dim"])):
            raise ValueError(f"features of shape {features.shape} for {len(hashes)} hashes of dim {self.meta['dim']}")
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            atomic_write(meta_path, json.dumps(self.meta, indent=1, sort_keys=True, default=str))
        existing = self._shard_paths()
        n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.dir / f"shard-{n:05d}.npy"
        for dest, arr in ((path, features), (path.with_name(path.stem + ".hashes.npy"), np.asarray(list(hashes), dtype="U64"))):
            atomic_write(dest, lambda f, arr=arr: np.save(f, arr, allow_pickle=False))
        self._index = None  # re-read on next access
        return path
