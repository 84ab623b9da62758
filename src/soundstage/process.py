"""Stage ``process``: decode, resample, downmix, filter, trim, normalize and cut clips (one shard).

Each clip of the shard becomes one or more processed segments, written as float32 WAV files
(lossless with respect to the in-memory pipeline, so ``predict`` reproduces evaluation exactly):
``<out_dir>/audio/<id>.wav``, mono, or ``(n, channels)`` with ``process.mono: false``. A segment's
id is ``<clip_id>__s<k>``; its group is the clip's group, or the clip id when the dataset has no
groups, so no clip is ever split across train/val/test.

A clip that cannot be used becomes one rejected row naming its file, and the shard goes on: the
reasons of :mod:`soundstage.decode` (``truncated`` mid-stream, ``nonfinite``, ``silent`` or
``too_short`` after trimming...), or ``cannot_process`` when the params cannot apply to this clip
(a filter cutoff above the Nyquist rate of its native rate with ``sample_rate: null``) or an
unexpected error is raised while decoding or processing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from soundstage import cache, stages
from soundstage.decode import AudioError, load_audio
from soundstage.dsp import ProcessConfig, preprocess
from soundstage.io import stamp, write_wav
from soundstage.rejections import REJECTED_COLUMNS, rejection

INDEX_COLUMNS = ["id", "clip_id", "path", "label", "group", "duration", "start", "sample_rate", "shard", "key"]
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
                  previous: pd.DataFrame | None = None, relative_to: str | Path | None = None,
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
        The stage folder; audio goes to ``out_dir/audio/<id>.wav``.
    config : ProcessConfig
    shard : int
    previous : DataFrame, optional
        This shard's cache (an earlier ``index`` with its ``stamp`` column): clips whose key (file
        path, size and mtime, params, code) is unchanged and whose files are still the versions
        stamped there are reused without decoding; their label and group are refreshed from
        ``manifest``. Files of previous clips that are gone from the manifest, or were re-processed
        into fewer segments, are deleted.
    relative_to : path, optional
        Paths in the index are written relative to this folder (the repository root).
    progress : bool
        Show a tqdm progress bar.
    checkpoint : callable, optional
        Called every :data:`CHECKPOINT_SECONDS` with a valid cache of the work so far (the rows
        done, and the previous rows of the clips still to do), so that a killed shard loses at
        most that much work.

    Returns
    -------
    index : DataFrame
        ``INDEX_COLUMNS`` + ``stamp`` (the segment file's :func:`soundstage.io.stamp`, for the
        cache; not part of the stage's output table), one row per segment; ``duration`` and
        ``start`` in seconds, ``sample_rate`` in Hz.
    rejected : DataFrame
        ``REJECTED_COLUMNS``, one row per rejected clip (stage ``process``), ``detail`` naming
        the file.
    """
    out_dir = Path(out_dir)
    base = Path(relative_to).resolve() if relative_to is not None else None
    elsewhere: set[str] = set()
    if "shard" in manifest.columns:
        mine = manifest["shard"].astype(int) == int(shard)
        elsewhere = set(manifest.loc[~mine, "id"].astype(str))
        manifest = manifest[mine]
    segmented = config.duration.mode == "segment"
    params_key = cache.key_of(stages.code_version("process"), config.to_dict())  # hashed once per shard
    audio_dir = (out_dir / "audio").resolve()
    audio_rel = _rel(audio_dir, base)
    audio_folder = os.fspath(audio_dir)
    rejected: list[dict] = []

    def compute(clip_id: str, key: str, row: dict) -> list[dict]:
        try:
            segments, out_sr = _process_clip(str(row["path"]), config)
        except AudioError as exc:
            rejected.append(rejection(row["path"], clip_id, "process", exc.reason, str(exc)))
            return []
        out = []
        for seg in segments:
            seg_id = _segment_id(clip_id, seg.index, segmented=segmented)
            # WAV wants (frames, channels); multichannel segments are (channels, n).
            written = write_wav(f"{audio_folder}/{seg_id}.wav", seg.audio.T, out_sr)
            out.append({"id": seg_id, "clip_id": clip_id, "path": f"{audio_rel}/{seg_id}.wav", "label": row["label"],
                        "group": _group_of(row, clip_id), "duration": seg.audio.shape[-1] / out_sr,
                        "start": float(seg.start), "sample_rate": out_sr, "shard": shard, "key": key,
                        "stamp": stamp(written)})
        return out

    def refresh(old: dict, row: dict) -> dict:
        return {**old, "label": row["label"], "group": _group_of(row, str(row["id"])), "shard": shard}

    index = cache.update_shard(
        [(str(row["id"]), _clip_key(row, params_key), row) for row in manifest.to_dict("records")],
        previous=previous, clip_column="clip_id", files=lambda r: [_resolve(r["path"], base)],
        path_of=lambda row: row["path"], compute=compute, refresh=refresh,
        owned=lambda r: str(r["clip_id"]) not in elsewhere,  # else another shard's job writes its files
        empty_columns=INDEX_COLUMNS + ["stamp"], checkpoint=checkpoint, checkpoint_seconds=CHECKPOINT_SECONDS,
        progress=f"process[{shard:03d}]" if progress else None)
    return index, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def _rel(path: Path, base: Path | None) -> str:
    if base is None:
        return str(path.resolve())
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path.resolve())


def _resolve(path: str, base: Path | None) -> str:
    return path if base is None else os.path.join(base, path)  # an absolute path stays as it is
