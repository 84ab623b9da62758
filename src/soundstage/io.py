"""File I/O of the stages.

Output is atomic: written to a temporary file in the destination folder, then renamed, so a
killed run never leaves a half-written output behind; running it again is enough. Input of many
files in a row is read ahead (:func:`read_ahead`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
from collections import deque
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


def _temp_path(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file exists (empty) when the block starts, created with the usual
    ``0o666 & ~umask`` mode, so the output gets the mode any new file would. ``suffix`` defaults to
    the destination's suffix, so writers that pick a format by extension (numpy, soundfile,
    pandas, Keras) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temp_path(path, path.suffix if suffix is None else suffix)
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
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


def write_csv(path: str | Path, frame: "pd.DataFrame") -> None:  # noqa: F821
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_parquet(path: str | Path, frame: "pd.DataFrame") -> None:  # noqa: F821
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_atomic(path: str | Path, *chunks: Any) -> os.stat_result:
    """Write bytes-like ``chunks`` (bytes, C-contiguous arrays) to ``path`` atomically, leanly;
    return the written file's ``os.stat_result`` (its size and modification time, :func:`stamp`).

    For the thousands of per-clip files of a shard: the temporary file beside ``path`` is named
    for this process (``.<name>.tmp-<pid>``; one job owns each output, and a leftover of a killed
    run is simply overwritten), written with ``os.write`` and renamed; the folder is created only
    when the first attempt finds it missing. About a third of :func:`atomic_path` plus a Python
    file object. The file gets the usual ``0o666 & ~umask`` permissions.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder or ".", exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            for chunk in chunks:
                # Arrays as their bytes (memoryview.cast refuses an empty one), bytes as they are.
                flat = chunk.reshape(-1).view(np.uint8) if isinstance(chunk, np.ndarray) else chunk
                view = memoryview(flat).cast("B")
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


