"""Stage ``stats``: per-bin log-mel mean and std over one fold's train clips, streaming and exact.

The ``features`` shards already hold each clip's log-mel moments (frame count, mean, M2); this
stage merges those of a fold's train clips (one job per fold: K folds cost K merges of
moments, never a re-read of the matrices) with the parallel-variance formula (Chan et al.), in float64,
without opening a single matrix. Shard tables may be passed one at a time (any iterable), so
memory holds one shard's moments at most: it is flat in dataset size, and adding clips costs only
their own moments. Consumers apply the statistics themselves (:func:`soundstage.models.standardize_logmel`);
``export_normalized`` optionally writes normalized log-mel copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage.moments import Moments

#: The shard-table columns :func:`train_moments` reads.
MOMENT_COLUMNS = ["id", "count", "logmel_mean", "logmel_m2"]


def read_moments(path: str | Path) -> pd.DataFrame:
    """The :data:`MOMENT_COLUMNS` of one feature shard table (Parquet), for :func:`train_moments`;
    the two list columns as rows of one ``(clips, n_mels)`` matrix when they are not ragged."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read(columns=MOMENT_COLUMNS, use_threads=False)
    lists = {name: _rows_of(table.column(name)) for name in ("logmel_mean", "logmel_m2")}
    if any(rows is None for rows in lists.values()):
        return table.to_pandas()
    return pd.DataFrame({"id": table.column("id").to_pylist(), "count": table.column("count").to_numpy(), **lists})


def _rows_of(column) -> list[np.ndarray] | None:
    """The rows of a list<double> column as views of one matrix; ``None`` if ragged or with nulls."""
    arr = column.combine_chunks()
    n = len(arr)
    if n == 0:
        return []
    offsets = arr.offsets.to_numpy()
    width = (offsets[-1] - offsets[0]) // n
    if arr.null_count or not np.array_equal(np.diff(offsets), np.full(n, width)):
        return None
    return list(arr.flatten().to_numpy().reshape(n, width))


def train_ids(folds: pd.DataFrame, *, fold: str) -> set[str]:
    """Ids of the train rows of ``fold`` in the split's ``folds`` table (``id, fold, split``, as
    :func:`soundstage.split.read_folds` reads it); ``ValueError`` naming the fold when it has none."""
    rows = folds[(folds["fold"].astype(str) == str(fold)) & (folds["split"] == "train")]
    if rows.empty:
        known = ", ".join(dict.fromkeys(folds["fold"].astype(str)))
        raise ValueError(f"stats: fold {fold!r} has no train clip in the split (its folds: {known or 'none'})")
    return set(rows["id"].astype(str))


def shard_moments(table: pd.DataFrame, *, ids: set[str]) -> Moments | None:
    """Merged log-mel moments of the rows of one shard table whose ``id`` is in ``ids``.

    Returns ``None`` when no row is selected.
    """
    if table.empty:
        return None
    keep = table["id"].astype(str).isin(ids).to_numpy()
    if not keep.any():
        return None
    counts = table["count"].to_numpy(dtype=np.int64)[keep]
    means = np.stack([np.asarray(v, dtype=np.float64) for v in table["logmel_mean"].to_numpy()[keep]])
    m2s = np.stack([np.asarray(v, dtype=np.float64) for v in table["logmel_m2"].to_numpy()[keep]])
    return Moments.from_parts(counts, means, m2s)


def train_moments(*, shard_tables: Iterable[pd.DataFrame], train_ids: set[str]) -> Moments:
    """Merge the per-clip log-mel moments of the clips in ``train_ids``.

    Parameters
    ----------
    shard_tables : iterable of DataFrame
        Feature shard tables (at least :data:`MOMENT_COLUMNS`); a generator that reads one
        shard at a time keeps memory flat.
    train_ids : set of str
        Clip ids of the train split; other rows are ignored.

    Returns
    -------
    Moments
        ``count`` frames, per-bin ``mean`` and ``std`` (population) in float64 over every train
        frame: the same numbers as ``np.mean`` / ``np.std`` over the concatenated train log-mels.

    Raises
    ------
    ValueError
        When no train clip has features.
    """
    ids = {str(i) for i in train_ids}
    total: Moments | None = None
    for table in shard_tables:
        part = shard_moments(table, ids=ids)
        if part is not None:
            total = part if total is None else total.merge(part)
    if total is None:
        raise ValueError("stats: no train clip has features; is the train split empty?")
    return total


def export_normalized(*, shard_tables: Iterable[str | Path], logmel_dir: str | Path, out_dir: str | Path,
                      mean: np.ndarray, std: np.ndarray) -> int:
    """Write a normalized copy of every log-mel store that the feature ``shard_tables`` (Parquet paths)
    name: ``out_dir/<store>.npy``, :func:`soundstage.models.standardize_logmel` applied to each frame,
    in the same layout (:mod:`soundstage.store`), so the tables' ``store, offset, frames`` locate a
    clip's normalized log-mel there too.

    A block of frames in memory at a time; returns how many clips the stores hold.
    """
    from soundstage.models import standardize_logmel
    from soundstage.store import StoreWriter, open_store

    names: dict[str, int] = {}
    for f in shard_tables:
        where = pd.read_parquet(f, columns=["store"])["store"].astype(str)
        for name, n in where.value_counts().items():
            names[name] = names.get(name, 0) + int(n)
    block = 1 << 14  # frames per read
    for name in sorted(names):
        data = open_store(Path(logmel_dir) / f"{name}.npy")
        with StoreWriter(Path(out_dir) / f"{name}.npy", data.shape[1]) as writer:
            for start in range(0, data.shape[0], block):
                frames = np.asarray(data[start:start + block]).T  # (n_mels, frames)
                writer.append(standardize_logmel(frames, mean=mean, std=std))
    return sum(names.values())
