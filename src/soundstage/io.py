"""File I/O of the stages.

Every output is written atomically: to a temporary file in the destination folder, then renamed,
so a killed run never leaves a half-written output behind. Library writers get a temporary path
(:func:`atomic_path`); the many small per-clip files of a shard are written as bytes
(:func:`write_atomic`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: What every temporary file of an atomic write has in its name: ``.<name>.tmp-<pid>[-<random>]``
#: beside the destination. Only a killed writer leaves one behind (see :func:`is_temp_name`).
TEMP_MARK = ".tmp-"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of this module's temporary names (a killed writer's leftover)."""
    return name.startswith(".") and TEMP_MARK in name


def shard_files(folder: str | Path, suffix: str, n_shards: int | None = None) -> list[Path]:
    """The files ``folder/NNN<suffix>`` (``NNN`` digits: one per shard), in shard order; with
    ``n_shards``, only those of shards below it (files of an earlier run with more shards are stale).
    ``suffix=".csv"`` leaves out ``NNN.rejected.csv``; a missing folder has none."""
    found = []
    for path in Path(folder).glob(f"*{suffix}"):
        stem = path.name[: -len(suffix)]
        if stem.isdigit() and (n_shards is None or int(stem) < n_shards):
            found.append(path)
    return sorted(found)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield an unused temporary path beside ``path`` for the block to write; rename it onto ``path``
    when the block succeeds, delete it when the block fails.

    The writer creates the file, with the ``0o666 & ~umask`` mode any new file gets. ``suffix``
    defaults to the destination's suffix, so writers that pick a format by extension (numpy,
    soundfile, pandas, Keras) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
                              f"{path.suffix if suffix is None else suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:  # noqa: F821
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


#: Style of the tables :func:`write_html_table` writes (read in the Snakemake report's viewer).
_TABLE_CSS = ("body{font-family:sans-serif;font-size:14px;margin:16px}table{border-collapse:collapse}"
              "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
              "td:first-child,th:first-child{text-align:left}")


def write_html_table(path: str | Path, frame: pd.DataFrame, *, title: str, max_rows: int = 1000) -> None:  # noqa: F821
    """``frame`` as a standalone HTML page (a title, then the table; its first ``max_rows`` rows and a
    note of how many were left out), for the Snakemake report, which shows HTML and not CSV."""
    import html

    shown = frame.head(max_rows)
    more = len(frame) - len(shown)
    note = f"<p>... and {more} more rows in the CSV file.</p>" if more > 0 else ""
    body = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0) if len(frame) else (
        "<p>None.</p>")
    write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                     f"<style>{_TABLE_CSS}</style></head><body><h3>{html.escape(title)}</h3>{body}{note}"
                     "</body></html>\n")


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:  # noqa: F821
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def stamp(st: os.stat_result) -> str:
    """``"<size>:<mtime_ns>"``: identifies one written version of a file. Every atomic write makes a
    new file, so a file rewritten since a stamp was taken no longer matches it."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def file_stamp(path: str | Path) -> str | None:
    """:func:`stamp` of ``path`` as it is now, or ``None`` when it does not exist."""
    try:
        return stamp(os.stat(path))
    except OSError:
        return None


def write_atomic(path: str | Path, *chunks: Any) -> os.stat_result:
    """Write bytes-like ``chunks`` (bytes, C-contiguous arrays) to ``path`` atomically; return the
    written file's ``os.stat_result`` (for :func:`stamp`).

    The temporary file ``.<name>.tmp-<pid>`` is named for this process (one job writes each
    output; a killed job's leftover is overwritten), and the folder is made only when missing.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}{TEMP_MARK}{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder or ".", exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            for chunk in chunks:
                # Arrays as their bytes (memoryview.cast refuses an empty array), bytes as they are.
                view = memoryview(chunk.reshape(-1).view(np.uint8) if isinstance(chunk, np.ndarray) else chunk)
                while view:
                    view = view[os.write(fd, view):]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return st


def save_npy(path: str | Path, array: np.ndarray) -> os.stat_result:
    """Write ``array`` as ``np.save`` does (C order), atomically; return the written file's stat."""
    import io

    array = np.require(array, requirements="C")
    if array.dtype.hasobject:
        raise ValueError(f"{path}: object arrays are not saved")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return write_atomic(path, header.getvalue(), array)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (its zip entries carry no time: the same arrays give the
    same bytes)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> os.stat_result:
    """Write ``audio`` (``(n,)`` or ``(n, channels)``) as a 32-bit float WAV at ``sample_rate`` Hz,
    atomically; return the written file's stat. ``soundfile.read(path, dtype="float32")`` reads
    the samples back bit for bit."""
    import struct

    data = np.ascontiguousarray(audio, dtype="<f4")
    channels = 1 if data.ndim == 1 else data.shape[1]
    n_bytes = data.size * 4
    header = b"".join([  # RIFF, fmt (IEEE float), fact (frames), data
        b"RIFF", struct.pack("<I", 36 + 12 + n_bytes), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, 3, channels, sample_rate, sample_rate * channels * 4, channels * 4, 32),
        b"fact", struct.pack("<II", 4, data.shape[0]),
        b"data", struct.pack("<I", n_bytes),
    ])
    return write_atomic(path, header, data)


def read_csv(path: str | Path, *, text: Sequence[str] = ()) -> pd.DataFrame:  # noqa: F821
    """Read one of our CSV tables with every id-like column, and those named in ``text``, kept as
    text (empty cells are missing values).

    ``key`` must be text: a SHA-1 such as ``4e4924939249...`` looks like a float with a huge exponent,
    on which pandas' C parser (2.x, pandas-dev/pandas#63089) overflows and crashes, about once per
    thousand clips. Metadata columns (a ``fold`` of ``05``, a ``take`` beside an empty cell, which
    would become ``5`` or ``5.0``) are compared as text: pass them in ``text``.
    """
    import pandas as pd

    dtype = {"id": str, "clip_id": str, "label": str, "group": str, "path": str, "key": str, "split": str,
             "stamp": str, "store": str}
    return pd.read_csv(path, dtype=dtype | dict.fromkeys(text, str), keep_default_na=False, na_values=[""])


def read_ahead(items: Sequence[T], path_of: Callable[[T], str | Path | None], *, ahead: int = 8,
               length: int = 0) -> Iterator[T]:
    """Yield ``items`` in order while the kernel reads the files of the next ``ahead`` ones
    (``posix_fadvise(POSIX_FADV_WILLNEED)``: the read starts, nothing is read into the process):
    their first ``length`` bytes, or all of each file for 0.

    ``path_of(item)`` is the file the consumer will read for ``item``, or ``None``. A file that
    cannot be opened or advised (a FIFO, a socket) is skipped, its reader reports it; without
    ``os.posix_fadvise`` (macOS, Windows) the items are simply yielded.
    """
    advise = getattr(os, "posix_fadvise", None)
    # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    for i, item in enumerate(items):
        # The first item asks for itself and the next ones; each later one for the item `ahead` on.
        for later in items[i + ahead if i else 0: i + ahead + 1] if advise else ():
            path = path_of(later)
            try:
                fd = os.open(path, flags) if path is not None else None
            except OSError:
                continue
            if fd is not None:
                try:
                    advise(fd, 0, length, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass
                finally:
                    os.close(fd)
        yield item
