"""Stage ``features``: per-clip feature matrices and a summary table, from one STFT per clip.

A shard job reads its processed clips from the process stage's audio stores
(:func:`soundstage.process.read_segment`) and writes the matrices named in ``save`` of all its clips
into one store per matrix kind, ``<out_dir>/<name>/<shard>.npy`` (:mod:`soundstage.store`: each
clip's float32 ``(n_bins, n_frames)`` matrix, ``n_frames = 1 + n_samples // hop_length`` when
``center``, at the ``offset`` its table row names):

============ ===================================== =============================================
name         shape                                 content
============ ===================================== =============================================
``logmel``   ``(n_mels, t)``                       log-power mel spectrogram, dB (always computed)
``mfcc``     ``(n_mfcc * (1 + 2 * deltas), t)``    MFCCs; with ``mfcc_deltas`` Δ then ΔΔ stacked
                                                   below them (rows ``0..n-1``, ``n..2n-1``,
                                                   ``2n..3n-1``): ``(60, t)`` by default
``chroma``   ``(n_chroma, t)``                     chroma from the power spectrogram
``contrast`` ``(n_bands + 1, t)``                  spectral contrast, dB
``centroid`` ``(1, t)`` (also ``bandwidth``,       Hz (centroid, bandwidth, rolloff); flatness,
``rolloff``, ``flatness``, ``rms``, ``zcr``)       RMS and ZCR unitless
============ ===================================== =============================================

(:data:`SAVEABLE`; a name must be enabled in the :class:`FeatureConfig` to be saved.) The shard
table holds one row per clip: ``META_COLUMNS`` (``id, clip_id, label, group``), where its matrices
are (``store, offset, frames``), the clip's cache ``key``, the moments of its log-mel frames
(``count`` frames, per-bin ``logmel_mean`` and ``logmel_m2`` as lists of ``n_mels`` float64, see
:class:`soundstage.moments.Moments`) from which the ``stats`` stage merges train-split statistics
without opening any matrix, and the summary columns ``<feature>_<stat>_<k>``
(:func:`soundstage.features_core.summary_statistics`).

``build_table`` then gathers the shard tables into one Parquet table (``id, clip_id, label, group``,
``store, offset, frames`` + summary columns, float32) ready for scikit-learn; it does not depend on
the split, so the features are computed once however many folds train on them.

Re-running a shard reuses every clip whose key is unchanged (its processed audio's key, the
feature params, ``save`` and this code) and whose store is still the version its cache stamped;
only new or changed clips are read and computed (into part stores, closed at each checkpoint), and
the shard's store is then rewritten from the old store and the parts, without the clips that left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage import cache, stages
from soundstage.features_core import FEATURE_NAMES, FeatureConfig, extract, summary_statistics
from soundstage.io import atomic_path
from soundstage.moments import Moments
from soundstage.process import read_segment
from soundstage.rejections import REJECTED_COLUMNS, rejection, shard_of
from soundstage.store import STORE_COLUMNS, ShardParts, Stores, load_matrices

META_COLUMNS = ["id", "clip_id", "label", "group"]
INTERNAL_COLUMNS = ["key", "stamp", "count", "logmel_mean", "logmel_m2"]
#: The schema metadata key of a stored shard table naming its ``summary`` vector's entries.
SUMMARY_NAMES = "soundstage.summary_columns"
#: Seconds between two :func:`features_shard` checkpoints of a long shard.
CHECKPOINT_SECONDS = 60.0

#: Frame-level features that ``save`` may name (``mfcc`` includes its deltas when enabled).
SAVEABLE: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in ("mfcc_delta", "mfcc_delta2", "tempo"))


def clip_features(y: np.ndarray, *, sr: int, config: FeatureConfig) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Frame-level features and summary statistics of one processed clip (what ``predict`` uses too).

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]
        Mono audio.
    sr : int
        Hz.
    config : FeatureConfig

    Returns
    -------
    feats : dict of str to np.ndarray [shape=(n_bins, n_frames), dtype=float32]
        As :func:`soundstage.features_core.extract`, except that with ``mfcc_deltas`` the
        ``mfcc`` entry is ``(3 * n_mfcc, t)``: coefficients, Δ, ΔΔ stacked (no separate
        ``mfcc_delta*`` entries).
    summary : dict of str to float
        Summary columns; the stacked ``mfcc`` rows give ``mfcc_<stat>_00 .. _59`` by default.
    """
    feats = extract(y, sr=sr, config=config)
    if "mfcc_delta" in feats:
        stacked = np.concatenate([feats["mfcc"], feats.pop("mfcc_delta"), feats.pop("mfcc_delta2")], axis=0)
        feats = {key: stacked if key == "mfcc" else value for key, value in feats.items()}  # keep the order
    return feats, summary_statistics(feats, stats=tuple(config.summary))


