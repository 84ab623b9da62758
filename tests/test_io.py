"""Atomic writes and per-shard caches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soundstage import cache, io


def test_atomic_path_replaces_only_on_success(tmp_path: Path):
    dest = tmp_path / "sub" / "table.csv"
    io.write_csv(dest, pd.DataFrame({"id": ["a"], "x": [1]}))
    before = dest.read_text()
    with pytest.raises(RuntimeError), io.atomic_path(dest) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("killed")
    assert dest.read_text() == before
    assert [p.name for p in dest.parent.iterdir()] == ["table.csv"]  # no temp file left behind


def test_atomic_path_keeps_suffix_for_format_sniffing_writers(tmp_path: Path):
    with io.atomic_path(tmp_path / "x.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2]


def test_writers_roundtrip(tmp_path: Path):
    io.write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(2), "p": tmp_path})
    assert (tmp_path / "m.json").read_text().count("0.5") == 1
    io.save_npz(tmp_path / "s.npz", mean=np.ones(3))
    assert np.load(tmp_path / "s.npz")["mean"].tolist() == [1, 1, 1]
    frame = pd.DataFrame({"id": ["007", "1e3"], "label": ["NA", "x"], "group": ["", "g"]})
    io.write_csv(tmp_path / "t.csv", frame)
    back = io.read_csv(tmp_path / "t.csv")
    assert back["id"].tolist() == ["007", "1e3"]  # ids stay text, never numbers
    assert back["label"].tolist() == ["NA", "x"]  # "NA" is a label, not a missing value
    assert pd.isna(back["group"][0])


def test_json_rejects_unknown_types(tmp_path: Path):
    with pytest.raises(TypeError):
        io.write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_cache_key_is_stable_and_sensitive():
    assert cache.key_of("a", {"x": 1, "y": [1, 2]}) == cache.key_of("a", {"y": [1, 2], "x": 1})
    assert cache.key_of("a", {"x": 1}) != cache.key_of("a", {"x": 2})


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_every_atomic_writer_respects_the_umask(tmp_path: Path, umask_027: int):
    """Teams share project folders: outputs get ``0o666 & ~umask`` like any new file (mkstemp's
    temporary files are 0600, which is what every atomic_path output used to get)."""
    io.write_csv(tmp_path / "a.csv", pd.DataFrame({"id": ["a"]}))
    io.write_json(tmp_path / "b.json", {"x": 1})
    io.save_npz(tmp_path / "c.npz", x=np.zeros(2))
    io.save_npy(tmp_path / "d.npy", np.zeros(2))
    io.write_parquet(tmp_path / "e.parquet", pd.DataFrame({"x": [1.0]}))
    io.write_wav(tmp_path / "g.wav", np.zeros(8, np.float32), 8000)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.csv", "b.json", "c.npz", "d.npy", "e.parquet", "g.wav"], 0o640)


def test_temporary_names_are_recognizable(tmp_path: Path):
    """What a killed writer leaves behind is named so that the next run can find it."""
    seen = []
    with io.atomic_path(tmp_path / "table.csv") as tmp:
        seen.append(tmp.name)
        tmp.write_text("id\n")
        assert [p.name for p in tmp_path.iterdir()] == [tmp.name] and io.is_temp_name(tmp.name)
    assert not io.is_temp_name("table.csv") and not io.is_temp_name("my.tmp-notes.txt")
    assert io.is_temp_name(f".x.npy{io.TEMP_MARK}123")  # write_atomic's per-process name


def test_stamps_tell_a_rewritten_file_from_the_recorded_one(tmp_path: Path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    st = io.save_npy(a, np.arange(4, dtype=np.float32))
    io.save_npy(b, np.arange(4, dtype=np.float32))
    recorded = cache.stamps([a, b])
    assert recorded == f"{io.stamp(st)};{io.file_stamp(b)}" and io.stamp(st) == io.file_stamp(a)
    io.save_npy(a, np.arange(4, dtype=np.float32) + 1)  # same size, rewritten (by a killed run, say)
    assert cache.stamps([a, b]) != recorded
    b.unlink()
    assert cache.stamps([a, b]) is None and io.file_stamp(b) is None


def test_read_csv_keeps_hash_keys_as_text(tmp_path: Path):
    """A SHA-1 such as '4e49...' parses as a huge float (and crashes pandas' C parser, pandas#63089)."""
    keys = ["4e492493924924924924924924924924924924", "1e10", "0123"]
    io.write_csv(tmp_path / "k.csv", pd.DataFrame({"id": ["a", "b", "c"], "key": keys}))
    assert io.read_csv(tmp_path / "k.csv")["key"].tolist() == keys


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_float_wav_reads_back_bit_exact(tmp_path: Path, rng, channels: int):
    import soundfile as sf

    audio = rng.standard_normal((1001, channels)).astype(np.float32) * 0.3
    if channels == 1:
        audio = audio[:, 0]
    st = io.write_wav(tmp_path / "x.wav", audio, 22050)
    assert io.stamp(st) == io.file_stamp(tmp_path / "x.wav")
    info = sf.info(tmp_path / "x.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, channels, 1001, "FLOAT")
    back, sr = sf.read(tmp_path / "x.wav", dtype="float32")
    assert sr == 22050 and np.array_equal(back, audio)
    if channels > 1:  # (n, channels) given as the transpose of (channels, n), as process does
        io.write_wav(tmp_path / "t.wav", np.ascontiguousarray(audio.T).T, 22050)
        assert np.array_equal(sf.read(tmp_path / "t.wav", dtype="float32")[0], audio)


def test_write_atomic_creates_folders_leaves_no_temp_and_keeps_old_on_failure(tmp_path: Path):
    dest = tmp_path / "new" / "deep" / "a.npy"
    io.save_npy(dest, np.arange(6, dtype=np.float32).reshape(2, 3).T)  # non-contiguous input
    assert np.load(dest).tolist() == [[0, 3], [1, 4], [2, 5]]
    assert dest.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.npy"]

    class Boom:  # a chunk that fails mid-write, as a killed writer would
        def __buffer__(self, flags):
            raise RuntimeError("killed")

    with pytest.raises((RuntimeError, TypeError)):
        io.write_atomic(dest, b"partial", Boom())
    assert np.load(dest).tolist() == [[0, 3], [1, 4], [2, 5]]  # the old file is intact
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.npy"]  # and no temp file is left
    with pytest.raises(ValueError, match="object"):
        io.save_npy(tmp_path / "o.npy", np.array([object()]))
    assert not (tmp_path / "o.npy").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------
# Read-ahead


def _files(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        (folder / f"{k}.bin").write_bytes(b"x" * 100)
        paths.append(os.path.realpath(folder / f"{k}.bin"))
    return paths


@pytest.mark.parametrize(("n", "ahead"), [(10, 3), (5, 8), (4, 0)])
def test_read_ahead_keeps_a_bounded_window_ahead(tmp_path: Path, advised: list[str], n: int, ahead: int) -> None:
    paths = _files(tmp_path, n)
    seen = []
    for i, path in enumerate(io.read_ahead(paths, lambda p: p, ahead=ahead)):
        seen.append(path)
        # When item i is handed out, its file and the next `ahead` ones have been asked for, once.
        assert advised == paths[: min(n, i + ahead + 1)]
    assert seen == paths
    assert set(advised.lengths) <= {0}  # whole files


def test_read_ahead_of_the_first_bytes(tmp_path: Path, advised: list[str]) -> None:
    paths = _files(tmp_path, 3)
    assert list(io.read_ahead(paths, lambda p: p, length=4096)) == paths
    assert advised == paths and advised.lengths == [4096] * 3


def test_read_ahead_skips_items_without_a_file_and_missing_files(tmp_path: Path, advised: list[str]) -> None:
    paths = _files(tmp_path, 2)
    items = [("reused", None), ("gone", str(tmp_path / "missing.wav")), ("a", paths[0]), ("b", paths[1])]
    out = list(io.read_ahead(items, lambda item: item[1]))
    assert out == items  # every item, in order, whatever happens to its file
    assert advised == paths


def test_read_ahead_passes_over_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    import threading

    paths = _files(tmp_path, 2)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    items = [paths[0], str(fifo), paths[1]]
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(io.read_ahead(items, lambda p: p)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "read_ahead blocked on the FIFO"
    assert out == items


def test_read_ahead_without_posix_fadvise_just_yields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    paths = _files(tmp_path, 3)
    assert list(io.read_ahead(paths, lambda p: p)) == paths
    assert list(io.read_ahead([], lambda p: p)) == []


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2)),  # saved C-ordered
    np.arange(10, dtype=np.float64)[::3],  # not contiguous
    np.zeros((0, 7), dtype=np.float32),  # empty
    np.array(3.5),  # 0-d stays 0-d
    np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian
    np.ones((2, 3, 4), dtype=np.int16),
])
def test_save_npy_writes_what_np_save_writes(tmp_path: Path, array: np.ndarray) -> None:
    io.save_npy(tmp_path / "ours.npy", array)
    np.save(tmp_path / "numpy.npy", np.require(array, requirements="C"))
    assert (tmp_path / "ours.npy").read_bytes() == (tmp_path / "numpy.npy").read_bytes()
    back = np.load(tmp_path / "ours.npy")
    assert back.shape == array.shape and back.dtype == array.dtype and np.array_equal(back, array)


def test_shard_files_lists_each_shard_of_a_kind_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for name in ("010.csv", "002.csv", "000.csv", "000.rejected.csv", "002.rejected.csv", "001.parquet",
                 "notes.csv", "0a1.csv", ".000.csv.tmp-12", "003.csv.bak"):
        (folder / name).write_text("x", encoding="utf-8")
    assert [p.name for p in io.shard_files(folder, ".csv")] == ["000.csv", "002.csv", "010.csv"]
    assert [p.name for p in io.shard_files(folder, ".csv", 3)] == ["000.csv", "002.csv"]  # 010: a larger run's
    assert [p.name for p in io.shard_files(folder, ".rejected.csv", 1)] == ["000.rejected.csv"]
    assert [p.name for p in io.shard_files(folder, ".parquet")] == ["001.parquet"]
    assert io.shard_files(folder, ".csv", 0) == []
    assert io.shard_files(tmp_path / "missing", ".csv") == []
