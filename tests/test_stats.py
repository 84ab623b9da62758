"""Tests for the ``stats`` stage (soundstage.stats): train-split log-mel statistics from moments.

The reference is what the seed code did: load every train clip's log-mel, ``np.concatenate``
them along time, and take ``np.mean`` / ``np.std`` per mel bin in float64. The stage must give
the same numbers (to 1e-10) from the per-clip moments in the shard tables, without loading a
single matrix, however the clips are sharded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_features import make_index

import soundstage.stats as stats
from soundstage.features import features_shard
from soundstage.features_core import FeatureConfig
from soundstage.models import standardize_logmel
from soundstage.moments import Moments
from soundstage.store import load_matrices

CFG = FeatureConfig(n_mels=40, n_mfcc=13, chroma=False, spectral=(), rms=False, zcr=False)
TRAIN = {"c00", "c02", "c03", "c05", "c06"}


@pytest.fixture
def dataset(tmp_path, rng):
    """Seven clips of different lengths, their shard table and the folder of their log-mels."""
    index = make_index(tmp_path, rng, n=7)
    table, rejected = features_shard(index=index, audio_dir=tmp_path / "process" / "audio",
                                     out_dir=tmp_path / "features", config=CFG, save=("logmel",))
    assert rejected.empty
    return table, tmp_path / "features" / "logmel"


def reference(ids, table, logmel_dir) -> tuple[np.ndarray, np.ndarray, int]:
    """The in-memory way: every log-mel concatenated."""
    rows = table[table["id"].isin(ids)].sort_values("id")
    x = np.concatenate([np.asarray(m) for m in load_matrices(rows, logmel_dir)], axis=1).astype(np.float64)
    return x.mean(axis=1), x.std(axis=1), x.shape[1]


def parquet(table: pd.DataFrame, path) -> pd.DataFrame:
    table.to_parquet(path, index=False)
    back = stats.read_moments(path)
    assert list(back.columns) == stats.MOMENT_COLUMNS
    return back


def test_train_moments_equal_numpy_over_concatenated_frames(dataset, tmp_path) -> None:
    table, logmel_dir = dataset
    mean, std, count = reference(TRAIN, table, logmel_dir)
    for tables in ([table], [parquet(table, tmp_path / "s.parquet")]):
        m = stats.train_moments(shard_tables=tables, train_ids=TRAIN)
        assert m.count == count
        np.testing.assert_allclose(m.mean, mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(m.std, std, rtol=1e-10, atol=1e-10)
        assert m.mean.dtype == np.float64


def test_read_moments_reads_what_the_features_stage_writes(dataset, tmp_path) -> None:
    from soundstage.features import write_table

    table, _ = dataset
    write_table(tmp_path / "000.parquet", table)
    back = stats.read_moments(tmp_path / "000.parquet")
    assert list(back.columns) == stats.MOMENT_COLUMNS and list(back["id"]) == list(table["id"])
    assert back["count"].tolist() == table["count"].tolist()
    for col in ("logmel_mean", "logmel_m2"):
        np.testing.assert_array_equal(np.stack(back[col].to_numpy()), np.stack(table[col].to_numpy()))
    # An empty shard table reads as empty and contributes nothing.
    write_table(tmp_path / "001.parquet", table.iloc[:0])
    empty = stats.read_moments(tmp_path / "001.parquet")
    assert empty.empty and stats.shard_moments(empty, ids=TRAIN) is None
    m = stats.train_moments(shard_tables=(stats.read_moments(tmp_path / f"00{k}.parquet") for k in (0, 1)),
                            train_ids=TRAIN)
    assert m.count == stats.train_moments(shard_tables=[table], train_ids=TRAIN).count


def test_read_moments_keeps_ragged_lists_for_shard_moments_to_refuse(dataset, tmp_path) -> None:
    table, _ = dataset
    ragged = table.copy()
    ragged["logmel_mean"] = [list(v) for v in ragged["logmel_mean"]]
    ragged.at[0, "logmel_mean"] = list(ragged.at[0, "logmel_mean"])[:-1]  # one bin short
    back = parquet(ragged, tmp_path / "ragged.parquet")
    assert len(back.at[0, "logmel_mean"]) == len(table.at[0, "logmel_mean"]) - 1
    with pytest.raises(ValueError):
        stats.shard_moments(back, ids=set(table["id"]))


def test_only_train_ids_are_used(dataset) -> None:
    table, _ = dataset
    m = stats.train_moments(shard_tables=[table], train_ids=TRAIN)
    poisoned = table.copy()
    other = ~poisoned["id"].isin(TRAIN)
    poisoned.loc[other, "logmel_mean"] = pd.Series([[1e9] * 40] * int(other.sum()), index=poisoned.index[other])
    poisoned.loc[other, "count"] = 10**6
    again = stats.train_moments(shard_tables=[poisoned], train_ids=TRAIN | {"not-a-clip"})
    assert again.count == m.count
    np.testing.assert_array_equal(again.mean, m.mean)
    np.testing.assert_array_equal(again.m2, m.m2)


@pytest.mark.parametrize("split", [[7], [3, 4], [1, 1, 1, 1, 1, 1, 1], [2, 0, 5]])
def test_result_does_not_depend_on_sharding(dataset, split) -> None:
    table, _ = dataset
    whole = stats.train_moments(shard_tables=[table], train_ids=TRAIN)
    order = np.random.default_rng(len(split)).permutation(len(table))
    bounds = np.cumsum([0, *split])
    shards = [table.iloc[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    m = stats.train_moments(shard_tables=iter(shards), train_ids=TRAIN)  # any iterable, read once
    assert m.count == whole.count
    np.testing.assert_allclose(m.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(m.m2, whole.m2, rtol=1e-12)


def test_memory_is_flat_no_matrix_is_loaded(dataset, monkeypatch) -> None:
    table, logmel_dir = dataset

    def refuse(*args, **kwargs):
        raise AssertionError("train_moments must not load feature matrices")

    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(pd, "read_parquet", refuse)
    seen = []

    def one_at_a_time():  # a generator: train_moments holds one shard table at a time
        for part in (table.iloc[:3], table.iloc[3:]):
            seen.append(len(part))
            yield part

    m = stats.train_moments(shard_tables=one_at_a_time(), train_ids=TRAIN)
    monkeypatch.undo()
    assert seen == [3, 4]
    assert m.count == reference(TRAIN, table, logmel_dir)[2]


def test_no_train_clip_raises(dataset) -> None:
    table, _ = dataset
    with pytest.raises(ValueError, match="train split"):
        stats.train_moments(shard_tables=[table], train_ids={"elsewhere"})
    with pytest.raises(ValueError, match="train split"):
        stats.train_moments(shard_tables=[], train_ids=TRAIN)


def test_export_normalized_has_zero_mean_unit_std_over_train(dataset, tmp_path) -> None:
    table, logmel_dir = dataset
    m = stats.train_moments(shard_tables=[table], train_ids=TRAIN)
    out = tmp_path / "normalized"
    shard_table = tmp_path / "000.parquet"
    table.to_parquet(shard_table)
    n = stats.export_normalized(shard_tables=[shard_table], logmel_dir=logmel_dir, out_dir=out, mean=m.mean, std=m.std)
    assert n == len(table)
    first = load_matrices(table.iloc[:1], out)[0]
    assert first.dtype == np.float32 and first.shape == load_matrices(table.iloc[:1], logmel_dir)[0].shape
    assert sorted(p.name for p in out.iterdir()) == ["all.npy"]  # the stores' layout: one file per store
    mean, std, _ = reference(TRAIN, table, out)
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(std, 1.0, atol=1e-5)
    # Held-out clips are normalized with the train statistics, not their own.
    held_out_mean, _, _ = reference(set(table["id"]) - TRAIN, table, out)
    assert np.abs(held_out_mean).max() > 1e-3


def test_normalize_maps_a_constant_bin_to_zero() -> None:
    logmel = np.array([[-100.0, -100.0], [1.0, 3.0]], dtype=np.float32)
    m = Moments.from_frames(logmel)
    out = standardize_logmel(logmel, mean=m.mean, std=m.std)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.0], [-1.0, 1.0]])