def save_npy(path: str | Path, array: np.ndarray) -> os.stat_result:
    """``np.save`` to ``path`` atomically (:func:`write_atomic`, whose stat it returns); ``np.load``
    reads it back."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # (not for every array: it makes a 0-d array 1-d)
    if array.dtype.hasobject:
        raise ValueError(f"{path}: object arrays are not saved")
    return write_atomic(path, _npy_header(array.dtype.str, array.shape), array)


@functools.lru_cache(maxsize=1024)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` (format 1.0) header of a C-ordered array: the same bytes ``np.save`` writes
    (cached: a shard writes many matrices of few shapes)."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (its zip entries carry no time: the same arrays give the
    same bytes)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def records(frame: "pd.DataFrame") -> list[dict[Any, Any]]:  # noqa: F821
    """``frame.to_dict("records")`` (Python scalars, labels as keys), column by column: ~35 us
    for a 50-row, 5-column frame where pandas takes ~300 us (a shard job converts a few)."""
    columns = list(frame.columns)
    if not columns:
        return [{} for _ in range(len(frame))]
    series = [frame.iloc[:, i].tolist() for i in range(len(columns))]
    return [dict(zip(columns, values, strict=True)) for values in zip(*series, strict=True)]


def frame_of(rows: list[dict[Any, Any]], columns: list[str]) -> "pd.DataFrame":  # noqa: F821
    """``pd.DataFrame(rows, columns=columns)``; with no rows, the same empty frame (object columns)
    in a fifth of the time."""
    import pandas as pd

    if rows:
        return pd.DataFrame(rows, columns=columns)
    return pd.DataFrame({c: np.array([], dtype=object) for c in columns})


def read_csv(path: str | Path) -> "pd.DataFrame":  # noqa: F821
    """Read one of our CSV tables with every id-like column kept as text.

    ``key`` must be text: a SHA-1 such as ``4e4924939249...`` looks like a float with a huge exponent,
    on which pandas' C parser (2.x, pandas-dev/pandas#63089) overflows and crashes, about once per
    thousand clips.
    """
    import pandas as pd

    return pd.read_csv(path, dtype={"id": str, "clip_id": str, "label": str, "group": str, "path": str,
                                     "key": str, "split": str, "stamp": str},
                       keep_default_na=False, na_values=[""])


def write_wav_float32(path: str | Path, audio: np.ndarray, sample_rate: int) -> os.stat_result:
    """Atomically write a 32-bit float WAV (``audio`` shaped ``(n,)`` or ``(n, channels)``).

    A plain RIFF header plus the samples, through :func:`write_atomic`: libsndfile (and
    :func:`read_wav_float32`) read it back bit-exactly, at a fraction of ``soundfile.write``'s cost
    (which also syncs every file it opens by path).
    """
    data = np.ascontiguousarray(audio, dtype="<f4")
    channels = 1 if data.ndim == 1 else data.shape[1]
    return write_atomic(path, _wav_float32_header(data.shape[0], channels, sample_rate), data)


def _wav_float32_header(frames: int, channels: int, sample_rate: int) -> bytes:
    """The 56-byte RIFF header (fmt: IEEE float, fact chunk) of :func:`write_wav_float32`."""
    import struct

    n_bytes = frames * channels * 4
    return b"".join([
        b"RIFF", struct.pack("<I", 36 + 12 + n_bytes), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, 3, channels, sample_rate, sample_rate * channels * 4, channels * 4, 32),
        b"fact", struct.pack("<II", 4, frames),
        b"data", struct.pack("<I", n_bytes),
    ])


def read_wav_float32(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV as float32, ``(n,)`` mono or ``(n, channels)``, and its rate: ``soundfile.read``.

    A file with exactly the header :func:`write_wav_float32` writes and the size it announces
    (every processed clip) is read with one ``np.fromfile`` (a fifth of soundfile's cost on a
    short clip); anything else goes through ``soundfile.read(dtype="float32")``, whose errors
    (``soundfile.LibsndfileError``, ``OSError``) propagate.
    """
    import struct

    with open(path, "rb") as fh:
        head = fh.read(56)
        if len(head) == 56 and head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt ":
            channels, sample_rate = struct.unpack_from("<HI", head, 22)
            n_bytes = struct.unpack_from("<I", head, 52)[0]
            size = os.fstat(fh.fileno()).st_size
            if (channels and n_bytes % (4 * channels) == 0 and size == 56 + n_bytes
                    and head == _wav_float32_header(n_bytes // (4 * channels), channels, sample_rate)):
                data = np.fromfile(fh, dtype="<f4", count=n_bytes // 4)
                return (data if channels == 1 else data.reshape(-1, channels)), sample_rate
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32", always_2d=False)
    return y, int(sr)


def read_ahead(items: Sequence[T], path_of: Callable[[T], str | Path | None], *, max_bytes: int = 32 << 20,
               max_files: int = 16) -> Iterator[T]:
    """Yield ``items`` in order while the files of the next ones are read into the page cache.

    A stage reads its clips one after the other; each read of a file that is not cached waits
    for the disk (~0.8 ms for a 0.1 MB clip, ~4 ms for a 5 MB one on the machine of the
    benchmark) while the core idles. Before yielding an item, this asks the kernel
    (``posix_fadvise(POSIX_FADV_WILLNEED)``, which starts the reads and returns) for the files
    of the items from that one on, up to ``max_files`` files or ``max_bytes`` bytes ahead
    (always at least the current file): the disk works on the next clips while this one is
    decoded and computed. Nothing is read into the process, so memory does not grow; the page
    cache may hold up to ``max_bytes`` more.

    ``path_of(item)`` gives the file the consumer will read for ``item``, or ``None`` when it
    reads none (a clip reused from the cache). A file that cannot be opened is skipped: its
    reader reports the error. Where ``os.posix_fadvise`` does not exist (macOS, Windows) the
    items are simply yielded.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        yield from items
        return
    n = len(items)
    window: deque[tuple[int, int]] = deque()  # (item index, bytes) advised and not yet consumed
    in_flight = 0
    ahead = 0  # next item to consider
    for i in range(n):
        while window and window[0][0] < i:
            in_flight -= window.popleft()[1]
        while ahead < n and (ahead <= i or (len(window) < max_files and in_flight < max_bytes)):
            path = path_of(items[ahead])
            if path is not None:
                size = _advise(advise, path, os.POSIX_FADV_WILLNEED)
                if size is not None:
                    window.append((ahead, size))
                    in_flight += size
            ahead += 1
        yield items[i]


def drop_cached(path: str | Path) -> None:
    """Tell the kernel that ``path``'s cached pages will not be read again
    (``posix_fadvise(POSIX_FADV_DONTNEED)``; clean pages are freed at once, the file is untouched).

    For input read once per run (``process`` decodes each raw file once): a dataset larger than
    memory then does not push out of the page cache the processed clips that ``features`` reads
    next, and the pages freed are the next ones the kernel hands out for this process's writes.
    On a virtual machine that returns free memory to its host (the benchmark's), a page the guest
    has not touched lately costs ~10 us to fault in; reusing freed ones cut the CPU time of
    ``process`` + ``features`` by 10-14 %. A later run that must decode the files again reads
    them from disk. A no-op where ``os.posix_fadvise`` does not exist or the file cannot be opened.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        _advise(advise, path, os.POSIX_FADV_DONTNEED)


def _advise(advise: Callable[..., None], path: str | Path, advice: int) -> int | None:
    """Give ``advice`` about the whole of ``path``; its size, or ``None`` if it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        advise(fd, 0, 0, advice)
        return size
    except OSError:
        return 0
    finally:
        os.close(fd)
