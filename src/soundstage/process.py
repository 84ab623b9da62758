"""Stage ``process``: decode, resample, downmix, filter, trim, normalize and cut clips (one shard).

Each clip of the shard becomes one or more processed segments, written as float32 WAV files
(lossless with respect to the in-memory pipeline, so ``predict`` reproduces evaluation exactly):
``<out_dir>/audio/<id>.wav``, mono, or ``(n, channels)`` with ``process.mono: false``. A segment's
id is ``<clip_id>__s<k>``; its group is the clip's group, or the clip id when the dataset has no
groups, so no clip is ever split across train/val/test.

Each raw file is read once per run: the files still to decode are read ahead of their turn
(:func:`soundstage.io.read_ahead`), and a decoded file's pages are let go of from the page cache
(:func:`soundstage.io.drop_cached`), so a large dataset does not evict the processed clips that
``features`` reads next.

A clip that cannot be used becomes one rejected row naming its file, and the shard goes on: the
reasons of :mod:`soundstage.audio` (``truncated`` mid-stream, ``nonfinite``, ``silent`` or
``too_short`` after trimming...), or ``cannot_process`` when the params cannot apply to this clip
(a filter cutoff above the Nyquist rate of its native rate with ``sample_rate: null``) or an
unexpected error is raised while decoding or processing it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from soundstage import cache
from soundstage.audio import AudioError, ProcessConfig, load_audio, preprocess
from soundstage.rejections import REJECTED_COLUMNS, rejection
from soundstage.io import drop_cached, file_stamp, frame_of, read_ahead, records, stamp, write_wav_float32

_CODE = cache.code_version("soundstage.audio", "soundstage.process")
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
        try:
            y, sr = load_audio(path, mono=config.mono)
        finally:
            drop_cached(path)  # decoded once per run: its pages serve this clip's own writes
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
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    base = Path(relative_to).resolve() if relative_to is not None else None
    if "shard" in manifest.columns:
        mine = manifest["shard"].to_numpy().astype(int) == int(shard)
        elsewhere = {str(i) for i in manifest["id"].to_numpy()[~mine]}
        manifest = manifest if mine.all() else manifest[mine]
    else:
        elsewhere = set()
    rows = records(manifest)
    reuse: dict[str, list[dict]] = {}
    if previous is not None and len(previous):
        for old_row in records(previous):
            reuse.setdefault(str(old_row["clip_id"]), []).append(old_row)

    segmented = config.duration.mode == "segment"
    params_key = cache.key_of(_CODE, config.to_dict())
    # Resolved once: a segment's file is this folder plus its id, with no per-clip realpath.
    audio_dir = (out_dir / "audio").resolve()
    audio_rel = _rel(audio_dir, base)
    out_rows: list[dict] = []
    rejected: list[dict] = []
    kept_files: set[Path] = set()
    # First what each clip needs (reused outputs or a decode), then the work, reading the files
    # to decode ahead of their turn.
    plan = []
    for row in rows:
        clip_id = str(row["id"])
        key = _clip_key(row, params_key)
        old = reuse.get(clip_id)
        if not (old and all(r["key"] == key and r.get("stamp") == file_stamp(_resolve(r["path"], base))
                            for r in old)):
            old = None
        plan.append((row, clip_id, key, old))
    work = read_ahead(plan, lambda step: None if step[3] else step[0]["path"])
    last_checkpoint = time.monotonic()
    for done, (row, clip_id, key, old) in enumerate(tqdm(work, total=len(plan), desc=f"process[{shard:03d}]",
                                                         unit="clip", disable=not progress)):
        if checkpoint is not None and out_rows and time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
            pending = [r for step in plan[done:] for r in reuse.get(step[1], [])]
            checkpoint(frame_of(out_rows + pending, INDEX_COLUMNS + ["stamp"]))
            last_checkpoint = time.monotonic()
        group = _group_of(row, clip_id)
        if old:
            out_rows.extend({**r, "label": row["label"], "group": group, "shard": shard} for r in old)
            kept_files.update(_resolve(r["path"], base) for r in old)
            continue
        try:
            segments, out_sr = _process_clip(str(row["path"]), config)
        except AudioError as exc:
            rejected.append(rejection(row["path"], clip_id, "process", exc.reason, str(exc)))
            continue
        for seg in segments:
            seg_id = _segment_id(clip_id, seg.index, segmented=segmented)
            dest = audio_dir / f"{seg_id}.wav"
            # WAV wants (frames, channels); multichannel segments are (channels, n).
            written = write_wav_float32(dest, seg.audio.T, out_sr)
            kept_files.add(dest)
            out_rows.append({"id": seg_id, "clip_id": clip_id, "path": f"{audio_rel}/{seg_id}.wav",
                             "label": row["label"], "group": group, "duration": seg.audio.shape[-1] / out_sr,
                             "start": float(seg.start), "sample_rate": out_sr, "shard": shard, "key": key,
                             "stamp": stamp(written)})

    # Clips that left the manifest (or changed their segmentation) leave no stale files behind;
    # a clip that moved to another shard (n_shards changed) is that shard's business. Candidates
    # are compared with the kept files by real path (symlinks), computed only when there are any.
    candidates = [path for clip_id, rows in reuse.items() if clip_id not in elsewhere
                  for path in (_resolve(r["path"], base) for r in rows) if path not in kept_files]
    if candidates:
        kept_real = {path.resolve() for path in kept_files}
        for stale in candidates:
            if stale.resolve() not in kept_real:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

    return frame_of(out_rows, INDEX_COLUMNS + ["stamp"]), frame_of(rejected, REJECTED_COLUMNS)


def _rel(path: Path, base: Path | None) -> str:
    if base is None:
        return str(path.resolve())
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path.resolve())


def _resolve(path: str, base: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base is None else base / p
