"""Stage ``process``: decode, resample, downmix, filter, trim, normalize and cut clips (one shard).

Each clip of the shard becomes one or more processed segments, kept as float32 samples (lossless
with respect to the in-memory pipeline, so ``predict`` reproduces evaluation exactly) in the shard's
audio store ``<out_dir>/audio/<shard>.npy`` (:mod:`soundstage.store`: a segment is the
``(samples, 1)`` block at the ``offset`` and of the ``frames`` its index row names; with
``process.mono: false`` a segment of ``c > 1`` channels goes to ``<shard>-<c>ch.npy`` as
``(samples, c)``). :func:`read_segment` reads one back. A segment's id is ``<clip_id>__s<k>``; its
group is the clip's group, or the clip id when the dataset has no groups, so no clip is ever split
across train/val/test.

A clip that cannot be used becomes one rejected row naming its file, and the shard goes on: the
reasons of :mod:`soundstage.decode` (``truncated`` mid-stream, ``nonfinite``, ``silent`` or
``too_short`` after trimming...), or ``cannot_process`` when the params cannot apply to this clip
(a filter cutoff above the Nyquist rate of its native rate with ``sample_rate: null``) or an
unexpected error is raised while decoding or processing it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage import cache, stages
from soundstage.decode import AudioError, downmix_frames, load_audio
from soundstage.dsp import ProcessConfig, preprocess
from soundstage.rejections import REJECTED_COLUMNS, rejection
from soundstage.store import STORE_COLUMNS, ShardParts, Stores

#: The columns of a process shard index; ``path`` is the source file the segment was cut from, and
#: ``store, offset, frames`` locate its samples in the stage's ``audio`` stores.
INDEX_COLUMNS = ["id", "clip_id", "path", "label", "group", "duration", "start", "sample_rate", "shard", "key",
                 *STORE_COLUMNS]
#: Seconds between two :func:`process_shard` checkpoints of a long shard.
CHECKPOINT_SECONDS = 60.0


def _clip_key(row: dict, params_key: str) -> str:
    """What a clip's outputs depend on: the file (path, size, mtime) and ``params_key`` (the
    params and the code, hashed once per shard)."""
    try:
        st = os.stat(row["path"])
        identity = [row["path"], st.st_size, st.st_mtime_ns]
    except OSError:
        identity = [row["path"], None, None]
    return cache.key_of(params_key, identity)


def _segment_id(clip_id: str, index: int, *, segmented: bool) -> str:
    return f"{clip_id}__s{index}" if segmented else clip_id


def _group_of(row: dict, clip_id: str) -> str:
    group = row.get("group")
    if group is None or (isinstance(group, float) and pd.isna(group)) or str(group) == "":
        return clip_id
    return str(group)


def _process_clip(path: str, config: ProcessConfig):
    """Decode and preprocess one file; every failure becomes an AudioError naming the file."""
    try:
        y, sr = load_audio(path, mono=config.mono)
        return preprocess(y, sr=sr, config=config)
    except AudioError as exc:
        raise (exc.with_path(path) if exc.path is None else exc) from None
    except ValueError as exc:
        # e.g. a filter cutoff above the Nyquist rate of this clip's native rate (sample_rate: null)
        raise AudioError(path, "cannot_process", str(exc)) from None
    except MemoryError:
        raise AudioError(path, "cannot_process", "out of memory while decoding (file too long?)") from None
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the shard; it is listed instead
        raise AudioError(path, "cannot_process", f"{type(exc).__name__}: {exc}") from None


def process_shard(*, manifest: pd.DataFrame, out_dir: str | Path, config: ProcessConfig, shard: int,
                  n_shards: int | None = None, previous: pd.DataFrame | None = None,
                  relative_to: str | Path | None = None,
                  progress: bool = False,
                  checkpoint: Callable[[pd.DataFrame], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Process the manifest rows of one shard.

    Parameters
    ----------
    manifest : DataFrame
        Ingest rows (``id, path, label, group, shard, ...``): the whole manifest or only this shard's
        rows. Only rows whose ``shard`` is ``shard`` (all rows without a ``shard`` column) are
        processed; the files of clips that now belong to another shard are never deleted here
        (that shard's job writes them), so pass the whole manifest when ``n_shards`` may change.
    out_dir : path
        The stage folder; audio goes to the stores ``out_dir/audio/<shard>.npy`` (``<shard>-<c>ch.npy``
        for ``c``-channel segments). Two jobs must never process the same shard of one ``out_dir`` at
        once.
    config : ProcessConfig
    shard, n_shards : int
        This job's shard, and the shard count: when given, the files of shards ``n_shards`` and
        above (stores, tables, caches: left by a run with more shards) are deleted.
    previous : DataFrame, optional
        This shard's cache (an earlier ``index`` with its ``stamp`` column): clips whose key (file
        path, size and mtime, params, code) is unchanged and whose stores are still the versions
        stamped there are reused without decoding; their label and group are refreshed from
        ``manifest``. The samples of previous clips that are gone from the manifest, or were
        re-processed into fewer segments, leave the stores.
    relative_to : path, optional
        The folder relative paths of a cache written before stores start from (the repository root).
    progress : bool
        Show a tqdm progress bar.
    checkpoint : callable, optional
        Called every :data:`CHECKPOINT_SECONDS` with a valid cache of the work so far (the rows
        done, and the previous rows of the clips still to do), so that a killed shard loses at
        most that much work.

    Returns
    -------
    index : DataFrame
        ``INDEX_COLUMNS`` + ``stamp`` (the segment store's :func:`soundstage.io.stamp`, for the
        cache; not part of the stage's output table), one row per segment; ``duration`` and
        ``start`` in seconds, ``sample_rate`` in Hz, ``frames`` in samples.
    rejected : DataFrame
        ``REJECTED_COLUMNS``, one row per rejected clip (stage ``process``), ``detail`` naming
        the file.
    """
    out_dir = Path(out_dir)
    base = Path(relative_to) if relative_to is not None else None
    elsewhere: set[str] = set()
    if "shard" in manifest.columns:
        mine = manifest["shard"].astype(int) == int(shard)
        elsewhere = set(manifest.loc[~mine, "id"].astype(str))
        manifest = manifest[mine]
    segmented = config.duration.mode == "segment"
    params_key = cache.key_of(stages.code_version("process"), config.to_dict())  # hashed once per shard
    store_name = f"{int(shard):03d}"
    audio_folder = os.fspath(out_dir / "audio")
    parts = ShardParts(out_dir, ["audio"], store_name)
    rejected: list[dict] = []

    def store_of(channels: int) -> str:
        return store_name if channels == 1 else f"{store_name}-{channels}ch"

    def compute(clip_id: str, key: str, row: dict) -> list[dict]:
        try:
            segments, out_sr = _process_clip(str(row["path"]), config)
        except AudioError as exc:
            rejected.append(rejection(row["path"], clip_id, "process", exc.reason, str(exc)))
            return []
        out = []
        for seg in segments:
            seg_id = _segment_id(clip_id, seg.index, segmented=segmented)
            audio = seg.audio[np.newaxis] if seg.audio.ndim == 1 else seg.audio  # (channels, n)
            where, offset = parts.append([audio], store=store_of(audio.shape[0]))
            out.append({"id": seg_id, "clip_id": clip_id, "path": row["path"], "label": row["label"],
                        "group": _group_of(row, clip_id), "duration": audio.shape[1] / out_sr,
                        "start": float(seg.start), "sample_rate": out_sr, "shard": shard, "key": key,
                        "store": where, "offset": offset, "frames": int(audio.shape[1]), "stamp": None})
        return out

    def files(row: dict) -> list[str]:
        return [f"{audio_folder}/{row['store']}.npy"] if isinstance(row.get("store"), str) else []

    def refresh(old: dict, row: dict) -> dict:
        return {**old, "path": row["path"], "label": row["label"], "group": _group_of(row, str(row["id"])),
                "shard": shard}

    with parts:
        index = cache.update_shard(
            [(str(row["id"]), _clip_key(row, params_key), row) for row in manifest.to_dict("records")],
            previous=_stores_only(previous, out_dir / "audio", base), clip_column="clip_id", files=files,
            path_of=lambda row: row["path"], compute=compute, refresh=refresh,
            owned=lambda r: str(r["clip_id"]) not in elsewhere,  # else another shard's job writes its files
            empty_columns=INDEX_COLUMNS + ["stamp"],
            checkpoint=None if checkpoint is None else lambda done: checkpoint(parts.stamp_rows(done)),
            checkpoint_seconds=CHECKPOINT_SECONDS, progress=f"process[{shard:03d}]" if progress else None)
        index = parts.finish(index, checkpoint=checkpoint, n_shards=n_shards, name_of=store_of)
    return index[INDEX_COLUMNS + ["stamp"]], pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def _stores_only(previous: pd.DataFrame | None, audio_folder: Path, base: Path | None) -> pd.DataFrame | None:
    """A cache of stores as it is; a cache of one WAV file per segment (before stores) gives nothing,
    so its clips are processed again, and its WAV files under ``audio_folder`` are deleted."""
    if previous is None or "store" in previous.columns:
        return previous
    audio_folder = audio_folder.resolve()
    for path in previous.get("path", pd.Series(dtype=str)).astype(str):
        full = (Path(path) if base is None else base / path).resolve()  # an absolute path stays as it is
        if full.suffix == ".wav" and full.is_relative_to(audio_folder):
            with contextlib.suppress(OSError):
                full.unlink()
                for folder in full.parents[:len(full.relative_to(audio_folder).parents) - 1]:
                    folder.rmdir()  # the class folders it leaves empty; stops at the first that is not
    return None


def read_index(process_dir: str | Path, n_shards: int | None = None) -> pd.DataFrame:
    """The process shard indexes ``process_dir/shards/NNN.csv`` as one table (``INDEX_COLUMNS``); only
    shards below ``n_shards`` when given (tables of an earlier run with more shards are stale)."""
    from soundstage.io import read_csv, shard_files

    tables = [t for t in map(read_csv, shard_files(Path(process_dir, "shards"), ".csv", n_shards)) if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=INDEX_COLUMNS)


def read_segment(stores: Stores, row: dict) -> np.ndarray:
    """One processed segment's samples, mono float32 ``(n,)`` (a multichannel segment downmixed as
    :func:`soundstage.decode.downmix_frames` does), from the ``audio`` stores ``stores`` and the
    index ``row``'s ``store, offset, frames``; raises ``FileNotFoundError`` or ``ValueError`` when
    the store is missing or shorter than the row says."""
    block = stores.read(str(row["store"]), int(row["offset"]), int(row["frames"]))  # (n, channels)
    return block[:, 0] if block.shape[1] == 1 else downmix_frames(block)
