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
    with pytest.raises(FileNotFoundError, match=r"001.npy: no such store \(run the features stage again\)"):
        stores.matrix("001", 0, 1)
    with pytest.raises(ValueError, match="store columns"):
        load_matrices(pd.DataFrame({"id": ["a"]}), tmp_path)


def test_parts_assemble_into_one_store_per_target_in_table_order(tmp_path, rng) -> None:
    """Clips appended to parts (two targets: a 1-bin and a 2-bin store of one shard, as the process
    stage's mono and stereo audio) and sealed, plus a clip of the previous store, are assembled into
    ``003.npy`` and ``003-2ch.npy`` in table order, each clip's block bit for bit; the parts go, and a
    second assembly of the same rows rewrites nothing."""
    from soundstage.store import ShardParts, assemble

    old = [rng.standard_normal((1, n)).astype(np.float32) for n in (5, 3)]
    with StoreWriter(tmp_path / "audio" / "003.npy", 1) as w:
        old_offsets = [w.append(m) for m in old]
    parts = ShardParts(tmp_path, ["audio"], "003")
    new = [rng.standard_normal((c, n)).astype(np.float32) for c, n in ((1, 4), (2, 6), (1, 2), (2, 1))]
    name_of = {1: "003", 2: "003-2ch"}.get
    rows = [{"id": "old1", "store": "003", "offset": old_offsets[1], "frames": 3, "stamp": "x"}]
    for i, m in enumerate(new):
        where, offset = parts.append([m], store=name_of(m.shape[0]))
        rows.append({"id": f"new{i}", "store": where, "offset": offset, "frames": m.shape[1], "stamp": None})
    table = parts.stamp_rows(pd.DataFrame(rows))
    assert table["stamp"].notna().all() and len(set(table["store"])) == 3
    out = assemble(table, out_dir=tmp_path, kinds=["audio"], store_name="003", name_of=name_of)
    parts.remove_all()
    assert sorted(p.name for p in (tmp_path / "audio").glob("*.npy")) == ["003-2ch.npy", "003.npy"]
    assert not any((tmp_path / "audio" / "parts").iterdir())
    assert list(out["store"]) == ["003", "003", "003-2ch", "003", "003-2ch"]
    assert list(out["offset"]) == [0, 3, 0, 7, 6]
    stores = Stores(tmp_path / "audio")
    for m, row in zip([old[1], *new], out.itertuples(), strict=True):
        np.testing.assert_array_equal(stores.matrix(row.store, row.offset, row.frames), m)
    assert open_store(tmp_path / "audio" / "003.npy").shape == (9, 1)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()}
    again = assemble(out, out_dir=tmp_path, kinds=["audio"], store_name="003", name_of=name_of)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()} == before
    assert list(again["stamp"]) == list(out["stamp"])


def test_assemble_deletes_the_shards_stores_no_row_is_in(tmp_path, rng) -> None:
    """When the stereo clips leave (or every clip), their store goes; another shard's stores stay."""
    from soundstage.store import assemble

    for name, bins in (("003", 1), ("003-2ch", 2), ("004", 1)):
        with StoreWriter(tmp_path / "audio" / f"{name}.npy", bins) as w:
            w.append(rng.standard_normal((bins, 4)).astype(np.float32))
    name_of = {1: "003", 2: "003-2ch"}.get
    table = pd.DataFrame([{"id": "a", "store": "003", "offset": 0, "frames": 4, "stamp": None}])
    assemble(table, out_dir=tmp_path, kinds=["audio"], store_name="003", name_of=name_of)
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == ["003.npy", "004.npy"]
    assemble(table.iloc[:0], out_dir=tmp_path, kinds=["audio"], store_name="003", name_of=name_of)
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == ["004.npy"]


