"""Per-shard stores of per-clip matrices: one ``.npy`` file per shard and matrix kind, not one per clip.

A store ``<features_dir>/<name>/<store>.npy`` holds the matrices of a shard's clips one after another,
frames first: float32, C order, shape ``(total_frames, n_bins)``. A clip is the row block
``offset .. offset + frames``, named in the shard table's ``store``, ``offset`` and ``frames`` columns
(:data:`STORE_COLUMNS`; every matrix kind of a clip has the same frames, so one offset serves them
all). Frames first keeps each clip contiguous in the file: a memory map reads only the pages of the
clips, or of the crops, that are asked for. Plain NumPy files because they need nothing but NumPy to
read, memory-map without a copy, and are written in one sequential pass (benchmarks/README.md: why
not HDF5, Zarr or Arrow).

A store is written under a temporary name and renamed into place when complete (:class:`StoreWriter`),
so a reader never sees a partial one, and the files DVC tracks grow with the shards, not the clips.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from soundstage.io import atomic_path

#: The columns of a shard (and modelling) table that locate a clip's matrices in its shard's stores.
STORE_COLUMNS = ("store", "offset", "frames")
#: Bytes the header of a store being written takes: room for any shape, patched when the store closes.
_HEADER_BYTES = 128


def _header(n_frames: int, n_bins: int) -> bytes:
    """A ``.npy`` version 1.0 header of a float32 C-order ``(n_frames, n_bins)`` array, padded with
    spaces to :data:`_HEADER_BYTES` (the format allows any padding to a multiple of 64 bytes)."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n_frames}, {n_bins}), }}"
    head = b"\x93NUMPY\x01\x00"
    room = _HEADER_BYTES - len(head) - 2
    body = text.ljust(room - 1).encode("latin1") + b"\n"
    if len(body) != room:  # pragma: no cover - a shape of more than ~80 digits
        raise ValueError(f"store shape ({n_frames}, {n_bins}) does not fit the header")
    return head + len(body).to_bytes(2, "little") + body


class StoreWriter:
    """Append ``(n_bins, frames)`` matrices to a new store, frames first; :meth:`close` makes it
    appear at ``path`` at once (written as a temporary file beside it, then renamed); a writer that
    is dropped or :meth:`abort`-ed leaves nothing behind.

    Parameters
    ----------
    path : path
        The store to write (``<name>/<store>.npy``); an existing one is replaced on :meth:`close`.
    n_bins : int
        Rows of every matrix (``n_mels`` for the log-mel).
    """

    def __init__(self, path: str | Path, n_bins: int) -> None:
        self.path = Path(path)
        self.n_bins = int(n_bins)
        self.frames = 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed by close() or abort()
        self._fh.write(_header(0, self.n_bins))

    def append(self, matrix: np.ndarray) -> int:
        """Write one ``(n_bins, frames)`` matrix; returns its ``offset`` (frames before it)."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != self.n_bins:
            raise ValueError(f"{self.path}: expected ({self.n_bins}, frames), got {matrix.shape}")
        offset = self.frames
        self._fh.write(np.ascontiguousarray(matrix.T, dtype=np.float32).data)
        self.frames += matrix.shape[1]
        return offset

    def close(self) -> Path:
        """Patch the header with the final shape and rename the store into place."""
        self._fh.seek(0)
        self._fh.write(_header(self.frames, self.n_bins))
        self._fh.close()
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop the store being written (the previous one at ``path``, if any, stays)."""
        if not self._fh.closed:
            self._fh.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def open_store(path: str | Path) -> np.ndarray:
    """A store, memory-mapped read-only: ``(total_frames, n_bins)`` float32."""
    return np.load(path, mmap_mode="r")


def clip_matrix(store: np.ndarray, offset: int, frames: int) -> np.ndarray:
    """One clip's ``(n_bins, frames)`` matrix, a view of ``store`` (nothing read until it is used)."""
    return store[int(offset):int(offset) + int(frames)].T


class Stores:
    """Open stores of one matrix kind, by store name, each memory-mapped once.

    Parameters
    ----------
    folder : path
        ``<features_dir>/<name>``, e.g. ``data/features/logmel``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._open: dict[str, np.ndarray] = {}

    def store(self, name: str) -> np.ndarray:
        if name not in self._open:
            path = self.folder / f"{name}.npy"
            try:
                self._open[name] = open_store(path)
            except FileNotFoundError:
                raise FileNotFoundError(f"{path}: no such store (run the features stage)") from None
        return self._open[name]

    def matrix(self, store: str, offset: int, frames: int) -> np.ndarray:
        """The ``(n_bins, frames)`` matrix at ``offset`` of ``store``; raises ``ValueError`` when the
        store is shorter than the table says (a store of another run)."""
        data = self.store(str(store))
        if int(offset) + int(frames) > data.shape[0] or int(offset) < 0:
            raise ValueError(f"{self.folder / f'{store}.npy'}: frames {offset}..{int(offset) + int(frames)} "
                             f"asked, the store has {data.shape[0]} (stale tables? run the features stage)")
        return clip_matrix(data, offset, frames)

    def matrices(self, rows: Iterable[tuple[str, int, int]]) -> list[np.ndarray]:
        """:meth:`matrix` of each ``(store, offset, frames)``."""
        return [self.matrix(*row) for row in rows]


def load_matrices(rows, folder: str | Path) -> list[np.ndarray]:
    """The matrices of the table ``rows`` (with :data:`STORE_COLUMNS`) from the stores in ``folder``,
    as memory-mapped ``(n_bins, frames)`` views, in row order."""
    missing = [c for c in STORE_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the store columns {missing}: a features table written before stores?")
    return Stores(folder).matrices(zip(rows["store"].astype(str), rows["offset"], rows["frames"], strict=True))


def remove_quietly(paths: Iterable[str | os.PathLike[str]]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