def enabled_features(config: FeatureConfig) -> tuple[str, ...]:
    """The frame-level features ``config`` computes (what ``save`` may name), in output order."""
    on = {"logmel": True, "mfcc": config.mfcc and config.n_mfcc > 0, "chroma": config.chroma,
          "rms": config.rms, "zcr": config.zcr, **dict.fromkeys(config.spectral, True)}
    return tuple(name for name in SAVEABLE if on.get(name, False))


def features_shard(*, index: pd.DataFrame, audio_dir: str | Path, out_dir: str | Path, config: FeatureConfig,
                   save: Iterable[str] = ("logmel", "mfcc"), previous: pd.DataFrame | None = None,
                   shard: int | None = None, n_shards: int | None = None,
                   progress: bool = False,
                   checkpoint: Callable[[pd.DataFrame], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute features of every clip in one process-shard index.

    Parameters
    ----------
    index : DataFrame
        Process-shard rows (``id, clip_id, path, label, group, key, sample_rate`` and where the
        segment's samples are: ``store, offset, frames``).
    audio_dir : path
        The process stage's audio stores (``data/process/audio``).
    out_dir : path
        The stage folder: matrices go to the stores ``out_dir/<name>/<shard>.npy`` (``all.npy``
        without ``shard``).
    config : FeatureConfig
    save : iterable of str
        Matrices to write, from :data:`SAVEABLE` and enabled in ``config``.
    previous : DataFrame, optional
        This shard's cache (an earlier table with its ``stamp`` column): clips whose key is unchanged
        and whose matrices are still the versions stamped there are reused as they are.
    shard, n_shards : int, optional
        This job's shard and the shard count; ``shard`` names the stores (``<shard>.npy``, ``all.npy``
        without it), and two jobs must never write the same store of one ``out_dir`` at once (each
        replaces the store and clears the store's parts). A previous clip that is no longer in ``index``
        loses its matrices, unless (both given) its clip now hashes to another shard
        (``n_shards`` changed): that shard's job owns, and may already have rewritten, them. With
        ``n_shards``, the files of shards ``n_shards`` and above (stores, tables, caches of a run with more
        shards) are deleted.
    progress : bool
        Show a tqdm progress bar.
    checkpoint : callable, optional
        Called every :data:`CHECKPOINT_SECONDS` with a valid cache of the work so far (the rows
        done, and the previous rows of the clips still to do).

    Returns
    -------
    table : DataFrame
        ``META_COLUMNS + INTERNAL_COLUMNS + STORE_COLUMNS`` + one column per summary statistic, one
        row per clip; ``stamp`` (the :func:`soundstage.io.stamp` of each store, ``;``-joined) is for
        the cache, not for the stage's output table.
    rejected : DataFrame
        Clips whose processed audio could not be read or used (``REJECTED_COLUMNS``, stage
        ``features``; reasons ``unreadable``, ``empty_file``, ``nonfinite``, and ``cannot_process`` when
        the params cannot apply to the clip, e.g. contrast bands above the Nyquist rate of a clip kept
        at its native rate).

    Raises
    ------
    ValueError
        When ``save`` names a feature that is unknown or disabled in ``config``.
    """
    save = tuple(dict.fromkeys(save))
    enabled = enabled_features(config)
    bad = [name for name in save if name not in enabled]
    if bad:
        raise ValueError(f"features.save: {', '.join(map(repr, bad))} not computed with these params "
                         f"(choose from {', '.join(enabled)})")
    out_dir = Path(out_dir)
    params_key = cache.key_of(stages.code_version("features"), config.to_dict(), sorted(save))  # hashed once per shard
    rejected: list[dict] = []
    store_name = f"{int(shard):03d}" if shard is not None else "all"
    parts = ShardParts(out_dir, save, store_name)

    # Paths as strings: a few pathlib objects per clip cost more than the rest of its bookkeeping.
    folders = [os.fspath(out_dir / name) for name in save]
    audio = Stores(audio_dir, stage="process")

    def files(row: dict) -> list[str]:
        where = row.get("store")
        if where is None or (isinstance(where, float) and np.isnan(where)):  # a cache of one .npy per clip
            return [f"{folder}/{row['id']}.npy" for folder in folders]
        return [f"{folder}/{where}.npy" for folder in folders]

    def compute(clip_id: str, key: str, row: dict) -> list[dict]:
        path = f"{audio.folder}/{row['store']}.npy"
        try:
            y = read_segment(audio, row)
        except (OSError, ValueError) as exc:
            rejected.append(rejection(row["path"], clip_id, "features", "unreadable",
                                      f"{row['path']}: processed audio not readable in {path}: {exc}"))
            return []
        sr = int(row["sample_rate"])
        if y.size == 0:
            rejected.append(rejection(row["path"], clip_id, "features", "empty_file",
                                      f"{row['path']}: no processed samples ({path})"))
            return []
        if not np.isfinite(y).all():
            rejected.append(rejection(row["path"], clip_id, "features", "nonfinite",
                                      f"{row['path']}: NaN or infinite processed samples ({path})"))
            return []
        try:
            feats, summary = clip_features(y, sr=sr, config=config)
        except ValueError as exc:  # params that cannot apply to this clip (its native rate): the others go on
            rejected.append(rejection(row["path"], clip_id, "features", "cannot_process", f"{row['path']}: {exc}"))
            return []
        where, offset = parts.append([feats[name] for name in save])
        m = Moments.from_frames(feats["logmel"])
        return [{"id": clip_id, "clip_id": row["clip_id"], "label": row["label"], "group": row["group"], "key": key,
                 "stamp": None, "count": m.count, "logmel_mean": m.mean.tolist(), "logmel_m2": m.m2.tolist(),
                 "store": where, "offset": offset, "frames": int(feats["logmel"].shape[1]), **summary}]

    def refresh(old: dict, row: dict) -> dict:
        # Parquet gives the moments back as arrays; lists keep the column as fresh rows have it.
        return {**old, "clip_id": row["clip_id"], "label": row["label"], "group": row["group"],
                "logmel_mean": np.asarray(old["logmel_mean"]).tolist(),
                "logmel_m2": np.asarray(old["logmel_m2"]).tolist()}

    def owned(old: dict) -> bool:  # a clip moved to another shard (n_shards changed) is that shard's
        return shard is None or n_shards is None or shard_of(str(old["clip_id"]), n_shards) == shard

    clips = [(str(row["id"]), cache.key_of(params_key, row["key"], str(row["id"])), row)
             for row in index.to_dict("records")]
    with parts:
        table = cache.update_shard(
            clips, previous=previous, clip_column="id", files=files, path_of=lambda row: None, compute=compute,
            refresh=refresh, owned=owned, empty_columns=[*META_COLUMNS, *INTERNAL_COLUMNS, *STORE_COLUMNS],
            checkpoint=None if checkpoint is None else lambda done: checkpoint(parts.stamp_rows(done)),
            checkpoint_seconds=CHECKPOINT_SECONDS, progress="features" if progress else None)
        table = parts.finish(table, checkpoint=checkpoint, n_shards=n_shards)
    return table, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def load_logmels(rows: pd.DataFrame, logmel_dir: str | Path) -> list[np.ndarray]:
    """The log-mel of each row of a features table (float32 ``(n_mels, n_frames)``, dB, as ``features``
    writes it), located by the rows' :data:`soundstage.store.STORE_COLUMNS` in the stores of
    ``logmel_dir`` and memory-mapped: the OS pages in only the crops a batch touches."""
    return load_matrices(rows, logmel_dir)


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    """Write a shard table as Parquet, atomically; :func:`read_table` reads it back.

    The summary columns (float64, outside ``META_COLUMNS + INTERNAL_COLUMNS``, ~170 by default) are
    stored as one ``fixed_size_list<double>`` column ``summary``, their names in the schema metadata
    (a Parquet writer and reader pay per column: benchmarks/README.md); ``logmel_mean`` and
    ``logmel_m2`` are ``list<double>`` columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fixed = META_COLUMNS + INTERNAL_COLUMNS + list(STORE_COLUMNS)
    names = [str(c) for c in table.columns if c not in fixed]
    arrays = {str(c): pa.array([np.asarray(v).tolist() for v in table[c]], type=pa.list_(pa.float64()))
              if c in ("logmel_mean", "logmel_m2") else pa.array(table[c].to_numpy(), from_pandas=True)
              for c in table.columns if c in fixed}
    if names:
        block = np.ascontiguousarray(table[names].to_numpy(np.float64))  # (clips, summary columns)
        arrays["summary"] = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), len(names))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(arrays, metadata={SUMMARY_NAMES: json.dumps(names)} if names else None), tmp,
                       use_dictionary=False, write_statistics=False)


