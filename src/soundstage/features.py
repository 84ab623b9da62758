"""Stage ``features``: per-clip feature matrices and a summary table, from one STFT per clip.

A shard job reads its processed clips and writes, per clip, the matrices named in ``save``
as ``<out_dir>/<name>/<id>.npy`` (float32, C order, shape ``(n_bins, n_frames)`` with
``n_frames = 1 + n_samples // hop_length`` when ``center``):

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
table holds one row per clip: ``META_COLUMNS`` (``id, clip_id, label, group``), the clip's cache
``key``, the moments of its log-mel frames (``count`` frames, per-bin ``logmel_mean`` and
``logmel_m2`` as lists of ``n_mels`` float64, see :class:`soundstage.moments.Moments`) from which
the ``stats`` stage merges train-split statistics without opening any matrix, and the summary
columns ``<feature>_<stat>_<k>`` (:func:`soundstage.features_core.summarize`).

``build_table`` then gathers the shard tables with the split assignment into one Parquet table
(``id, clip_id, label, group, split`` + summary columns, float32) ready for scikit-learn.

Re-running a shard reuses every clip whose key is unchanged (its processed audio's key, the
feature params, ``save`` and this code) and whose matrices exist; only new or changed clips are
decoded and computed, and the matrices of clips that left the shard are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage import cache
from soundstage.audio import downmix_frames
from soundstage.features_core import FEATURE_NAMES, FeatureConfig, extract, summarize
from soundstage.rejections import REJECTED_COLUMNS, rejection, shard_of
from soundstage.io import read_csv as read_index  # noqa: F401 - re-exported for the CLI and benchmark
from soundstage.io import frame_of, read_ahead, read_wav_float32, records, save_npy, stamp
from soundstage.moments import Moments

_CODE = cache.code_version("soundstage.features", "soundstage.features_core", "soundstage.moments")
META_COLUMNS = ["id", "clip_id", "label", "group"]
INTERNAL_COLUMNS = ["key", "stamp", "count", "logmel_mean", "logmel_m2"]
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
    return feats, summarize(feats, stats=tuple(config.summary))


def enabled_features(config: FeatureConfig) -> tuple[str, ...]:
    """The frame-level features ``config`` computes (what ``save`` may name), in output order."""
    on = {"logmel": True, "mfcc": config.mfcc and config.n_mfcc > 0, "chroma": config.chroma,
          "rms": config.rms, "zcr": config.zcr, **dict.fromkeys(config.spectral, True)}
    return tuple(name for name in SAVEABLE if on.get(name, False))


def features_shard(*, index: pd.DataFrame, out_dir: str | Path, config: FeatureConfig,
                   save: Iterable[str] = ("logmel", "mfcc"), previous: pd.DataFrame | None = None,
                   relative_to: str | Path | None = None, shard: int | None = None, n_shards: int | None = None,
                   progress: bool = False,
                   checkpoint: Callable[[pd.DataFrame], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute features of every clip in one process-shard index.

    Parameters
    ----------
    index : DataFrame
        Process-shard rows (``id, clip_id, path, label, group, key``; ``path`` of the processed
        WAV, relative to ``relative_to`` unless absolute).
    out_dir : path
        The stage folder: matrices go to ``out_dir/<name>/<id>.npy``.
    config : FeatureConfig
    save : iterable of str
        Matrices to write, from :data:`SAVEABLE` and enabled in ``config``.
    previous : DataFrame, optional
        This shard's cache (an earlier table with its ``stamp`` column): clips whose key is unchanged
        and whose matrices are still the versions stamped there are reused as they are.
    relative_to : path, optional
        Folder that relative ``path`` values start from (the repository root).
    shard, n_shards : int, optional
        This job's shard and the shard count. A previous clip that is no longer in ``index``
        loses its matrices, unless (both given) its clip now hashes to another shard
        (``n_shards`` changed): that shard's job owns, and may already have rewritten, them.
    progress : bool
        Show a tqdm progress bar.
    checkpoint : callable, optional
        Called every :data:`CHECKPOINT_SECONDS` with a valid cache of the work so far (the rows
        done, and the previous rows of the clips still to do).

    Returns
    -------
    table : DataFrame
        ``META_COLUMNS + INTERNAL_COLUMNS`` + one column per summary statistic, one row per clip;
        ``stamp`` (the :func:`soundstage.io.stamp` of each saved matrix, ``;``-joined) is for the
        cache, not for the stage's output table.
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
    from tqdm.auto import tqdm

    save = tuple(dict.fromkeys(save))
    enabled = enabled_features(config)
    bad = [name for name in save if name not in enabled]
    if bad:
        raise ValueError(f"features.save: {', '.join(map(repr, bad))} not computed with these params "
                         f"(choose from {', '.join(enabled)})")
    out_dir = Path(out_dir)
    base = Path(relative_to) if relative_to is not None else None
    # Everything but the clip's own identity is hashed once per shard, not once per clip.
    params_key = cache.key_of(_CODE, config.to_dict(), sorted(save))
    folders = {name: os.fspath(out_dir / name) for name in save}  # joined as strings per clip
    reuse: dict[str, dict] = {}
    if previous is not None and len(previous):
        reuse = {str(r["id"]): r for r in records(previous)}

    rows: list[dict] = []
    rejected: list[dict] = []
    # First what each clip needs (its reused row, or its processed audio to read), then the work,
    # reading the files ahead of their turn.
    plan = []
    for row in records(index):
        clip_id = str(row["id"])
        key = cache.key_of(params_key, row["key"], clip_id)
        old = reuse.get(clip_id)
        if (old is not None and old["key"] == key
                and old.get("stamp") == cache.stamps(f"{folders[n]}/{clip_id}.npy" for n in save)):
            plan.append((row, clip_id, key, old, None))
        else:
            path = Path(row["path"]) if base is None or Path(row["path"]).is_absolute() else base / row["path"]
            plan.append((row, clip_id, key, None, path))
    work = read_ahead(plan, lambda step: step[4])
    last_checkpoint = time.monotonic()
    for done, (row, clip_id, key, old, path) in enumerate(tqdm(work, total=len(plan), desc="features", unit="clip",
                                                               disable=not progress)):
        if checkpoint is not None and rows and time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
            pending = [reuse[step[1]] for step in plan[done:] if step[1] in reuse]
            checkpoint(_table_of(rows + pending))
            last_checkpoint = time.monotonic()
        if old is not None:
            rows.append({**old, "clip_id": row["clip_id"], "label": row["label"], "group": row["group"],
                         "logmel_mean": _as_list(old["logmel_mean"]), "logmel_m2": _as_list(old["logmel_m2"])})
            continue
        try:
            y, sr = read_wav_float32(path)
        except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
            rejected.append(rejection(path, clip_id, "features", "unreadable", f"{path}: {exc}"))
            continue
        if y.ndim > 1:
            y = downmix_frames(y)
        if y.size == 0:
            rejected.append(rejection(path, clip_id, "features", "empty_file", f"{path}: no samples"))
            continue
        if not np.isfinite(y).all():
            rejected.append(rejection(path, clip_id, "features", "nonfinite", f"{path}: NaN or infinite samples"))
            continue
        try:
            feats, summary = clip_features(y, sr=sr, config=config)
        except ValueError as exc:  # params that cannot apply to this clip (its native rate): the others go on
            rejected.append(rejection(path, clip_id, "features", "cannot_process", f"{path}: {exc}"))
            continue
        written = [stamp(save_npy(f"{folders[name]}/{clip_id}.npy", feats[name])) for name in save]  # float32
        m = Moments.from_frames(feats["logmel"])
        rows.append({"id": clip_id, "clip_id": row["clip_id"], "label": row["label"], "group": row["group"],
                     "key": key, "stamp": ";".join(written), "count": m.count, "logmel_mean": m.mean.tolist(),
                     "logmel_m2": m.m2.tolist(), **summary})

    # Clips that left the shard (or were rejected now) leave no stale matrices behind.
    current = {str(r["id"]) for r in rows}
    for clip_id in set(reuse) - current:
        if shard is not None and n_shards is not None and shard_of(str(reuse[clip_id]["clip_id"]), n_shards) != shard:
            continue
        for name in SAVEABLE:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name / f"{clip_id}.npy").unlink()
    table = _table_of(rows) if rows else pd.DataFrame(columns=META_COLUMNS + INTERNAL_COLUMNS)
    return table, frame_of(rejected, REJECTED_COLUMNS)


def _table_of(rows: list[dict]) -> pd.DataFrame:
    """``pd.DataFrame(rows)``, the summary columns built as one float block (~0.3 instead of ~0.8 ms
    for a small shard's ~180 columns) when every row has the same keys in the same order."""
    columns = list(rows[0])
    head = [c for c in META_COLUMNS + INTERNAL_COLUMNS if c in columns]
    if columns[: len(head)] != head or any(list(r) != columns for r in rows[1:]):
        return pd.DataFrame(rows)
    rest = columns[len(head):]
    left = pd.DataFrame({c: [r[c] for r in rows] for c in head})
    right = pd.DataFrame(np.array([[r[c] for c in rest] for r in rows], dtype=np.float64).reshape(len(rows), -1),
                         columns=rest)
    return pd.concat([left, right], axis=1) if rest else left


def _as_list(values: object) -> list[float]:
    # Parquet gives numpy arrays back; keep the column homogeneous (lists) for the next write.
    return values.tolist() if isinstance(values, np.ndarray) else list(values)  # type: ignore[call-overload]


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    """Write a shard table as Parquet, atomically; :func:`read_table` reads it back.

    The summary columns (every float64 column outside ``META_COLUMNS + INTERNAL_COLUMNS``, ~170
    by default) are stored together, as one ``fixed_size_list<double>`` column ``__summary__``
    with their names in the schema metadata: a Parquet writer (and reader) pays ~12 us per
    column, most of a small shard's table cost. ``logmel_mean`` / ``logmel_m2`` are
    ``list<double>`` columns (numpy arrays when read back); no index is stored. ``stats`` reads
    the moment columns alone (:func:`soundstage.stats.read_moments`); ``pd.read_parquet`` sees
    the packed column as one array per row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from soundstage.io import atomic_path

    fixed = set(META_COLUMNS + INTERNAL_COLUMNS)
    packed = [c for c, dtype in table.dtypes.items() if dtype == np.float64 and c not in fixed]
    arrays, names = [], []
    for col in table.columns:
        if col in ("logmel_mean", "logmel_m2"):
            arrays.append(pa.array([_as_list(v) for v in table[col]], type=pa.list_(pa.float64())))
        elif col not in packed:
            arrays.append(pa.array(table[col].to_numpy(), from_pandas=True))
        else:
            continue
        names.append(str(col))
    metadata = None
    if packed:
        block = np.ascontiguousarray(table[packed].to_numpy(dtype=np.float64))  # (clips, columns)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), len(packed)))
        names.append(_PACKED)
        metadata = {_PACKED_NAMES: json.dumps([str(c) for c in packed])}
    with atomic_path(path) as tmp:
        # No dictionary pages or column statistics: float features gain nothing from either.
        pq.write_table(pa.Table.from_arrays(arrays, names=names, metadata=metadata), tmp,
                       use_dictionary=False, write_statistics=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """A shard table written by :func:`write_table`, as the DataFrame it was written from.

    The packed summary columns come back as separate float64 columns, in their order, after the
    others. A table without packed columns (written by an older version, or by pandas) is read
    as it is.
    """
    import pyarrow.parquet as pq

    arrow = pq.read_table(path, use_threads=False)
    meta = arrow.schema.metadata or {}
    if _PACKED not in arrow.column_names or _PACKED_NAMES.encode() not in meta:
        return arrow.to_pandas()
    names = json.loads(meta[_PACKED_NAMES.encode()])
    packed = arrow.column(_PACKED).combine_chunks()
    block = packed.flatten().to_numpy().reshape(len(packed), len(names))
    rest = arrow.drop_columns([_PACKED]).replace_schema_metadata(None).to_pandas()
    return pd.concat([rest, pd.DataFrame(block, columns=names, index=rest.index)], axis=1)


_PACKED = "__summary__"
_PACKED_NAMES = "soundstage.summary_columns"


def build_table(*, shard_tables: list[pd.DataFrame], splits: pd.DataFrame) -> pd.DataFrame:
    """Join shard tables with the split assignment (``id, split``) into the modelling table.

    Clips without a split (rejected after splitting) and split rows without features are
    dropped; columns: ``id, clip_id, label, group, split`` then the summary features (float32)
    in the order of the first shard table that has them, rows sorted by ``id``.
    """
    frames = [t for t in shard_tables if len(t)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=META_COLUMNS)
    table = table.drop(columns=[c for c in INTERNAL_COLUMNS if c in table.columns])
    table["id"] = table["id"].astype(str)
    ids = splits[["id", "split"]].assign(id=lambda s: s["id"].astype(str))
    table = table.merge(ids, on="id", how="inner", validate="one_to_one")
    feature_cols = [c for c in table.columns if c not in META_COLUMNS + ["split"]]
    table = table[META_COLUMNS + ["split"] + feature_cols].sort_values("id", kind="stable").reset_index(drop=True)
    if feature_cols:
        table[feature_cols] = table[feature_cols].astype(np.float32)
    return table


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The summary feature columns of a modelling table."""
    return [c for c in table.columns if c not in META_COLUMNS + ["split"] + INTERNAL_COLUMNS]
