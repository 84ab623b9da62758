"""Per-shard stores of per-clip matrices: one ``.npy`` file per shard and matrix kind, not one per clip.

A store ``<stage_dir>/<kind>/<store>.npy`` (``data/features/logmel/003.npy``, or the processed audio
``data/process/audio/003.npy``) holds the matrices of a shard's clips one after another,
frames first: float32, C order, shape ``(total_frames, n_bins)``. A clip is the row block
``offset .. offset + frames``, named in the shard table's ``store``, ``offset`` and ``frames`` columns
(:data:`STORE_COLUMNS`; every matrix kind of a clip has the same frames, so one offset serves them
all). Frames first keeps each clip contiguous in the file: a memory map reads only the pages of the
clips, or of the crops, that are asked for; for audio the block is the ``(samples, channels)`` frame
layout of a WAV file. Plain NumPy files because they need nothing but NumPy to
read, memory-map without a copy, and are written in one sequential pass (benchmarks/README.md: why
not HDF5, Zarr or Arrow).

A store is written under a temporary name and renamed into place when complete (:class:`StoreWriter`),
so a reader never sees a partial one, and the files DVC tracks grow with the shards, not the clips.
A shard job appends its new clips to part stores (:class:`ShardParts`), closed at each checkpoint so
that a killed job's cache names complete files, then writes the shard's stores from the old stores
and the parts in one pass (:func:`assemble`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage.io import atomic_path, stamp

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
        ``<features_dir>/<name>``, e.g. ``data/features/logmel``, or ``data/process/audio``.
    stage : str
        The stage that writes them, named in the error when a store is missing.
    """

    def __init__(self, folder: str | Path, *, stage: str = "features") -> None:
        self.folder = Path(folder)
        self.stage = stage
        self._open: dict[str, np.ndarray] = {}

    def store(self, name: str) -> np.ndarray:
        if name not in self._open:
            path = self.folder / f"{name}.npy"
            try:
                self._open[name] = open_store(path)
            except FileNotFoundError:
                raise FileNotFoundError(f"{path}: no such store (run the {self.stage} stage again)") from None
        return self._open[name]

    def block(self, store: str, offset: int, frames: int) -> np.ndarray:
        """The ``(frames, n_bins)`` rows at ``offset`` of ``store`` as stored (for audio: ``(samples,
        channels)``); raises ``ValueError`` when the store is shorter than the table says (a store of
        another run)."""
        data = self.store(str(store))
        if int(offset) + int(frames) > data.shape[0] or int(offset) < 0:
            raise ValueError(f"{self.folder / f'{store}.npy'}: frames {offset}..{int(offset) + int(frames)} "
                             f"asked, the store has {data.shape[0]} (stale tables? run the stage again)")
        return data[int(offset):int(offset) + int(frames)]

    def read(self, store: str, offset: int, frames: int) -> np.ndarray:
        """:meth:`block` as a new array read from the file, not a view of the memory map: what a job
        reads once (a shard's audio, a store being assembled) does not stay mapped in it, nor count in
        its resident memory."""
        data = self.store(str(store))
        self.block(store, offset, frames)  # the bounds check
        out = np.empty((int(frames), data.shape[1]), dtype=np.float32)
        with open(self.folder / f"{store}.npy", "rb") as fh:
            fh.seek(data.offset + int(offset) * data.shape[1] * 4)
            if fh.readinto(out.data) != out.nbytes:
                raise ValueError(f"{self.folder / f'{store}.npy'}: shorter than its header says")
        return out

    def matrix(self, store: str, offset: int, frames: int) -> np.ndarray:
        """The ``(n_bins, frames)`` matrix at ``offset`` of ``store`` (:meth:`block` transposed)."""
        return self.block(store, offset, frames).T

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


