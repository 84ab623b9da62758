"""Stage ``stats``: per-bin log-mel mean and std over the train split, streaming and exact.

The ``features`` shards already hold each clip's log-mel moments (frame count, mean, M2); this
stage merges those of the train clips with the parallel-variance formula (Chan et al.), in float64,
without opening a single matrix, so memory is flat in dataset size and adding clips costs only
their own moments. ``export_normalized`` optionally writes normalized log-mel copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from soundstage.io import save_npy
from soundstage.moments import Moments


def train_moments(*, shard_tables: list[pd.DataFrame], train_ids: set[str]) -> Moments:
    """Merge the per-clip log-mel moments of the clips in ``train_ids``."""
    parts = []
    for table in shard_tables:
        if table.empty:
            continue
        sel = table[table["id"].astype(str).isin(train_ids)]
        for count, mean, m2 in zip(sel["count"], sel["logmel_mean"], sel["logmel_m2"], strict=True):
            parts.append(Moments(count=int(count), mean=np.asarray(mean, dtype=np.float64),
                                 m2=np.asarray(m2, dtype=np.float64)))
    if not parts:
        raise ValueError("stats: no train clip has features; is the train split empty?")
    return Moments.merge_all(parts)


def normalize(logmel: np.ndarray, *, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Apply per-bin statistics to a ``(n_mels, t)`` log-mel; returns float32."""
    return ((logmel - mean[:, None]) / np.maximum(std[:, None], 1e-8)).astype(np.float32)


def export_normalized(*, ids: list[str], logmel_dir: str | Path, out_dir: str | Path, mean: np.ndarray,
                      std: np.ndarray) -> int:
    """Write normalized copies ``out_dir/<id>.npy`` of every clip's log-mel; returns how many."""
    n = 0
    for clip_id in ids:
        src = Path(logmel_dir) / f"{clip_id}.npy"
        save_npy(Path(out_dir) / f"{clip_id}.npy", normalize(np.load(src), mean=mean, std=std))
        n += 1
    return n
