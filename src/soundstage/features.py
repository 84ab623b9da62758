"""Stage ``features``: per-clip feature matrices and a summary table, from one STFT per clip.

A shard job reads its processed clips and writes, per clip, the matrices named in ``save``
(``<out_dir>/<name>/<id>.npy``, float32, shape ``(n_bins, n_frames)``: ``logmel`` is
``(n_mels, t)`` in dB, ``mfcc`` is ``(n_mfcc * (1 + 2 * deltas), t)`` with Δ and ΔΔ stacked below
the coefficients), and a shard table holding the clip's summary statistics and the per-clip
moments of its log-mel frames (``count``, ``logmel_mean``, ``logmel_m2``) from which the ``stats``
stage merges train-split statistics without reading any matrix again.

``build_table`` then gathers the shard tables with the split assignment into one Parquet table
(``id, clip_id, label, group, split`` + summary columns) ready for scikit-learn.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from soundstage import cache
from soundstage.features_core import FeatureConfig, extract, summarize
from soundstage.ingest import REJECTED_COLUMNS, rejection
from soundstage.io import save_npy
from soundstage.moments import Moments

_CODE = cache.code_version("soundstage.features", "soundstage.features_core", "soundstage.moments")
META_COLUMNS = ["id", "clip_id", "label", "group"]
INTERNAL_COLUMNS = ["key", "count", "logmel_mean", "logmel_m2"]


def clip_features(y: np.ndarray, *, sr: int, config: FeatureConfig) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Frame-level features and summary statistics of one processed clip (what ``predict`` uses too)."""
    feats = extract(y, sr=sr, config=config)
    if "mfcc" in feats and config.mfcc_deltas:
        feats["mfcc"] = np.concatenate([feats.pop("mfcc"), feats.pop("mfcc_delta"), feats.pop("mfcc_delta2")], axis=0)
    return feats, summarize(feats, stats=tuple(config.summary))


def features_shard(*, index: pd.DataFrame, out_dir: str | Path, config: FeatureConfig,
                   save: tuple[str, ...] = ("logmel", "mfcc"), previous: pd.DataFrame | None = None,
                   relative_to: str | Path | None = None, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute features of every clip in one process-shard index.

    Returns
    -------
    table : DataFrame
        ``META_COLUMNS + INTERNAL_COLUMNS`` + one column per summary statistic.
    rejected : DataFrame
        Clips whose processed audio could not be read (``REJECTED_COLUMNS``).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    base = Path(relative_to) if relative_to is not None else None
    conf = config.to_dict()
    reuse = {}
    if previous is not None and len(previous):
        reuse = {str(r["id"]): r for r in previous.to_dict("records")}

    rows: list[dict] = []
    rejected: list[dict] = []
    for row in tqdm(index.to_dict("records"), desc="features", unit="clip", disable=not progress):
        clip_id = str(row["id"])
        key = cache.key_of(_CODE, row["key"], row["id"], conf, sorted(save))
        old = reuse.get(clip_id)
        if old is not None and old["key"] == key and all((out_dir / name / f"{clip_id}.npy").is_file() for name in save):
            rows.append({**old, "label": row["label"], "group": row["group"]})
            continue
        path = Path(row["path"]) if base is None or Path(row["path"]).is_absolute() else base / row["path"]
        try:
            y, sr = sf.read(path, dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            rejected.append(rejection(path, clip_id, "features", "unreadable", f"{path}: {exc}"))
            continue
        if y.ndim > 1:
            y = y.mean(axis=1)
        feats, summary = clip_features(y, sr=sr, config=config)
        for name in save:
            save_npy(out_dir / name / f"{clip_id}.npy", np.ascontiguousarray(feats[name], dtype=np.float32))
        m = Moments.from_frames(feats["logmel"])
        rows.append({"id": clip_id, "clip_id": row["clip_id"], "label": row["label"], "group": row["group"],
                     "key": key, "count": m.count, "logmel_mean": m.mean.tolist(), "logmel_m2": m.m2.tolist(),
                     **summary})

    # Clips that left this shard leave no stale matrices behind.
    current = {str(r["id"]) for r in rows}
    for clip_id in set(reuse) - current:
        for name in ("logmel", "mfcc"):
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name / f"{clip_id}.npy").unlink()
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=META_COLUMNS + INTERNAL_COLUMNS)
    return table, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def build_table(*, shard_tables: list[pd.DataFrame], splits: pd.DataFrame) -> pd.DataFrame:
    """Join shard tables with the split assignment (``id, split``) into the modelling table.

    Clips without a split (rejected after splitting) are dropped; columns: ``id, clip_id, label,
    group, split`` then the summary features in a stable order.
    """
    frames = [t for t in shard_tables if len(t)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=META_COLUMNS)
    table = table.drop(columns=[c for c in INTERNAL_COLUMNS if c in table.columns])
    table = table.merge(splits[["id", "split"]], on="id", how="inner", validate="one_to_one")
    feature_cols = [c for c in table.columns if c not in META_COLUMNS + ["split"]]
    table = table[META_COLUMNS + ["split"] + feature_cols].sort_values("id", kind="stable").reset_index(drop=True)
    for col in feature_cols:
        table[col] = table[col].astype(np.float32)
    return table


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The summary feature columns of a modelling table."""
    return [c for c in table.columns if c not in META_COLUMNS + ["split"] + INTERNAL_COLUMNS]