class ShardParts:
    """The part stores a shard job appends its new clips to: ``<kind>/parts/<store>-<random>.npy`` for
    each of ``kinds``, closed (and new ones begun) at each :meth:`seal`, so that a cache written then
    names complete files.

    Parameters
    ----------
    out_dir : path
        The stage folder (``data/features``, ``data/process``).
    kinds : sequence of str
        The matrix kinds, one folder each (``logmel``, ``mfcc``; ``audio``).
    store_name : str
        The shard's store (``003``); a clip may go to another store of the shard named
        ``<store_name>-<suffix>`` (audio with another channel count), which has parts of its own.
    """

    def __init__(self, out_dir: str | Path, kinds: Sequence[str], store_name: str) -> None:
        self.out_dir, self.kinds, self.store_name = Path(out_dir), tuple(kinds), store_name
        self.writers: dict[str, tuple[str, list[StoreWriter]]] = {}  # target store -> (part, writers)
        self.stamps: dict[str, str] = {}

    def append(self, matrices: Sequence[np.ndarray], store: str | None = None) -> tuple[str, int]:
        """Write one clip's ``(n_bins, frames)`` matrices (in ``kinds`` order) towards ``store`` (the
        shard's store by default); returns ``(part name, offset)`` for the clip's table row."""
        if not self.kinds:
            return "", 0
        target = store or self.store_name
        if target not in self.writers:
            # A name no earlier part can have: a killed run's parts may be read as this run's cache.
            name = f"parts/{target}-{secrets.token_hex(8)}"
            self.writers[target] = (name, [StoreWriter(self.out_dir / kind / f"{name}.npy", m.shape[0])
                                           for kind, m in zip(self.kinds, matrices, strict=True)])
        name, writers = self.writers[target]
        offsets = {w.append(m) for w, m in zip(writers, matrices, strict=True)}
        if len(offsets) != 1:
            raise ValueError(f"matrices of one clip differ in frames ({[m.shape for m in matrices]})")
        return name, offsets.pop()

    def seal(self) -> None:
        """Close every part being written; :attr:`stamps` maps each to its files' ``;``-joined stamps."""
        for name, writers in self.writers.values():
            self.stamps[name] = ";".join(stamp(os.stat(w.close())) for w in writers)
        self.writers = {}

    def abort(self) -> None:
        for _, writers in self.writers.values():
            for w in writers:
                w.abort()
        self.writers = {}

    def stamp_rows(self, done: pd.DataFrame) -> pd.DataFrame:
        """``done`` (rows with ``store`` and ``stamp``) after :meth:`seal`, each unstamped row stamped."""
        self.seal()
        if len(done):
            missing = done["stamp"].isna()
            done.loc[missing, "stamp"] = done.loc[missing, "store"].map(self.stamps)
        return done

    def finish(self, table: pd.DataFrame, *, checkpoint: Callable[[pd.DataFrame], None] | None = None,
               n_shards: int | None = None, name_of: Callable[[int], str] | None = None) -> pd.DataFrame:
        """End a shard job: its stores assembled from ``table`` (:func:`assemble`), the table passed to
        ``checkpoint`` (the cache names the stores before the parts go), every part of the shard
        removed and, with ``n_shards``, the files of shards ``n_shards`` and above (the kinds' stores
        and parts, ``shards/``, ``cache/``: :func:`remove_beyond`). Returns the assembled table."""
        table = assemble(self.stamp_rows(table), out_dir=self.out_dir, kinds=self.kinds,
                         store_name=self.store_name, name_of=name_of)
        if checkpoint is not None:
            checkpoint(table)
        self.remove_all()
        if n_shards is not None:
            remove_beyond(self.out_dir, [*self.kinds, *(f"{k}/parts" for k in self.kinds), "shards", "cache"],
                          n_shards)
        return table

    def __enter__(self) -> ShardParts:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.abort()  # a part left open by an error goes; sealed ones stay for the next run

    def remove_all(self) -> None:
        """Every part of this shard, also those a killed run left. The ``parts`` folder stays: another
        shard's job may be creating a part in it at this moment."""
        for kind in self.kinds:
            folder = self.out_dir / kind / "parts"
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            remove_quietly(folder / n for n in names if n.startswith(f"{self.store_name}-") and n.endswith(".npy"))


