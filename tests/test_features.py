"""Tests for the ``features`` stage (soundstage.features): matrices, shard table, cache, table join.

Fixtures are processed clips written as the ``process`` stage writes them (float32 samples, 16 kHz,
a fraction of a second, in a shard's audio store ``process/audio/<store>.npy``) plus the index rows
that locate them (``store, offset, frames, sample_rate``; ``path`` is the source file); everything
runs in a temporary folder in well under a second per test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from audio_fixtures import write_audio_store

import soundstage.features as features
from soundstage.decode import downmix_frames
from soundstage.features import (
    INTERNAL_COLUMNS,
    META_COLUMNS,
    SAVEABLE,
    build_table,
    clip_features,
    enabled_features,
    feature_columns,
    features_shard,
    read_table,
    write_table,
)
from soundstage.features_core import FeatureConfig, extract
from soundstage.io import read_csv
from soundstage.rejections import REJECTED_COLUMNS
from soundstage.store import STORE_COLUMNS, Stores

SR = 16000
HOP = 512
CFG = FeatureConfig()  # the params.yaml defaults: 128 mels, 20 MFCC + Δ + ΔΔ, chroma, spectral, rms, zcr


def audio_dir(root):
    """The process stage's audio stores of a test's run."""
    return root / "process" / "audio"


def make_index(root, rng: np.random.Generator, n: int = 4, prefix: str = "c", store: str = "000") -> pd.DataFrame:
    """``n`` processed clips (tone + noise, 0.3-0.7 s) in the mono audio store ``root/process/audio/<store>.npy``
    and their index rows (``path``: the source file, ``raw/<id>.wav``, never read)."""
    rows, clips = [], []
    for i in range(n):
        n_samples = int(SR * (0.3 + 0.1 * (i % 5)))
        t = np.arange(n_samples) / SR
        y = (0.4 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.05 * rng.standard_normal(n_samples)).astype(np.float32)
        clip_id = f"{prefix}{i:02d}"
        clips.append(y)
        rows.append({"id": clip_id, "clip_id": clip_id, "path": f"raw/{clip_id}.wav", "label": "ab"[i % 2],
                     "group": f"g{i // 2}", "duration": n_samples / SR, "start": 0.0, "sample_rate": SR, "shard": 0,
                     "key": f"pk-{clip_id}", "store": store, "frames": n_samples})
    offsets = write_audio_store(audio_dir(root) / f"{store}.npy", clips)
    return pd.DataFrame(rows).assign(offset=offsets)


def samples(root, row) -> np.ndarray:
    """A processed clip's mono samples, read from its store (without soundstage) as the row locates them."""
    store = np.load(audio_dir(root) / f"{row['store']}.npy")
    assert store.shape[1] == 1
    return store[int(row["offset"]):int(row["offset"]) + int(row["frames"]), 0]


