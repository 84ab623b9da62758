"""Stage ``process``: decode, resample, downmix, filter, trim, normalize and cut clips (one shard).

Each clip of the shard becomes one or more processed segments, written as float32 mono WAV files
(lossless with respect to the in-memory pipeline, so ``predict`` reproduces evaluation exactly):
``<out_dir>/audio/<id>.wav``. A segment's id is ``<clip_id>__s<k>``; its group is the clip's group,
or the clip id when the dataset has no groups, so no clip is ever split across train/val/test.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd
import soundfile as sf

from soundstage import cache
from soundstage.audio import AudioError, ProcessConfig, load_audio, preprocess
from soundstage.ingest import REJECTED_COLUMNS, rejection
from soundstage.io import atomic_path

_CODE = cache.code_version("soundstage.audio", "soundstage.process")
INDEX_COLUMNS = ["id", "clip_id", "path", "label", "group", "duration", "start", "sample_rate", "shard", "key"]


def _clip_key(row: dict, config: ProcessConfig) -> str:
    try:
        st = os.stat(row["path"])
        identity = [row["path"], st.st_size, st.st_mtime_ns]
    except OSError:
        identity = [row["path"], None, None]
    return cache.key_of(_CODE, identity, config.to_dict())


def _segment_id(clip_id: str, index: int, *, segmented: bool) -> str:
    return f"{clip_id}__s{index}" if segmented else clip_id


def process_shard(*, manifest: pd.DataFrame, out_dir: str | Path, config: ProcessConfig, shard: int,
                  previous: pd.DataFrame | None = None, relative_to: str | Path | None = None,
                  progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Process the manifest rows of one shard.

    Parameters
    ----------
    manifest : DataFrame
        Ingest rows (``id, path, label, group, ...``) of this shard.
    out_dir : path
        The stage folder; audio goes to ``out_dir/audio/<id>.wav``.
    previous : DataFrame, optional
        This shard's previous index (from the cache): clips whose key is unchanged and whose files
        exist are reused without decoding.
    relative_to : path, optional
        Paths in the index are written relative to this folder (the repository root).

    Returns
    -------
    index : DataFrame with ``INDEX_COLUMNS``; rejected : DataFrame with ``REJECTED_COLUMNS``.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    base = Path(relative_to).resolve() if relative_to is not None else None
    reuse: dict[str, list[dict]] = {}
    if previous is not None and len(previous):
        for clip_id, rows in previous.groupby("clip_id", sort=False):
            reuse[str(clip_id)] = rows.to_dict("records")

    out_rows: list[dict] = []
    rejected: list[dict] = []
    kept_files: set[Path] = set()
    for row in tqdm(manifest.to_dict("records"), desc=f"process[{shard}]", unit="clip", disable=not progress):
        clip_id = str(row["id"])
        key = _clip_key(row, config)
        old = reuse.get(clip_id)
        if old and all(r["key"] == key for r in old) and all(_resolve(r["path"], base).is_file() for r in old):
            out_rows.extend(old)
            kept_files.update(_resolve(r["path"], base).resolve() for r in old)
            continue
        try:
            y, sr = load_audio(row["path"])
            segments, out_sr = preprocess(y, sr=sr, config=config)
        except AudioError as exc:
            rejected.append(rejection(row["path"], clip_id, "process", exc.reason, str(exc)))
            continue
        group = row.get("group")
        group = clip_id if group is None or (isinstance(group, float) and pd.isna(group)) or group == "" else str(group)
        segmented = config.duration.mode == "segment"
        for seg in segments:
            seg_id = _segment_id(clip_id, seg.index, segmented=segmented)
            dest = out_dir / "audio" / f"{seg_id}.wav"
            with atomic_path(dest) as tmp:
                sf.write(tmp, seg.audio, out_sr, subtype="FLOAT", format="WAV")
            kept_files.add(dest.resolve())
            out_rows.append({"id": seg_id, "clip_id": clip_id, "path": _rel(dest, base), "label": row["label"],
                             "group": group, "duration": len(seg.audio) / out_sr, "start": float(seg.start),
                             "sample_rate": out_sr, "shard": shard, "key": key})

    # Clips that left the shard (or changed their segmentation) leave no stale files behind.
    for rows in reuse.values():
        for r in rows:
            stale = _resolve(r["path"], base)
            if stale.resolve() not in kept_files:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

    index = pd.DataFrame(out_rows, columns=INDEX_COLUMNS)
    return index, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


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
