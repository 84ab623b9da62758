"""Atomic file output: write to a temporary file in the destination folder, then rename.

A killed run therefore never leaves a half-written output behind; running it again is enough.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    ``suffix`` defaults to the destination's suffix, so writers that pick a format by extension
    (numpy, soundfile, pandas) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
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


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def read_csv(path: str | Path) -> "pd.DataFrame":  # noqa: F821
    """Read one of our CSV tables with every id-like column kept as text.

    ``key`` must be text: a SHA-1 such as ``4e4924939249...`` looks like a float with a huge exponent,
    on which pandas' C parser (2.x, pandas-dev/pandas#63089) overflows and crashes, about once per
    thousand clips.
    """
    import pandas as pd

    return pd.read_csv(path, dtype={"id": str, "clip_id": str, "label": str, "group": str, "path": str,
                                     "key": str, "split": str},
                       keep_default_na=False, na_values=[""])


def write_wav_float32(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Atomically write a 32-bit float WAV (``audio`` shaped ``(n,)`` or ``(n, channels)``).

    A plain RIFF header plus one ``tofile`` of the samples: libsndfile reads it back bit-exactly, and
    it costs a third of ``soundfile.write`` (which also syncs every file it opens by path).
    """
    import struct

    data = np.ascontiguousarray(audio, dtype="<f4")
    channels = 1 if data.ndim == 1 else data.shape[1]
    n_bytes = data.size * 4
    header = b"".join([
        b"RIFF", struct.pack("<I", 36 + 12 + n_bytes), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, 3, channels, sample_rate, sample_rate * channels * 4, channels * 4, 32),
        b"fact", struct.pack("<II", 4, data.shape[0]),
        b"data", struct.pack("<I", n_bytes),
    ])
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        data.tofile(fh)