def assemble(table: pd.DataFrame, *, out_dir: str | Path, kinds: Sequence[str], store_name: str,
             name_of: Callable[[int], str] | None = None) -> pd.DataFrame:
    """Write a shard's stores from its rows' current places (an earlier store, parts), in ``table``
    order, and return ``table`` pointed at them (``store``, ``offset``; ``stamp`` the stores'
    ``;``-joined stamps). Rows go to the store ``name_of(n_bins)`` of their first kind's matrix
    (``store_name`` for all without it). Stores of ``store_name`` (``<store_name>.npy`` and
    ``<store_name>-*.npy``) that no row is in any more are deleted. Nothing is rewritten when the
    rows already are the stores as they stand, in order, and a store whose rows are exactly one part,
    in order (a shard computed afresh), is that part renamed, not a copy."""
    out_dir = Path(out_dir)
    if not kinds:
        return table.assign(store=store_name, offset=0) if len(table) else table
    first = Stores(out_dir / kinds[0])
    places = list(zip(table["store"].astype(str), table["offset"], table["frames"], strict=True))
    targets = ([store_name] * len(places) if name_of is None
               else [name_of(first.store(place[0]).shape[1]) for place in places])
    out = table.copy()
    stamps: dict[str, str] = {}
    for target in dict.fromkeys(targets):
        rows = [i for i, t in enumerate(targets) if t == target]
        frames = np.asarray([int(places[i][2]) for i in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(frames)[:-1]])
        paths = [out_dir / kind / f"{target}.npy" for kind in kinds]
        in_order = (np.asarray([int(places[i][1]) for i in rows], dtype=np.int64) == offsets).all()
        names = {places[i][0] for i in rows}
        source = names.pop() if len(names) == 1 and in_order else None
        if source == target and _holds(out_dir, kinds, target, int(frames.sum())):
            pass  # already the store, as it stands
        elif source is not None and source.startswith("parts/") and _holds(out_dir, kinds, source, int(frames.sum())):
            for kind, path in zip(kinds, paths, strict=True):  # a fresh shard: its one part is the store
                os.replace(out_dir / kind / f"{source}.npy", path)
        else:
            for kind, path in zip(kinds, paths, strict=True):
                sources = Stores(out_dir / kind)
                with StoreWriter(path, sources.matrix(*places[rows[0]]).shape[0]) as writer:
                    for i in rows:
                        writer.append(sources.read(*places[i]).T)
        stamps[target] = ";".join(stamp(os.stat(p)) for p in paths)
        out.iloc[rows, out.columns.get_loc("store")] = target
        out.iloc[rows, out.columns.get_loc("offset")] = offsets
    for kind in kinds:  # the shard's stores no row is in (all its clips left, or changed channels)
        folder = out_dir / kind
        remove_quietly(p for p in [folder / f"{store_name}.npy", *folder.glob(f"{store_name}-*.npy")]
                       if p.stem not in stamps)
    if len(out):
        out["offset"] = out["offset"].astype(np.int64)
        out["stamp"] = [stamps[t] for t in targets]
    return out


def _holds(out_dir: Path, kinds: Sequence[str], name: str, n_frames: int) -> bool:
    """Whether the stores ``name`` of every kind exist with exactly ``n_frames`` frames."""
    return all((out_dir / kind / f"{name}.npy").is_file() and open_store(out_dir / kind / f"{name}.npy").shape[0]
               == n_frames for kind in kinds)


def remove_beyond(out_dir: str | Path, folders: Sequence[str], n_shards: int) -> None:
    """Delete the files of ``folders`` under ``out_dir`` (a kind's stores, its ``parts``, the shard
    tables, the caches) named after shards numbered ``n_shards`` or more (``007.npy``,
    ``007-2ch.npy``, ``007.rejected.csv``): a run with more shards left them, and no job of this run
    writes them."""
    for folder in folders:
        for path in Path(out_dir, folder).glob("[0-9]*"):
            digits = path.name[:len(path.name) - len(path.name.lstrip("0123456789"))]
            if int(digits) >= n_shards and path.is_file():
                remove_quietly([path])


def remove_quietly(paths: Iterable[str | os.PathLike[str]]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
