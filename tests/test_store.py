"""soundstage.store: per-shard stores of per-clip matrices, written atomically, read by offset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soundstage.store import Stores, StoreWriter, load_matrices, open_store


def clips(rng: np.random.Generator, n_bins: int = 5) -> list[np.ndarray]:
    return [rng.standard_normal((n_bins, t)).astype(np.float32) for t in (3, 1, 7, 4)]


def test_a_store_gives_back_every_matrix_by_offset(tmp_path, rng) -> None:
    mats = clips(rng)
    with StoreWriter(tmp_path / "s" / "000.npy", 5) as w:
        offsets = [w.append(m) for m in mats]
    assert offsets == [0, 3, 4, 11]
    data = open_store(tmp_path / "s" / "000.npy")
    assert data.shape == (15, 5) and data.dtype == np.float32 and isinstance(data, np.memmap)
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "000.npy"), np.concatenate(mats, axis=1).T)
    rows = pd.DataFrame({"store": ["000"] * 4, "offset": offsets, "frames": [m.shape[1] for m in mats]})
    for got, want in zip(load_matrices(rows.iloc[::-1], tmp_path / "s"), mats[::-1], strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_a_store_appears_only_when_complete(tmp_path, rng) -> None:
    path = tmp_path / "000.npy"
    with StoreWriter(path, 5) as w:
        w.append(clips(rng)[0])
    before = path.read_bytes()
    w = StoreWriter(path, 5)
    w.append(clips(rng)[2])
    assert path.read_bytes() == before  # the old store stays until close
    w.abort()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["000.npy"]
    with pytest.raises(RuntimeError), StoreWriter(path, 5) as w:
        w.append(clips(rng)[1])
        raise RuntimeError("killed")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["000.npy"]
    empty = tmp_path / "empty.npy"
    StoreWriter(empty, 5).close()
    assert open_store(empty).shape == (0, 5)


def test_bad_matrices_and_stale_tables_are_refused(tmp_path, rng) -> None:
    with StoreWriter(tmp_path / "000.npy", 5) as w:
        with pytest.raises(ValueError, match=r"expected \(5, frames\), got \(4, 3\)"):
            w.append(np.zeros((4, 3), np.float32))
        w.append(clips(rng)[0])
    stores = Stores(tmp_path)
    assert stores.matrix("000", 0, 3).shape == (5, 3)
    with pytest.raises(ValueError, match=r"000.npy: frames 2..6 asked, the store has 3"):
        stores.matrix("000", 2, 4)
    with pytest.raises(FileNotFoundError, match=r"001.npy: no such store"):
        stores.matrix("001", 0, 1)
    with pytest.raises(ValueError, match="store columns"):
        load_matrices(pd.DataFrame({"id": ["a"]}), tmp_path)
