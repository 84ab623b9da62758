"""Per-shard result caches, so that re-running a shard recomputes only the clips that changed.

Snakemake deletes a job's declared outputs before running it, and DVC deletes outs that are not
``persist: true``; a shard's cache therefore lives beside its outputs (``<stage>/cache/``), written
by the stage before its other outputs. A clip's cached rows are reused when their *key* (a hash of
the clip's input identity and of every parameter and module that shapes its outputs) is unchanged
and each of its files is still the very version the cache recorded (its :func:`soundstage.io.stamp`,
size and modification time): a file rewritten since, by a run killed half-way through a shard under
other parameters, by another shard after ``n_shards`` changed, or by hand, is computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from soundstage.io import file_stamp, read_ahead


def key_of(*parts: Any) -> str:
    """A stable hash of JSON-serializable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def stamps(paths: Iterable[str | Path]) -> str | None:
    """The :func:`soundstage.io.stamp` of each file, joined by ``;``; ``None`` if one is missing."""
    found = []
    for path in paths:
        s = file_stamp(path)
        if s is None:
            return None
        found.append(s)
    return ";".join(found)



def update_shard(clips: Sequence[tuple[str, str, Any]], *, previous: pd.DataFrame | None, clip_column: str,
                 files: Callable[[dict], list[str]], path_of: Callable[[Any], str | Path],
                 compute: Callable[[str, str, Any], list[dict]], refresh: Callable[[dict, Any], dict],
                 owned: Callable[[dict], bool], empty_columns: list[str],
                 checkpoint: Callable[[pd.DataFrame], None] | None = None, checkpoint_seconds: float = 60.0,
                 progress: str | None = None) -> pd.DataFrame:
    """Bring one shard's outputs up to date: reuse what is current, compute the rest, drop stale files.

    Parameters
    ----------
    clips : sequence of (clip id, key, item)
        The shard's clips in output order; ``item`` is passed on to ``compute`` and ``refresh``.
    previous : DataFrame, optional
        The shard's cache: rows with ``clip_column``, ``key`` and ``stamp`` (the ``;``-joined
        :func:`soundstage.io.stamp` of the row's ``files``); a clip may have several rows.
    clip_column : str
        The column of ``previous`` holding the clip id.
    files : callable
        ``files(row)``: the files a row stands for, in the order of its ``stamp``.
    path_of : callable
        ``path_of(item)``: the file ``compute`` reads for a clip, read ahead of its turn
        (:func:`soundstage.io.read_ahead`).
    compute : callable
        ``compute(clip_id, key, item)``: the clip's rows computed afresh, each with its ``stamp``
        (its files written); ``[]`` when the clip is rejected (``compute`` records why).
    refresh : callable
        ``refresh(row, item)``: a reused row with what may change under the same key (label, group).
    owned : callable
        ``owned(row)``: whether a previous row's files are this shard's to delete when stale (not
        when its clip moved to another shard, whose job owns, and may have rewritten, them).
    empty_columns : list of str
        The columns of the table when no row is left.
    checkpoint : callable, optional
        Called every ``checkpoint_seconds`` with a valid cache of the work so far (the rows done,
        and the previous rows of the clips still to do), so that a killed shard loses at most that.
    progress : str, optional
        Show a tqdm progress bar with this label.

    Returns
    -------
    DataFrame
        One or more rows per clip kept, in ``clips`` order. The files of previous rows that no
        current row stands for (clips gone, rejected, or re-made into fewer files) are deleted.
    """
    from tqdm.auto import tqdm

    reuse: dict[str, list[dict]] = {}
    if previous is not None:
        for row in previous.to_dict("records"):
            reuse.setdefault(str(row[clip_column]), []).append(row)

    def table(rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=empty_columns)

    def current(clip_id: str, key: str) -> list[dict] | None:
        old = reuse.get(clip_id)
        return old if old and all(r["key"] == key and r.get("stamp") == stamps(files(r)) for r in old) else None

    # First which clips are current, then the work, reading the files of the others ahead.
    plan = [(clip_id, key, item, current(clip_id, key)) for clip_id, key, item in clips]
    rows: list[dict] = []
    last_checkpoint = time.monotonic()
    work = read_ahead(plan, lambda step: None if step[3] else path_of(step[2]))
    for done, (clip_id, key, item, old) in enumerate(tqdm(work, total=len(plan), desc=progress, unit="clip",
                                                          disable=progress is None)):
        if checkpoint is not None and rows and time.monotonic() - last_checkpoint > checkpoint_seconds:
            checkpoint(table(rows + [r for step in plan[done:] for r in reuse.get(step[0], [])]))
            last_checkpoint = time.monotonic()
        if old:
            rows.extend(refresh(r, item) for r in old)
        else:
            rows.extend(compute(clip_id, key, item))

    # Candidates are compared with the kept files by real path (symlinks), only when there are any.
    kept = {os.fspath(f) for r in rows for f in files(r)}
    stale = [os.fspath(f) for old in reuse.values() for r in old if owned(r) for f in files(r)]
    stale = [f for f in stale if f not in kept]
    if stale:
        kept_real = {os.path.realpath(f) for f in kept}
        for path in stale:
            if os.path.realpath(path) not in kept_real:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    return table(rows)