def test_files_of_shards_beyond_the_count_are_removed(tmp_path, rng) -> None:
    """After n_shards went 8 -> 2, the stores, parts, shard tables and caches of shards 2..7 go; shards
    0 and 1 stay, and so do files that are not a shard's and folders not named."""
    from soundstage.store import remove_beyond

    names = ["audio/000.npy", "audio/001-2ch.npy", "audio/002.npy", "audio/007-2ch.npy", "audio/010.npy",
             "audio/all.npy", "audio/parts/001-ab.npy", "audio/parts/005-cd.npy", "shards/001.csv",
             "shards/003.csv", "shards/003.rejected.csv", "cache/004.csv", "cache/000.csv", "other/005.csv"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    remove_beyond(tmp_path, ["audio", "audio/parts", "shards", "cache"], 2)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["audio/000.npy", "audio/001-2ch.npy", "audio/all.npy", "audio/parts/001-ab.npy",
                    "cache/000.csv", "other/005.csv", "shards/001.csv"]


def test_a_fresh_shards_one_part_becomes_its_store_without_a_copy(tmp_path, rng) -> None:
    """Every row in one part, in order: the part is renamed into place (same inode), for each kind;
    with a row of another part beside it the store is written anew."""
    from soundstage.store import ShardParts, assemble

    parts = ShardParts(tmp_path, ["logmel", "mfcc"], "000")
    rows = []
    for i, n in enumerate((3, 5)):
        where, offset = parts.append([rng.standard_normal((4, n)).astype(np.float32),
                                      rng.standard_normal((2, n)).astype(np.float32)])
        rows.append({"id": f"c{i}", "store": where, "offset": offset, "frames": n, "stamp": None})
    table = parts.stamp_rows(pd.DataFrame(rows))
    inodes = {kind: (tmp_path / kind / f"{table['store'][0]}.npy").stat().st_ino for kind in ("logmel", "mfcc")}
    out = assemble(table, out_dir=tmp_path, kinds=["logmel", "mfcc"], store_name="000")
    for kind in ("logmel", "mfcc"):
        assert (tmp_path / kind / "000.npy").stat().st_ino == inodes[kind]
        assert not list((tmp_path / kind / "parts").iterdir())
    assert list(out["offset"]) == [0, 3] and set(out["store"]) == {"000"}

    more = ShardParts(tmp_path, ["logmel", "mfcc"], "000")
    where, offset = more.append([np.ones((4, 2), np.float32), np.ones((2, 2), np.float32)])
    both = more.stamp_rows(pd.concat([out, pd.DataFrame([{"id": "c2", "store": where, "offset": offset,
                                                          "frames": 2, "stamp": None}])], ignore_index=True))
    again = assemble(both, out_dir=tmp_path, kinds=["logmel", "mfcc"], store_name="000")
    assert (tmp_path / "logmel" / "000.npy").stat().st_ino != inodes["logmel"]
    assert open_store(tmp_path / "logmel" / "000.npy").shape == (10, 4) and list(again["offset"]) == [0, 3, 8]


def test_read_copies_a_block_out_of_the_file_not_the_map(tmp_path, rng) -> None:
    """``Stores.read`` gives the block's values as a new in-memory array (not a memory-map view), and
    refuses rows past the store's end as ``block`` does."""
    ms = [rng.standard_normal((3, n)).astype(np.float32) for n in (4, 7, 1)]
    with StoreWriter(tmp_path / "k" / "000.npy", 3) as w:
        offsets = [w.append(m) for m in ms]
    stores = Stores(tmp_path / "k")
    for m, offset in zip(ms, offsets, strict=True):
        got = stores.read("000", offset, m.shape[1])
        np.testing.assert_array_equal(got, m.T)
        assert not isinstance(got, np.memmap) and got.base is None and got.flags.writeable
    with pytest.raises(ValueError, match="asked, the store has 12"):
        stores.read("000", 10, 3)


def test_removing_a_shards_parts_leaves_the_folder_and_other_shards_parts(tmp_path, rng) -> None:
    """Jobs of several shards share ``<kind>/parts``: one job's clean-up removes its own parts only and
    never the folder (another job may be creating a part in it; a job that removed it failed CI once),
    and a folder already gone is no error."""
    from soundstage.store import ShardParts

    mine, theirs = ShardParts(tmp_path, ["logmel"], "000"), ShardParts(tmp_path, ["logmel"], "001")
    for parts in (mine, theirs):
        parts.append([rng.standard_normal((2, 3)).astype(np.float32)])
        parts.seal()
    (tmp_path / "logmel" / "parts" / "000-left-by-a-killed-run.npy").write_bytes(b"x")
    mine.remove_all()
    assert [p.name.split("-")[0] for p in (tmp_path / "logmel" / "parts").iterdir()] == ["001"]
    theirs.remove_all()
    assert (tmp_path / "logmel" / "parts").is_dir() and not any((tmp_path / "logmel" / "parts").iterdir())
    (tmp_path / "logmel" / "parts").rmdir()
    mine.remove_all()  # the folder gone meanwhile