def read_table(path: str | Path, *, drop: Iterable[str] = ()) -> pd.DataFrame:
    """A shard table written by :func:`write_table`, summary columns unpacked after the others, without
    the columns named in ``drop`` (never read); a table without a ``summary`` column is returned as it is."""
    import pyarrow.parquet as pq

    drop = set(drop)
    columns = None if not drop else [c for c in pq.read_schema(path).names if c not in drop]
    arrow = pq.read_table(path, columns=columns, use_threads=False)
    meta = arrow.schema.metadata or {}
    if "summary" not in arrow.column_names or SUMMARY_NAMES.encode() not in meta:
        return arrow.to_pandas()
    names = json.loads(meta[SUMMARY_NAMES.encode()])
    packed = arrow.column("summary").combine_chunks()
    block = packed.flatten().to_numpy().reshape(len(packed), len(names))
    rest = arrow.drop_columns(["summary"]).replace_schema_metadata(None).to_pandas()
    return pd.concat([rest, pd.DataFrame(block, columns=names, index=rest.index)], axis=1)


def build_table(*, shard_tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Gather shard tables into the modelling table, whatever the split (each fold picks its rows,
    :func:`soundstage.split.rows_of_fold`), so that the features never depend on it.

    Columns: ``id, clip_id, label, group``, ``store, offset, frames`` (where the clip's matrices are)
    then the summary features (float32) in the order of the first shard table that has them; rows
    sorted by ``id``. Raises ``ValueError`` when two shards
    hold the same id.
    """
    # Each shard becomes float32 in the final column order as it comes (``shard_tables`` may be a
    # generator), so the whole table is held twice at most: the shards and their concatenation, then
    # the concatenation and its sorted copy.
    frames: list[pd.DataFrame] = []
    columns: dict[str, None] = {}
    for t in shard_tables:
        if len(t):
            t = t.drop(columns=[c for c in INTERNAL_COLUMNS if c in t.columns])
            columns.update(dict.fromkeys(map(str, t.columns)))
            frames.append(t.astype({c: np.float32 for c in t.columns if c not in META_COLUMNS
                                    and c not in STORE_COLUMNS}))
    if not frames:
        return pd.DataFrame(columns=META_COLUMNS)
    where = [c for c in STORE_COLUMNS if c in columns]
    feature_cols = [c for c in columns if c not in META_COLUMNS and c not in where]
    order = META_COLUMNS + where + feature_cols
    frames = [f if list(f.columns) == order
              else f.reindex(columns=order).astype(dict.fromkeys(feature_cols, np.float32)) for f in frames]
    table = pd.concat(frames, ignore_index=True)
    del frames
    table["id"] = table["id"].astype(str)
    if table["id"].duplicated().any():
        twice = table["id"][table["id"].duplicated()].head(3).tolist()
        raise ValueError(f"features: clip id(s) in two shard tables: {twice}")
    table = table.take(np.argsort(table["id"].to_numpy(), kind="stable"))
    table.reset_index(drop=True, inplace=True)  # in place: no third copy
    return table


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The summary feature columns of a modelling table."""
    return [c for c in table.columns if c not in [*META_COLUMNS, "split", "fold", *INTERNAL_COLUMNS, *STORE_COLUMNS]]