def run(index: pd.DataFrame, root, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    kw.setdefault("config", CFG)
    return features_shard(index=index, audio_dir=audio_dir(root), out_dir=root / "features", **kw)


def roundtrip(table: pd.DataFrame, tmp_path) -> pd.DataFrame:
    """What the next run gets as ``previous``: the table written (as the CLI does) and read back."""
    path = tmp_path / "cache.parquet"
    write_table(path, table)
    return read_table(path)


def frames(n_samples: int) -> int:
    return 1 + n_samples // HOP


def matrix(root, table: pd.DataFrame, kind: str, clip_id: str, out: str = "features") -> np.ndarray:
    """A clip's saved matrix, read from its shard's store as the table locates it."""
    row = table.set_index("id").loc[clip_id]
    return np.array(Stores(root / out / kind).matrix(row["store"], row["offset"], row["frames"]))


def stored(root, kind: str) -> list[str]:
    """The files under ``features/<kind>`` (parts included), relative."""
    folder = root / "features" / kind
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- outputs ------------------------------------------------------------------------------------


def test_writes_float32_matrices_of_documented_shapes(tmp_path, rng) -> None:
    index = make_index(tmp_path, rng, n=3)
    table, rejected = run(index, tmp_path)
    assert rejected.empty and list(rejected.columns) == REJECTED_COLUMNS
    total = 0
    for row in index.itertuples():
        t = frames(row.frames)
        logmel = matrix(tmp_path, table, "logmel", row.id)
        mfcc = matrix(tmp_path, table, "mfcc", row.id)
        assert logmel.dtype == np.float32 and logmel.shape == (128, t)
        assert mfcc.dtype == np.float32 and mfcc.shape == (3 * 20, t)  # MFCC, Δ, ΔΔ stacked
        total += t
    # One store per kind for the whole shard, clips one after another, frames first.
    assert stored(tmp_path, "logmel") == stored(tmp_path, "mfcc") == ["all.npy"]
    store = np.load(tmp_path / "features" / "logmel" / "all.npy")
    assert store.shape == (total, 128) and store.dtype == np.float32 and store.flags.c_contiguous
    assert list(table["offset"]) == [0, *np.cumsum(table["frames"])[:-1]] and (table["store"] == "all").all()
    assert not (tmp_path / "features" / "chroma").exists()  # only what `save` names


def test_table_holds_meta_moments_and_summaries(tmp_path, rng) -> None:
    index = make_index(tmp_path, rng, n=3)
    table, _ = run(index, tmp_path)
    assert list(table.columns[:12]) == META_COLUMNS + INTERNAL_COLUMNS + list(STORE_COLUMNS)
    assert list(table["id"]) == list(index["id"]) and list(table["label"]) == list(index["label"])
    cols = feature_columns(table)
    # mean and std of every row of every feature but the log-mel (which the moments cover)
    expected = {"mfcc": 60, "chroma": 12, "centroid": 1, "bandwidth": 1, "rolloff": 1, "contrast": 7,
                "flatness": 1, "rms": 1, "zcr": 1}
    assert len(cols) == 2 * sum(expected.values())
    assert cols[:2] == ["mfcc_mean_00", "mfcc_mean_01"] and "mfcc_std_59" in cols and "zcr_std_00" in cols

    row = table.iloc[0]
    logmel = matrix(tmp_path, table, "logmel", row["id"]).astype(np.float64)
    assert row["count"] == row["frames"] == logmel.shape[1]
    np.testing.assert_allclose(row["logmel_mean"], logmel.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(row["logmel_m2"]) / row["count"], logmel.var(axis=1), rtol=1e-10)
    _, summary = clip_features(samples(tmp_path, index.iloc[0]), sr=SR, config=CFG)
    assert list(summary) == cols
    np.testing.assert_allclose(row[cols].to_numpy(float), list(summary.values()), rtol=1e-12)


def test_write_table_reads_back_like_to_parquet(tmp_path, rng) -> None:
    table, _ = run(make_index(tmp_path, rng, n=3), tmp_path)
    write_table(tmp_path / "fast.parquet", table)
    table.to_parquet(tmp_path / "pandas.parquet", index=False)
    fast, slow = read_table(tmp_path / "fast.parquet"), pd.read_parquet(tmp_path / "pandas.parquet")
    pd.testing.assert_frame_equal(fast, slow)
    assert isinstance(fast["logmel_mean"][0], np.ndarray) and fast["logmel_mean"][0].dtype == np.float64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # The summary columns are stored as one packed column: few Parquet columns to write and read.
    import pyarrow.parquet as pq

    stored = pq.read_schema(tmp_path / "fast.parquet").names
    assert stored == META_COLUMNS + INTERNAL_COLUMNS + list(STORE_COLUMNS) + ["summary"]
    assert len(feature_columns(table)) > 100
    # A table in the plain layout (older versions, pandas) is read as it is.
    pd.testing.assert_frame_equal(read_table(tmp_path / "pandas.parquet"), slow)
    empty = pd.DataFrame(columns=META_COLUMNS + INTERNAL_COLUMNS)
    write_table(tmp_path / "empty.parquet", empty)
    assert list(read_table(tmp_path / "empty.parquet").columns) == META_COLUMNS + INTERNAL_COLUMNS
    no_rows = table.iloc[:0]
    write_table(tmp_path / "no_rows.parquet", no_rows)
    back = read_table(tmp_path / "no_rows.parquet")
    assert list(back.columns) == list(table.columns) and back.empty


def test_clip_features_stacks_mfcc_deltas(rng) -> None:
    y = (0.3 * rng.standard_normal(SR // 2)).astype(np.float32)
    feats, summary = clip_features(y, sr=SR, config=CFG)
    raw = extract(y, sr=SR, config=CFG)
    np.testing.assert_array_equal(feats["mfcc"], np.concatenate([raw["mfcc"], raw["mfcc_delta"], raw["mfcc_delta2"]]))
    assert "mfcc_delta" not in feats and "mfcc_delta2" not in feats
    assert summary["mfcc_mean_20"] == pytest.approx(float(raw["mfcc_delta"][0].astype(np.float64).mean()), rel=1e-12)
    plain, _ = clip_features(y, sr=SR, config=FeatureConfig(mfcc_deltas=False))
    assert plain["mfcc"].shape == (20, frames(SR // 2))


def test_save_any_enabled_feature(tmp_path, rng) -> None:
    index = make_index(tmp_path, rng, n=2)
    cfg = FeatureConfig(mfcc_deltas=False, spectral=("contrast", "rolloff"))
    table, _ = run(index, tmp_path, config=cfg, save=("logmel", "mfcc", "chroma", "contrast", "rolloff"))
    t = frames(index["frames"][0])
    shapes = {"logmel": (128, t), "mfcc": (20, t), "chroma": (12, t), "contrast": (7, t), "rolloff": (1, t)}
    for name, shape in shapes.items():
        a = matrix(tmp_path, table, name, "c00")
        assert a.shape == shape and a.dtype == np.float32, name


@pytest.mark.parametrize(
    "cfg, save, match",
    [
        (FeatureConfig(mfcc=False), ("logmel", "mfcc"), "'mfcc'"),
        (FeatureConfig(chroma=False), ("chroma",), "'chroma'"),
        (FeatureConfig(), ("logmel", "mfcc_delta"), "'mfcc_delta'"),
        (FeatureConfig(), ("spectrogram",), "'spectrogram'"),
    ],
)
def test_save_of_a_feature_not_computed_fails_early(tmp_path, rng, cfg, save, match) -> None:
    index = make_index(tmp_path, rng, n=1)
    with pytest.raises(ValueError, match=match):
        run(index, tmp_path, config=cfg, save=save)


def test_each_feature_can_be_switched_off(tmp_path, rng) -> None:
    index = make_index(tmp_path, rng, n=1)
    cfg = FeatureConfig(mfcc=False, chroma=False, spectral=("centroid",), rms=False, zcr=False)
    assert enabled_features(cfg) == ("logmel", "centroid")
    table, _ = run(index, tmp_path, config=cfg, save=("logmel",))
    assert feature_columns(table) == ["centroid_mean_00", "centroid_std_00"]
    assert enabled_features(FeatureConfig()) == SAVEABLE


def test_multichannel_processed_audio_is_downmixed(tmp_path, rng) -> None:
    """A c-channel segment (``process.mono: false``) lives in the shard's ``000-<c>ch.npy`` store as
    ``(samples, c)``: features reads it, beside the mono clips of ``000.npy``, downmixed exactly as
    :func:`soundstage.decode.downmix_frames` does (not its first channel; with 3 channels not even a
    float64 mean gives the same float32 samples)."""
    index = make_index(tmp_path, rng, n=2)
    n = 6000
    t = np.arange(n) / SR
    wide, expected = [], {}
    for c in (2, 3):
        tones = [0.5 * np.sin(2 * np.pi * 330 * t), 0.3 * rng.standard_normal(n), 0.2 * rng.standard_normal(n)]
        block = np.stack(tones[:c], axis=1).astype(np.float32)
        (offset,) = write_audio_store(audio_dir(tmp_path) / f"000-{c}ch.npy", [block])
        assert np.load(audio_dir(tmp_path) / f"000-{c}ch.npy").shape == (n, c)
        wide.append(index.iloc[[0]].assign(id=f"ch{c}", clip_id=f"ch{c}", path=f"raw/ch{c}.wav", key=f"pk-ch{c}",
                                           store=f"000-{c}ch", offset=offset, frames=n))
        mono = downmix_frames(block)
        assert mono.dtype == np.float32 and not np.array_equal(mono, block[:, 0])
        if c == 3:
            assert not np.array_equal(mono, block.astype(np.float64).mean(axis=1).astype(np.float32))
        expected[f"ch{c}"], _ = clip_features(mono, sr=SR, config=CFG)
    table, rejected = run(pd.concat([index, *wide], ignore_index=True), tmp_path)
    assert rejected.empty and list(table["id"]) == ["c00", "c01", "ch2", "ch3"]
    for clip, feats in expected.items():
        logmel = matrix(tmp_path, table, "logmel", clip)
        assert logmel.shape == (128, frames(n))
        np.testing.assert_array_equal(logmel, feats["logmel"])
        np.testing.assert_array_equal(matrix(tmp_path, table, "mfcc", clip), feats["mfcc"])
    # The mono clips of the shard's other store are read as they are.
    np.testing.assert_array_equal(matrix(tmp_path, table, "logmel", "c01"),
                                  extract(samples(tmp_path, index.iloc[1]), sr=SR, config=CFG)["logmel"])


# -- cache --------------------------------------------------------------------------------------


@pytest.fixture
def count_extract(monkeypatch):
    """Counts (by clip length) the clips whose features are actually computed."""
    calls: list[int] = []

    def counting(y, *, sr, config=None):
        calls.append(len(y))
        return extract(y, sr=sr, config=config)

    monkeypatch.setattr(features, "extract", counting)
    return calls


def test_cache_reuses_unchanged_clips(tmp_path, rng, count_extract, advised) -> None:
    index = make_index(tmp_path, rng, n=4)
    first, _ = run(index, tmp_path)
    assert len(count_extract) == 4
    # The audio stores are memory-mapped (only the pages of a clip are read): no file is advised, neither
    # the stores nor the source files the rows name.
    assert advised == []
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "features" / "logmel").iterdir()}
    # New labels/groups (a relabelled dataset) do not invalidate features but are picked up.
    relabelled = index.assign(label=["z"] * 4)
    again, rejected = run(relabelled, tmp_path, previous=roundtrip(first, tmp_path))
    assert len(count_extract) == 4 and rejected.empty and advised == []  # nothing to read
    assert list(again["label"]) == ["z"] * 4
    pd.testing.assert_frame_equal(again.drop(columns="label"), first.drop(columns="label"), check_dtype=False)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "features" / "logmel").iterdir()}
    # The reused table writes and reads back like a fresh one.
    back = roundtrip(again, tmp_path)
    pd.testing.assert_frame_equal(back.drop(columns="label"), roundtrip(first, tmp_path).drop(columns="label"))


def test_cache_recomputes_changed_missing_and_new_clips(tmp_path, rng, count_extract, advised) -> None:
    index = make_index(tmp_path, rng, n=4)
    first, _ = run(index, tmp_path)
    count_extract.clear()
    advised.clear()
    before = {c: matrix(tmp_path, first, "mfcc", c) for c in first["id"]}
    changed = index.copy()
    changed.loc[1, "key"] = "pk-c01-reprocessed"  # process re-made this clip's audio
    extra = make_index(tmp_path, np.random.default_rng(7), n=1, prefix="new", store="001")
    table, _ = run(pd.concat([changed, extra], ignore_index=True), tmp_path, previous=roundtrip(first, tmp_path))
    lengths = {int(index.loc[1, "frames"]), int(extra.loc[0, "frames"])}
    assert len(lengths) == 2 and len(count_extract) == 2 and set(count_extract) == lengths
    assert advised == []  # memory-mapped stores: nothing read ahead
    assert list(table["id"]) == ["c00", "c01", "c02", "c03", "new00"]
    assert table.loc[1, "key"] != first.loc[1, "key"] and table.loc[0, "key"] == first.loc[0, "key"]
    for c in ("c00", "c02", "c03"):  # copied into the rewritten store as they were
        np.testing.assert_array_equal(matrix(tmp_path, table, "mfcc", c), before[c])
    assert stored(tmp_path, "mfcc") == ["all.npy"]  # the parts went into it
    # A store gone missing: every clip whose matrices it held is computed again.
    count_extract.clear()
    (tmp_path / "features" / "mfcc" / "all.npy").unlink()
    again, _ = run(pd.concat([changed, extra], ignore_index=True), tmp_path, previous=roundtrip(table, tmp_path))
    assert len(count_extract) == 5 and stored(tmp_path, "mfcc") == ["all.npy"]
    np.testing.assert_array_equal(matrix(tmp_path, again, "mfcc", "c02"), before["c02"])


def test_cache_recomputes_everything_when_params_change(tmp_path, rng, count_extract) -> None:
    index = make_index(tmp_path, rng, n=3)
    first, _ = run(index, tmp_path)
    table, _ = run(index, tmp_path, previous=roundtrip(first, tmp_path), config=FeatureConfig(n_mels=64))
    assert len(count_extract) == 6
    assert matrix(tmp_path, table, "logmel", "c00").shape[0] == 64


def test_clips_that_left_the_shard_lose_their_matrices(tmp_path, rng) -> None:
    index = make_index(tmp_path, rng, n=4)
    first, _ = run(index, tmp_path, save=("logmel", "mfcc", "chroma"),
                   config=FeatureConfig(spectral=()))
    table, _ = run(index[index["id"] != "c03"], tmp_path, previous=roundtrip(first, tmp_path),
                   save=("logmel", "mfcc", "chroma"), config=FeatureConfig(spectral=()))
    assert list(table["id"]) == ["c00", "c01", "c02"]
    for name in ("logmel", "mfcc", "chroma"):  # the store no longer holds c03's frames
        assert np.load(tmp_path / "features" / name / "all.npy").shape[0] == table["frames"].sum()
        assert table["frames"].sum() == first["frames"].sum() - first["frames"].iloc[3]
        np.testing.assert_array_equal(matrix(tmp_path, table, name, "c02"), matrix(tmp_path, first, name, "c02"))


def test_a_shard_store_holds_exactly_its_clips_after_n_shards_changed(tmp_path, rng, count_extract) -> None:
    """n_shards 1 -> 2: shard 0 keeps (without recomputing) the clips that still hash to it, in a
    store of its own; the others are the new shard's to compute."""
    from soundstage.ingest import shard_of

    index = make_index(tmp_path, rng, n=6)
    first, _ = run(index, tmp_path, shard=0, n_shards=1)
    assert stored(tmp_path, "logmel") == ["000.npy"]
    shards = [shard_of(c, 2) for c in index["clip_id"]]
    assert len(set(shards)) == 2
    mine = index[[s == 0 for s in shards]]
    count_extract.clear()
    table, _ = run(mine, tmp_path, previous=roundtrip(first, tmp_path), shard=0, n_shards=2)
    assert list(table["id"]) == list(mine["id"]) and count_extract == []
    assert np.load(tmp_path / "features" / "logmel" / "000.npy").shape[0] == table["frames"].sum()
    for clip_id in mine["id"]:
        np.testing.assert_array_equal(matrix(tmp_path, table, "logmel", clip_id),
                                      matrix(tmp_path, first, "logmel", clip_id))


def test_ids_with_folders(tmp_path, rng) -> None:
    index = make_index(tmp_path, rng, n=2)
    index["id"] = ["blues/blues.00000", "jazz/jazz.00001"]
    table, rejected = run(index, tmp_path)
    assert rejected.empty and list(table["id"]) == list(index["id"])
    assert stored(tmp_path, "mfcc") == ["all.npy"]  # ids are rows of the store, not file names
    blues = matrix(tmp_path, table, "mfcc", "blues/blues.00000")
    left, _ = run(index.iloc[:1], tmp_path, previous=roundtrip(table, tmp_path))
    assert list(left["id"]) == ["blues/blues.00000"]
    np.testing.assert_array_equal(matrix(tmp_path, left, "mfcc", "blues/blues.00000"), blues)
    assert np.load(tmp_path / "features" / "mfcc" / "all.npy").shape[0] == left["frames"].sum()


def test_no_temporary_files_are_left_behind(tmp_path, rng) -> None:
    run(make_index(tmp_path, rng, n=2), tmp_path)
    assert not [p for p in (tmp_path / "features").rglob("*") if p.name.startswith(".")]


# -- bad input ----------------------------------------------------------------------------------


def test_unreadable_audio_is_rejected_and_the_others_continue(tmp_path, rng) -> None:
    """A store that is not a .npy, NaN samples and a segment of no samples each reject their clip
    (naming its source file), and the shard goes on."""
    index = make_index(tmp_path, rng, n=5)
    (audio_dir(tmp_path) / "junk.npy").write_bytes(b"this is not a store")
    write_audio_store(audio_dir(tmp_path) / "nan.npy", [np.array([0.0, np.nan, 0.1], np.float32)])
    index.loc[1, ["store", "offset"]] = ["junk", 0]
    index.loc[2, ["store", "offset", "frames"]] = ["nan", 0, 3]
    index.loc[3, "frames"] = 0
    table, rejected = run(index, tmp_path)
    assert list(table["id"]) == ["c00", "c04"]
    assert list(rejected.columns) == REJECTED_COLUMNS
    assert list(rejected["id"]) == ["c01", "c02", "c03"]
    assert set(rejected["stage"]) == {"features"}
    assert list(rejected["reason"]) == ["unreadable", "nonfinite", "empty_file"]
    assert list(rejected["path"]) == ["raw/c01.wav", "raw/c02.wav", "raw/c03.wav"]
    assert all(d.startswith(f"raw/c0{i}.wav: ") for i, d in zip((1, 2, 3), rejected["detail"]))
    assert np.load(tmp_path / "features" / "logmel" / "all.npy").shape[0] == table["frames"].sum()  # c00, c04


def test_a_store_missing_or_shorter_than_the_index_rejects_its_clips_unreadable(tmp_path, rng) -> None:
    """Stale process tables (a store gone, or shorter than a row's ``offset + frames``): each such clip is
    rejected ``unreadable``, the rejection naming the clip's source file and the store, and the other clips
    (also later ones of the same store) still get their features."""
    index = make_index(tmp_path, rng, n=4)
    other = make_index(tmp_path, np.random.default_rng(3), n=1, prefix="gone", store="001")
    (audio_dir(tmp_path) / "001.npy").unlink()
    total = int(index["frames"].sum())
    index.loc[1, "offset"] = total - int(index.loc[1, "frames"]) + 1  # one sample past the store's end
    index.loc[2, "offset"] = total + 10  # wholly past it
    table, rejected = run(pd.concat([index, other], ignore_index=True), tmp_path)
    assert list(table["id"]) == ["c00", "c03"]
    assert rejected[["id", "stage", "reason", "path"]].values.tolist() == [
        ["c01", "features", "unreadable", "raw/c01.wav"], ["c02", "features", "unreadable", "raw/c02.wav"],
        ["gone00", "features", "unreadable", "raw/gone00.wav"]]
    for row, detail in zip(rejected.to_dict("records"), rejected["detail"]):
        assert detail.startswith(f"{row['path']}: ") and "processed audio not readable" in detail
    assert "000.npy" in rejected["detail"][0] and "001.npy: no such store (run the process stage again)" in \
        rejected["detail"][2]
    np.testing.assert_array_equal(matrix(tmp_path, table, "logmel", "c03"),
                                  extract(samples(tmp_path, index.iloc[3]), sr=SR, config=CFG)["logmel"])


def test_index_keys_stay_text(tmp_path, rng) -> None:
    """SHA-1 keys like 4e4924939249... crash pandas' float parser (pandas#63089) unless read as text."""
    index = make_index(tmp_path, rng, n=2).assign(key=["4e492493924924", "0123"], id=["001", "2e5"])
    index.to_csv(tmp_path / "000.csv", index=False)
    back = read_csv(tmp_path / "000.csv")
    assert list(back["key"]) == ["4e492493924924", "0123"] and list(back["id"]) == ["001", "2e5"]
    table, _ = run(back, tmp_path)
    assert list(table["id"]) == ["001", "2e5"]


def test_empty_index_gives_an_empty_table(tmp_path) -> None:
    table, rejected = run(pd.DataFrame(columns=["id", "clip_id", "path", "label", "group", "key"]), tmp_path)
    assert table.empty and list(table.columns) == META_COLUMNS + INTERNAL_COLUMNS + list(STORE_COLUMNS)
    assert rejected.empty and not (tmp_path / "features" / "logmel" / "all.npy").exists()


# -- build_table --------------------------------------------------------------------------------


def test_build_table_gathers_every_clip_whatever_the_split(tmp_path, rng) -> None:
    a, _ = run(make_index(tmp_path, rng, n=3, prefix="a"), tmp_path)
    b, _ = run(make_index(tmp_path, rng, n=2, prefix="b", store="001"), tmp_path)
    table = build_table(shard_tables=[roundtrip(a, tmp_path), b])
    cols = feature_columns(a)
    assert list(table.columns) == META_COLUMNS + list(STORE_COLUMNS) + cols  # no split: every fold picks its rows
    assert list(table["id"]) == ["a00", "a01", "a02", "b00", "b01"]
    assert not set(INTERNAL_COLUMNS) & set(table.columns)
    assert all(table[c].dtype == np.float32 for c in cols)
    np.testing.assert_allclose(table.loc[4, cols].to_numpy(float), b.loc[1, cols].to_numpy(float), rtol=1e-6)
    # Shard order does not change rows or columns.
    pd.testing.assert_frame_equal(build_table(shard_tables=[b, a]), table)


def test_build_table_from_shards_read_lazily_without_their_moments(tmp_path, rng) -> None:
    """As the CLI builds it: shard tables read one at a time (a generator) without the moment and cache
    columns (``read_table(drop=...)`` never reads them) give the same table; a shard lacking a summary
    column gets it as missing values, and the column stays float32."""
    a, _ = run(make_index(tmp_path, rng, n=3, prefix="a"), tmp_path)
    b, _ = run(make_index(tmp_path, rng, n=2, prefix="b", store="001"), tmp_path)
    write_table(tmp_path / "a.parquet", a)
    write_table(tmp_path / "b.parquet", b)
    lean = read_table(tmp_path / "a.parquet", drop=INTERNAL_COLUMNS)
    assert not set(INTERNAL_COLUMNS) & set(lean.columns) and len(lean) == 3
    lazily = build_table(shard_tables=(read_table(tmp_path / f"{n}.parquet", drop=INTERNAL_COLUMNS) for n in "ab"))
    pd.testing.assert_frame_equal(lazily, build_table(shard_tables=[a, b]))
    cols = feature_columns(a)
    short = build_table(shard_tables=[a, b.drop(columns=cols[-1])])
    assert list(short.columns) == list(lazily.columns) and short[cols[-1]].dtype == np.float32
    assert short[cols[-1]].isna().tolist() == [False] * 3 + [True] * 2


def test_build_table_refuses_a_clip_in_two_shards(tmp_path, rng) -> None:
    a, _ = run(make_index(tmp_path, rng, n=2, prefix="a"), tmp_path)
    with pytest.raises(ValueError, match=r"two shard tables: \['a01'\]"):
        build_table(shard_tables=[a, a.iloc[1:]])


def test_build_table_of_nothing(tmp_path) -> None:
    empty = pd.DataFrame(columns=META_COLUMNS + INTERNAL_COLUMNS)
    table = build_table(shard_tables=[empty])
    assert table.empty and list(table.columns) == META_COLUMNS


class Killed(BaseException):
    """What SIGKILL does to a shard job, as far as its files are concerned: it stops mid-loop."""


def kill_after(monkeypatch, n: int) -> None:
    """Make the ``n + 1``-th clip's extraction stop the shard (after ``n`` clips were written)."""
    calls = []

    def extract_then_die(y, *, sr, config=None):
        if len(calls) == n:
            raise Killed
        calls.append(1)
        return extract(y, sr=sr, config=config)

    monkeypatch.setattr(features, "extract", extract_then_die)


def test_matrices_rewritten_by_a_killed_run_are_never_reused(tmp_path, rng, monkeypatch) -> None:
    """n_mels 128 -> 64 (killed after 2 clips) -> 128: the 2 rewritten log-mels must not be reused
    under the 128-bin key they no longer match (they used to be: key unchanged, file present)."""
    index = make_index(tmp_path, rng, n=5)
    first, _ = run(index, tmp_path)
    cached = roundtrip(first, tmp_path)
    store = (tmp_path / "features" / "logmel" / "all.npy").read_bytes()
    monkeypatch.setattr(features, "CHECKPOINT_SECONDS", 0.0)
    saved: list[pd.DataFrame] = []
    with monkeypatch.context() as m:
        kill_after(m, 2)
        with pytest.raises(Killed):
            run(index, tmp_path, previous=cached, config=FeatureConfig(n_mels=64),
                checkpoint=lambda done: saved.append(roundtrip(done, tmp_path)))
    # The store is untouched; the 64-bin clips went to parts that the checkpoint named.
    assert (tmp_path / "features" / "logmel" / "all.npy").read_bytes() == store
    assert saved and saved[-1]["store"].str.startswith("parts/").sum() == 2
    again, _ = run(index, tmp_path, previous=saved[-1])  # back to 128 bins, from the killed run's cache
    for i in range(5):
        assert matrix(tmp_path, again, "logmel", f"c{i:02d}").shape[0] == 128
    assert stored(tmp_path, "logmel") == ["all.npy"]  # parts gone
    pd.testing.assert_frame_equal(again.drop(columns="stamp"), first.drop(columns="stamp"), check_dtype=False)


def test_a_killed_shard_keeps_its_checkpointed_work(tmp_path, rng, monkeypatch, count_extract) -> None:
    index = make_index(tmp_path, rng, n=6)
    # uninterrupted
    clean, _ = features_shard(index=index, audio_dir=audio_dir(tmp_path), out_dir=tmp_path / "clean", config=CFG)
    monkeypatch.setattr(features, "CHECKPOINT_SECONDS", 0.0)
    saved: list[pd.DataFrame] = []
    with monkeypatch.context() as m:
        kill_after(m, 4)
        with pytest.raises(Killed):
            run(index, tmp_path, checkpoint=lambda done: saved.append(roundtrip(done, tmp_path)))
    assert [len(s) for s in saved] == [1, 2, 3, 4]  # before each clip after the first
    count_extract.clear()
    table, _ = run(index, tmp_path, previous=saved[-1])
    assert len(count_extract) == 2  # the 4 checkpointed clips are reused
    pd.testing.assert_frame_equal(table.drop(columns="stamp"), clean.drop(columns="stamp"), check_dtype=False)
    for kind in ("logmel", "mfcc"):  # the same bytes as the uninterrupted run, and no part left
        assert (tmp_path / "features" / kind / "all.npy").read_bytes() == (
            tmp_path / "clean" / kind / "all.npy").read_bytes()
        assert stored(tmp_path, kind) == ["all.npy"]


def test_params_that_cannot_apply_to_one_clip_reject_only_it(tmp_path, rng) -> None:
    """process.sample_rate: null keeps an 8 kHz clip at 8 kHz, where the default contrast bands pass
    Nyquist: that clip is rejected naming the key, the shard goes on (it used to fail whole)."""
    index = make_index(tmp_path, rng, n=3)
    (offset,) = write_audio_store(audio_dir(tmp_path) / "000-low.npy",
                                  [(0.3 * np.sin(np.arange(4000) / 5)).astype(np.float32)])
    low = index.iloc[[0]].assign(id="low", clip_id="low", path="raw/low.wav", sample_rate=8000, store="000-low",
                                 offset=offset, frames=4000)
    index = pd.concat([index, low], ignore_index=True)
    table, rejected = run(index, tmp_path)
    assert list(table["id"]) == ["c00", "c01", "c02"]
    assert rejected[["id", "stage", "reason"]].values.tolist() == [["low", "features", "cannot_process"]]
    assert "features.n_bands" in rejected["detail"].iloc[0] and "low.wav" in rejected["detail"].iloc[0]
