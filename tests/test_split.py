"""Tests of soundstage.split: stratification, no group leakage, determinism, stability, warnings.

Pure pandas/numpy on synthetic tables (no audio). "Exact" stratification means that every label
gets ``floor`` or ``ceil`` of ``ratio * label total`` clips in every split, which the greedy
guarantees with one clip per group once every target is at least one clip.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soundstage.split import (
    FOLD_COLUMNS,
    MODES,
    REFIT,
    SPLITS,
    UNASSIGNED_COLUMNS,
    UNASSIGNED_REASONS,
    UNMATCHED_COLUMNS,
    SmallClassWarning,
    SplitWarning,
    assign_kfold,
    assign_splits,
    assignment_hash,
    counts_table,
    fold_ids,
    group_keys,
    read_fold_lists,
    read_folds,
    read_lists,
    rows_of_fold,
    split_dataset,
    split_table,
)

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def table(labels: list[str], groups: list[str] | None = None, *, prefix: str = "c") -> pd.DataFrame:
    """Rows as the process stage writes them: ``id, clip_id, label, group`` (group "" = none)."""
    ids = [f"{prefix}{i:05d}" for i in range(len(labels))]
    return pd.DataFrame({"id": ids, "clip_id": ids, "label": labels,
                         "group": groups if groups is not None else [""] * len(labels)})


def unbalanced(sizes: dict[str, int]) -> pd.DataFrame:
    return table([lab for lab, n in sizes.items() for _ in range(n)])


def random_dataset(rng: np.random.Generator, *, multi_label: bool) -> pd.DataFrame:
    """Groups of 1-12 clips; with ``multi_label`` a group's clips carry up to 4 different labels."""
    n_labels = int(rng.integers(2, 9))
    labels = [f"L{k}" for k in range(n_labels)]
    rows = []
    for g in range(int(rng.integers(4, 60))):
        own = rng.choice(labels, size=min(n_labels, int(rng.integers(1, 5))) if multi_label else 1, replace=False)
        for k in range(int(rng.integers(1, 13))):
            rows.append({"id": f"g{g}_c{k}", "clip_id": f"g{g}_c{k}", "label": str(rng.choice(own)),
                         "group": f"spk{g}"})
    return pd.DataFrame(rows)


def split_of_group(rows: pd.DataFrame, split: pd.Series) -> pd.Series:
    per_group = pd.DataFrame({"group": group_keys(rows), "split": split}).groupby("group")["split"]
    assert (per_group.nunique() == 1).all(), "a group is in two splits"
    return per_group.first()


def counts(rows: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    return pd.crosstab(rows["label"], split).reindex(columns=list(SPLITS), fill_value=0)


def assert_exact(rows: pd.DataFrame, split: pd.Series, ratios: dict[str, float] = RATIOS) -> None:
    c = counts(rows, split)
    for label, row in c.iterrows():
        total = row.sum()
        for s in SPLITS:
            target = ratios[s] * total
            assert math.floor(target + 1e-9) <= row[s] <= math.ceil(target - 1e-9), (label, s, row.to_dict())


def quiet_split(rows: pd.DataFrame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        return split_table(rows, **kw)


# --- stratification ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 7])
def test_exact_stratification_without_groups(seed):
    rows = unbalanced({"blues": 120, "jazz": 83, "metal": 51, "pop": 29, "rock": 17})
    split = assign_splits(rows, ratios=RATIOS, seed=seed)
    assert split.index.equals(rows.index) and split.name == "split"
    assert_exact(rows, split)


@pytest.mark.parametrize("ratios", [{"train": 0.8, "val": 0.1, "test": 0.1},
                                    {"train": 0.5, "val": 0.25, "test": 0.25},
                                    {"train": 0.6, "val": 0.0, "test": 0.4},
                                    {"train": 1.0, "val": 0.0, "test": 0.0}])
def test_exact_stratification_other_ratios(ratios):
    rows = unbalanced({"a": 97, "b": 40, "c": 23})
    assert_exact(rows, assign_splits(rows, ratios=ratios, seed=3), ratios)


def test_exact_on_a_large_table():
    rng = np.random.default_rng(5)
    rows = table([f"k{v}" for v in rng.integers(0, 30, 20_000)])
    assert_exact(rows, assign_splits(rows, ratios=RATIOS, seed=11))


def test_proportions_with_small_single_label_groups(rng):
    labels, groups = [], []
    for g in range(240):
        lab = f"L{g % 6}"
        for _ in range(int(rng.integers(1, 5))):
            labels.append(lab)
            groups.append(f"artist{g}")
    rows = table(labels, groups)
    split = assign_splits(rows, ratios=RATIOS, seed=2)
    split_of_group(rows, split)
    c = counts(rows, split)
    frac = c.div(c.sum(axis=1), axis=0)
    for s in SPLITS:  # a group holds at most 4 of a label's ~100 clips
        assert (frac[s] - RATIOS[s]).abs().max() < 0.04, frac


def test_demo_like_artists_fill_every_split():
    """8 classes x 4 artists x 6 clips: each class must be in val and test (one artist each)."""
    rows = table([c for c in "abcdefgh" for _ in range(24)],
                 [f"{c}.{k // 6}" for c in "abcdefgh" for k in range(24)])
    parts, table_ = split_table(rows, ratios=RATIOS, seed=42)
    body = table_.set_index("label").drop(index="total")
    assert (body[["train", "val", "test"]] == [12, 6, 6]).all().all()


def test_multi_label_speakers_are_split_whole():
    """Free-spoken-digit style: 6 speakers x 10 digits x 50 takes; speakers are the unit."""
    speakers = ["jackson", "nicolas", "theo", "yweweler", "lucas", "george"]
    rows = table([str(d) for s in speakers for d in range(10) for _ in range(50)],
                 [s for s in speakers for _ in range(500)])
    split = assign_splits(rows, ratios=RATIOS, seed=0)
    per_speaker = split_of_group(rows, split)
    assert sorted(per_speaker.value_counts().to_dict().items()) == [("test", 1), ("train", 4), ("val", 1)]
    c = counts(rows, split)
    assert (c["train"] == 200).all() and (c["val"] == 50).all() and (c["test"] == 50).all()


def test_multi_label_groups_keep_labels_balanced(rng):
    """Speakers with uneven label mixes: every label stays near its ratios."""
    rows = []
    for g in range(150):
        own = rng.choice(list("abcde"), size=3, replace=False)
        for k in range(int(rng.integers(2, 9))):
            rows.append({"id": f"{g}_{k}", "clip_id": f"{g}_{k}", "label": str(own[k % 3]), "group": f"s{g}"})
    rows = pd.DataFrame(rows)
    split = assign_splits(rows, ratios=RATIOS, seed=4)
    split_of_group(rows, split)
    c = counts(rows, split)
    frac = c.div(c.sum(axis=1), axis=0)
    for s in SPLITS:
        assert (frac[s] - RATIOS[s]).abs().max() < 0.05, frac


def test_large_group_is_not_dumped_into_a_small_split():
    """Groups larger than val's whole target (39 clips) go to train, not to the emptiest split."""
    sizes = {"A": 100, "B": 60, "C": 40, "D": 30, "E": 20, "F": 10}
    rows = table([lab for g, n in sizes.items() for lab in ["x"] * n], [g for g, n in sizes.items() for _ in range(n)])
    for seed in range(10):
        per_group = split_of_group(rows, assign_splits(rows, ratios=RATIOS, seed=seed))
        assert per_group["A"] == "train" and per_group["B"] == "train", per_group.to_dict()
        assert {"val", "test"} <= set(per_group)


# --- groups --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("multi_label", [False, True])
def test_no_group_leakage_property(stable, multi_label):
    rng = np.random.default_rng(2024 + multi_label)
    for trial in range(40):
        rows = random_dataset(rng, multi_label=multi_label)
        seed = int(rng.integers(0, 2**31))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parts, c = split_table(rows, ratios=RATIOS, seed=seed, stable=stable)
        assigned = pd.concat(parts.values(), ignore_index=True)
        assert len(assigned) == len(rows) and set(assigned["id"]) == set(rows["id"])
        groups_in = {s: set(parts[s]["group"]) for s in SPLITS}
        assert not (groups_in["train"] & groups_in["val"] or groups_in["train"] & groups_in["test"]
                    or groups_in["val"] & groups_in["test"]), trial
        # Every class missing from a split is warned about, by name.
        body = c.set_index("label").drop(index="total")
        messages = [str(w.message) for w in caught if issubclass(w.category, SmallClassWarning)]
        for label, row in body.iterrows():
            for s in SPLITS:
                if row[s] == 0:
                    assert any(f"class {label!r}" in m and s in m for m in messages), (trial, label, s, messages)
        if not stable and not multi_label:
            # Single-label groups: a class with >= 3 groups is in every split.
            n_groups = rows.groupby("label")["group"].nunique()
            for label in n_groups[n_groups >= 3].index:
                assert (body.loc[label, list(SPLITS)] > 0).all(), (trial, label, body.loc[label])


@pytest.mark.parametrize("seed", range(10))
def test_three_groups_cover_every_split(seed):
    """Whatever the group sizes, a class with three groups gets one in each split."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for lab in "abcd":
        for g in range(3 + seed % 3):
            n = int(rng.integers(1, 40))
            labels += [lab] * n
            groups += [f"{lab}{g}"] * n
    split = assign_splits(table(labels, groups), ratios=RATIOS, seed=seed)
    assert (counts(table(labels, groups), split) > 0).all().all()


def segmented_rows(n_clips: int, *, max_segments: int) -> pd.DataFrame:
    """Clips of 1 to ``max_segments`` segments sharing their ``clip_id``, without a group."""
    return pd.DataFrame([{"id": f"clip{c}__s{k}", "clip_id": f"clip{c}", "label": f"L{c % 3}", "group": ""}
                         for c in range(n_clips) for k in range(1 + c % max_segments)])


def test_segments_of_a_clip_stay_together():
    """Segmented clips share clip_id; with no group column value they are grouped by clip_id."""
    rows = segmented_rows(90, max_segments=5)
    for stable in (False, True):
        split = assign_splits(rows, ratios=RATIOS, seed=9, stable=stable)
        assert (pd.DataFrame({"clip": rows["clip_id"], "s": split}).groupby("clip")["s"].nunique() == 1).all()
    # The process stage writes the clip id as group: same assignment.
    filled = rows.assign(group=rows["clip_id"])
    assert assign_splits(filled, ratios=RATIOS, seed=9).equals(assign_splits(rows, ratios=RATIOS, seed=9))


def test_empty_group_values_fall_back_to_clip_id():
    rows = pd.DataFrame({"id": ["a__s0", "a__s1", "b", "c", "d", "e"],
                         "clip_id": ["a", "a", "b", "c", "d", "e"],
                         "label": ["x"] * 6,
                         "group": ["", np.nan, None, "  ", "spk", "spk"]})
    assert group_keys(rows).tolist() == ["a", "a", "b", "c", "spk", "spk"]
    assert group_keys(rows.drop(columns="group")).tolist() == ["a", "a", "b", "c", "d", "e"]
    assert group_keys(rows.drop(columns=["group", "clip_id"])).tolist() == ["a__s0", "a__s1", "b", "c", "d", "e"]
    split = assign_splits(rows, ratios=RATIOS, seed=0)
    assert split[0] == split[1] and split[4] == split[5]


# --- determinism ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stable", [False, True])
def test_same_seed_same_split_other_seed_other_split(stable):
    rows = unbalanced({"a": 150, "b": 100, "c": 50})
    first = assign_splits(rows, ratios=RATIOS, seed=123, stable=stable)
    assert first.equals(assign_splits(rows.copy(), ratios=RATIOS, seed=123, stable=stable))
    other = assign_splits(rows, ratios=RATIOS, seed=124, stable=stable)
    assert (first != other).sum() > 20


@pytest.mark.parametrize("stable", [False, True])
def test_row_order_does_not_matter(stable, rng):
    rows = random_dataset(rng, multi_label=True)
    split = assign_splits(rows, ratios=RATIOS, seed=5, stable=stable)
    shuffled = rows.sample(frac=1.0, random_state=1)
    again = assign_splits(shuffled, ratios=RATIOS, seed=5, stable=stable)
    assert again.index.equals(shuffled.index)
    assert again.sort_index().equals(split.sort_index())


# --- assignment hash (the MLflow tag split.hash) -------------------------------------------------

def split_rows() -> pd.DataFrame:
    """A features-table-like assignment: segmented clips, each clip in one split."""
    rows = segmented_rows(60, max_segments=4)
    clip_split = {c: SPLITS[i % 3] for i, c in enumerate(rows["clip_id"].unique())}
    return rows.assign(split=rows["clip_id"].map(clip_split))


def test_assignment_hash_is_short_stable_and_ignores_row_order():
    rows = split_rows()
    h = assignment_hash(rows)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert assignment_hash(rows.sample(frac=1.0, random_state=3)) == h
    assert assignment_hash(rows.astype({"split": "category", "clip_id": "string"})) == h
    # Per clip: fewer segments of a clip (another process.segment) or no features columns, same hash.
    assert assignment_hash(rows.drop_duplicates("clip_id")) == h
    assert assignment_hash(rows[["clip_id", "split"]]) == h
    # Pinned: a change of encoding would make every earlier run look like another split.
    assert assignment_hash(pd.DataFrame({"id": ["b", "a"], "split": ["test", "train"]})) == "829ec47129c4"


@pytest.mark.parametrize("clip", ["clip0", "clip31", "clip59"])
def test_assignment_hash_changes_when_one_clip_moves(clip):
    rows = split_rows()
    h = assignment_hash(rows)
    mine = rows["clip_id"] == clip
    for other in SPLITS:
        if other != rows.loc[mine, "split"].iloc[0]:
            assert assignment_hash(rows.assign(split=rows["split"].where(~mine, other))) != h
    assert assignment_hash(rows.assign(split=rows["split"].where(~mine, None))) != h  # left out of every split
    assert assignment_hash(rows[~mine]) != h  # a clip fewer


def test_assignment_hash_needs_a_split_column():
    with pytest.raises(ValueError, match="no split column"):
        assignment_hash(pd.DataFrame({"id": ["a"], "clip_id": ["a"]}))


def test_split_table_parts_and_counts_agree():
    rows = random_dataset(np.random.default_rng(8), multi_label=True)
    parts, c = quiet_split(rows, ratios=RATIOS, seed=1)
    assert set(parts) == set(SPLITS)
    for s, part in parts.items():
        assert (part["split"] == s).all()
        assert list(part.columns) == [*rows.columns, "split"]
    assigned = pd.concat(parts.values(), ignore_index=True)
    expected = counts(assigned, assigned["split"])
    body = c.set_index("label").drop(index="total")
    assert (body[list(SPLITS)].sort_index() == expected.sort_index()).all().all()


# --- stable mode ---------------------------------------------------------------------------------

def grown(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A dataset and the same dataset with 20 % more clips: new groups and new clips of old groups."""
    base = random_dataset(rng, multi_label=True)
    extra = []
    n_new = max(1, len(base) // 5)
    old_groups = base["group"].unique()
    for k in range(n_new):
        group = str(rng.choice(old_groups)) if k % 2 else f"new{k // 3}"
        extra.append({"id": f"new_c{k}", "clip_id": f"new_c{k}", "label": str(rng.choice(base["label"].unique())),
                      "group": group})
    more = pd.concat([base, pd.DataFrame(extra)], ignore_index=True).sample(frac=1.0, random_state=0)
    return base, more


def test_stable_mode_never_moves_an_existing_clip():
    rng = np.random.default_rng(77)
    for _ in range(20):
        base, more = grown(rng)
        before = dict(zip(base["id"], assign_splits(base, ratios=RATIOS, seed=3, stable=True)))
        after = dict(zip(more["id"], assign_splits(more, ratios=RATIOS, seed=3, stable=True)))
        assert all(after[i] == s for i, s in before.items())


def test_stable_mode_test_set_fixed_when_train_and_val_trade():
    rows = table([f"L{i % 4}" for i in range(2000)])
    a = assign_splits(rows, ratios={"train": 0.7, "val": 0.15, "test": 0.15}, seed=0, stable=True)
    b = assign_splits(rows, ratios={"train": 0.85, "val": 0.0, "test": 0.15}, seed=0, stable=True)
    assert ((a == "test") == (b == "test")).all()
    assert set(b) == {"train", "test"}


def test_stable_mode_is_statistically_stratified():
    rows = table([f"L{i % 4}" for i in range(8000)])
    c = counts(rows, assign_splits(rows, ratios=RATIOS, seed=1, stable=True))
    frac = c.div(c.sum(axis=1), axis=0)
    for s in SPLITS:  # 2000 clips per label: sd of a fraction ~0.008
        assert (frac[s] - RATIOS[s]).abs().max() < 0.035


def test_default_mode_may_move_clips_but_stays_exact():
    """The documented trade-off: the greedy re-balances on growth (exact again), stable does not."""
    base, more = grown(np.random.default_rng(3))
    more = more.assign(group="")  # one clip per group: exactness applies
    assert_exact(more, assign_splits(more, ratios=RATIOS, seed=3))


# --- warnings and edge cases ---------------------------------------------------------------------

def test_small_class_warning_names_the_class():
    rows = table(["big"] * 50 + ["tiny"] * 2 + ["solo"])
    with pytest.warns(SmallClassWarning) as record:
        parts, c = split_table(rows, ratios=RATIOS, seed=0)
    messages = [str(w.message) for w in record]
    assert any("'tiny'" in m and "2 group(s)" in m for m in messages)
    assert any("'solo'" in m and "1 group(s)" in m for m in messages)
    assert not any("'big'" in m for m in messages)
    assert all(w.filename == __file__ for w in record)  # points at the caller
    body = c.set_index("label")
    assert body.loc["tiny", "train"] >= 1 and body.loc["solo", "train"] == 1  # tiny classes train first


def test_small_class_warning_counts_only_active_splits():
    rows = table(["big"] * 50 + ["pair"] * 2)
    ratios = {"train": 0.8, "val": 0.0, "test": 0.2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts, c = split_table(rows, ratios=ratios, seed=0)  # two groups suffice for two splits
    assert parts["val"].empty and list(parts["val"].columns) == [*rows.columns, "split"]
    body = c.set_index("label")
    assert (body.loc[["big", "pair"], "val"] == 0).all()
    assert (body.loc[["big", "pair"], ["train", "test"]] > 0).all().all()
    with pytest.warns(SmallClassWarning, match="'one'.*2 splits"):
        split_table(table(["big"] * 50 + ["one"]), ratios=ratios, seed=0)


def test_no_warning_for_a_healthy_dataset():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_table(unbalanced({"a": 40, "b": 30, "c": 20}), ratios=RATIOS, seed=0)


def test_stable_mode_warns_when_a_class_misses_a_split():
    rows = table(["a"] * 4 + ["b"] * 200)
    for seed in range(50):  # a 4-clip class misses val or test under most seeds
        split = assign_splits(rows, ratios=RATIOS, seed=seed, stable=True)
        if not (split[:4] == "val").any():
            break
    with pytest.warns(SmallClassWarning, match="class 'a' has no clip in .*stable mode"):
        split_table(rows, ratios=RATIOS, seed=seed, stable=True)


def test_counts_table():
    labels = pd.Series(["b", "a", "a", "total", "b", "a"])
    split = pd.Series(["train", "train", "test", "val", "train", "train"])
    c = counts_table(labels, split)
    assert list(c.columns) == ["label", "train", "val", "test", "total"]
    assert c["label"].tolist() == ["a", "b", "total", "total"]  # a class named "total" survives
    assert c.iloc[0, 1:].tolist() == [2, 0, 1, 3]
    assert c.iloc[1, 1:].tolist() == [2, 0, 0, 2]
    assert c.iloc[2, 1:].tolist() == [0, 1, 0, 1]
    assert c.iloc[3, 1:].tolist() == [4, 1, 1, 6]
    with pytest.raises(ValueError, match="unknown split"):
        counts_table(labels, split.replace("val", "dev"))


def test_empty_input():
    rows = table([])
    assert assign_splits(rows, ratios=RATIOS, seed=0).empty
    parts, c = split_table(rows, ratios=RATIOS, seed=0)
    assert all(p.empty for p in parts.values())
    assert c.to_dict("records") == [{"label": "total", "train": 0, "val": 0, "test": 0, "total": 0}]


def test_numeric_looking_labels_and_groups():
    rows = pd.DataFrame({"id": [str(i) for i in range(30)], "clip_id": [str(i) for i in range(30)],
                         "label": [i % 3 for i in range(30)], "group": [i // 2 for i in range(30)]})
    split = assign_splits(rows, ratios=RATIOS, seed=0)
    split_of_group(rows, split)
    parts, c = quiet_split(rows, ratios=RATIOS, seed=0)
    assert c["label"].tolist() == ["0", "1", "2", "total"]


def test_rows_without_label_are_refused():
    with pytest.raises(ValueError, match="without a label"):
        assign_splits(table(["a", "", "b"]), ratios=RATIOS, seed=0)


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_split_writes_tables_and_prints_warnings(tmp_path, capsys):
    from soundstage.cli import main
    from soundstage.io import read_csv, write_csv

    rows = table(["a"] * 30 + ["b"] * 20 + ["tiny"] * 2)
    write_csv(tmp_path / "000.csv", rows.iloc[::2])
    write_csv(tmp_path / "001.csv", rows.iloc[1::2])
    (tmp_path / "params.yaml").write_text("seed: 3\nsplit: {ratios: {train: 0.6, val: 0.2, test: 0.2}}\n")
    code = main(["--params", str(tmp_path / "params.yaml"), "split", str(tmp_path / "000.csv"),
                 str(tmp_path / "001.csv"), "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0
    assert "'tiny'" in err and "WARNING" in err
    assert "total" in out
    folds = read_folds(tmp_path / "out" / "folds.csv")
    assert list(folds.columns) == FOLD_COLUMNS and set(folds["fold"]) == {"0"} and len(folds) == len(rows)
    expected = assign_splits(rows, ratios={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    got = folds.set_index("id")["split"]
    assert (got.loc[rows["id"]].to_numpy() == expected.to_numpy()).all()
    c = read_csv(tmp_path / "out" / "counts.csv", text=["fold"])
    assert list(c.columns) == ["fold", "label", *SPLITS, "total"] and (c["fold"] == "0").all()
    assert c["label"].tolist() == ["a", "b", "tiny", "total"] and c["total"].iloc[-1] == len(rows)
    info = json.loads((tmp_path / "out" / "folds.json").read_text(encoding="utf-8"))
    assert info["mode"] == "ratio" and info["k"] == 1 and info["refit"] is None
    assert info["hash"] == assignment_hash(folds)


# --- split.mode column and lists: the assignment from the data -----------------------------------

def manifest_of(rows: pd.DataFrame, **columns) -> pd.DataFrame:
    """The ingest manifest of ``rows``' clips: ``id`` (the clip id), an absolute ``path`` below
    ``/data/root``, and ``columns`` given per clip id as dicts."""
    ids = list(dict.fromkeys(rows["clip_id"].astype(str)))
    out = pd.DataFrame({"id": ids, "path": [f"/data/root/{i}.wav" for i in ids]})
    for name, by_id in columns.items():
        out[name] = [by_id.get(i) for i in ids]
    return out


def fold_rows(result, fold: str = "0") -> pd.DataFrame:
    """The rows of one fold of a :class:`SplitResult` (:data:`FOLD_COLUMNS`)."""
    return result.folds[result.folds["fold"] == fold]


def part(result, split: str, fold: str = "0") -> pd.DataFrame:
    rows = fold_rows(result, fold)
    return rows[rows["split"] == split]


def split_by_id(result, fold: str = "0") -> dict[str, str]:
    rows = fold_rows(result, fold)
    return dict(zip(rows["id"], rows["split"], strict=True))


def folds(n_clips: int = 120, *, n_groups: int = 24, seed: int = 0) -> tuple[pd.DataFrame, dict[str, str]]:
    """ESC-50 style: clips of 4 labels in groups (source recordings), fold 1-5 per clip (a group's
    clips share the fold)."""
    rng = np.random.default_rng(seed)
    group = [f"src{int(g)}" for g in rng.integers(0, n_groups, n_clips)]
    rows = table([f"L{i % 4}" for i in range(n_clips)], group)
    fold_of_group = {f"src{g}": str(1 + g % 5) for g in range(n_groups)}
    return rows, {c: fold_of_group[g] for c, g in zip(rows["clip_id"], rows["group"], strict=True)}


def test_column_of_split_names_is_reproduced_exactly():
    rows = random_dataset(np.random.default_rng(21), multi_label=True)
    given = {c: ("train", "val", "test")[i % 3] for i, c in enumerate(rows["clip_id"])}
    # split names in any case and with spaces, as spreadsheets write them
    shown = {c: f" {s.upper()} " if i % 4 == 0 else s for i, (c, s) in enumerate(given.items())}
    result = quiet(split_dataset, rows, seed=0, mode="column", clips=manifest_of(rows, part=shown), column="part")
    assert split_by_id(result) == given
    assert result.unassigned.empty and list(result.unassigned.columns) == UNASSIGNED_COLUMNS
    assert list(result.folds.columns) == FOLD_COLUMNS and set(result.folds["fold"]) == {"0"}
    assert result.folds["id"].tolist() == rows["id"].tolist()  # input order
    assert result.counts["total"].iloc[-1] == len(rows) and (result.counts["fold"] == "0").all()
    assert result.info["k"] == 1 and result.info["refit"] is None and result.info["folds"][0]["name"] is None


def test_column_rule_reproduces_the_folds():
    rows, fold = folds()
    clips = manifest_of(rows, fold=fold)
    result = quiet(split_dataset, rows, seed=0, mode="column", clips=clips, column="fold", test=["5"], val=[4])
    expected = {c: "test" if f == "5" else "val" if f == "4" else "train" for c, f in fold.items()}
    assert split_by_id(result) == expected and result.unassigned.empty


def test_column_rule_without_val_carves_val_from_train_group_aware():
    rows, fold = folds(400, n_groups=80)
    clips = manifest_of(rows, fold=fold)

    def run(seed: int, share: float = 0.25):
        return quiet(split_dataset, rows, seed=seed, mode="column", clips=clips, column="fold", test=["5"],
                     val_share=share)

    result = run(3)
    got = split_by_id(result)
    assert {c for c, s in got.items() if s == "test"} == {c for c, f in fold.items() if f == "5"}
    assert {c for c, s in got.items() if s in ("train", "val")} == {c for c, f in fold.items() if f != "5"}
    train, val = part(result, "train"), part(result, "val")
    assert set(val["group"]) and not set(train["group"]) & set(val["group"])
    assert abs(len(val) / (len(val) + len(train)) - 0.25) < 0.05
    assert val["label"].nunique() == 4
    assert split_by_id(run(3)) == got  # deterministic for a seed
    assert split_by_id(run(4)) != got
    assert split_by_id(run(3, 0.0)) == {c: "test" if f == "5" else "train" for c, f in fold.items()}


def test_segments_of_a_clip_stay_together_in_column_mode():
    rows = segmented_rows(60, max_segments=4)
    fold = {f"clip{c}": str(c % 5) for c in range(60)}
    result = quiet(split_dataset, rows, seed=1, mode="column", clips=manifest_of(rows, fold=fold), column="fold",
                   test=["0"])
    assigned = fold_rows(result)
    assert len(assigned) == len(rows) and (assigned.groupby("clip_id")["split"].nunique() == 1).all()
    per_clip = assigned.groupby("clip_id")["split"].first()
    assert (per_clip[[c for c, f in fold.items() if f == "0"]] == "test").all()
    assert (per_clip == "val").any()


def test_unassigned_clips_are_reported_and_never_split():
    rows = table(["a"] * 12 + ["b"] * 12)
    ids = rows["clip_id"].tolist()
    values = {c: ("train", "val", "test")[i % 3] for i, c in enumerate(ids)}
    values[ids[0]] = None       # missing
    values[ids[1]] = "   "      # empty
    values[ids[2]] = "dev"      # no split name
    clips = manifest_of(rows, part=values)
    clips = clips[clips["id"] != ids[3]]  # not in the manifest
    result = quiet(split_dataset, rows, seed=0, mode="column", clips=clips, column="part")
    left = dict(zip(result.unassigned["id"], result.unassigned["reason"], strict=True))
    assert left == {ids[0]: "no_value", ids[1]: "no_value", ids[2]: "not_a_split", ids[3]: "not_in_manifest"}
    assert set(result.unassigned["reason"]) <= set(UNASSIGNED_REASONS)
    assigned = split_by_id(result)
    assert not set(left) & set(assigned) and len(assigned) == len(rows) - 4
    assert result.counts["total"].iloc[-1] == len(rows) - 4
    # a rule: only a missing value is left out, any other value is train
    rule = quiet(split_dataset, rows, seed=0, mode="column", clips=clips, column="part", test=["test"], val=["val"])
    assert set(rule.unassigned["id"]) == {ids[0], ids[1], ids[3]} and split_by_id(rule)[ids[2]] == "train"


def test_column_mode_errors_name_the_parameter():
    rows, fold = folds()
    clips = manifest_of(rows, fold=fold)
    with pytest.raises(ValueError, match=r"split\.column\.name: the manifest has no column 'folds'.*fold"):
        split_dataset(rows, seed=0, mode="column", clips=clips, column="folds", test=["5"])
    with pytest.raises(ValueError, match=r"split\.column\.test: train is empty"):
        split_dataset(rows, seed=0, mode="column", clips=clips, column="fold", test=["1", "2", "3", "5"],
                      val=["4"])
    with pytest.raises(ValueError, match=r"split\.column\.name: no clip is assigned to a split \(120 no_value\)"):
        split_dataset(rows, seed=0, mode="column", clips=clips.assign(fold=""), column="fold", test=["5"])
    with pytest.raises(ValueError, match=r"split\.column\.name: train is empty"):
        split_dataset(rows, seed=0, mode="column", clips=clips.assign(fold="test"), column="fold")
    with pytest.raises(ValueError, match=r"split\.column\.val: needs split\.column\.test"):
        split_dataset(rows, seed=0, mode="column", clips=clips, column="fold", val=["4"])
    with pytest.raises(ValueError, match=r"split\.mode: unknown mode 'folds' \(ratio, kfold, leave_one_group_out"):
        split_dataset(rows, seed=0, mode="folds")
    with pytest.raises(ValueError, match=r"split\.ratios: required"):
        split_dataset(rows, seed=0, mode="ratio")
    with pytest.raises(ValueError, match=r"split\.mode column: needs the manifest"):
        split_dataset(rows, seed=0, mode="column", column="fold")


def test_ratio_mode_of_split_dataset_is_split_table():
    rows = random_dataset(np.random.default_rng(8), multi_label=True)
    result = quiet(split_dataset, rows, seed=1, mode="ratio", ratios=RATIOS)
    parts, c = quiet_split(rows, ratios=RATIOS, seed=1)
    for s in SPLITS:  # fold "0" is today's assignment, row for row and in the same order
        mine = part(result, s).reset_index(drop=True)
        assert mine[["id", "clip_id", "label", "group"]].equals(parts[s][["id", "clip_id", "label", "group"]])
    assert set(result.folds["fold"]) == {"0"} and len(result.folds) == len(rows)
    assert result.counts.drop(columns="fold").equals(c) and result.counts.columns[0] == "fold"
    assert result.info == {"mode": "ratio", "k": 1, "refit": None, "hash": assignment_hash(result.folds),
                           "folds": [{"fold": "0", "name": None, **{s: len(parts[s]) for s in SPLITS}}]}
    assert fold_ids(result.info, refit=True) == ["0"]
    assert result.unassigned.empty and result.unmatched.empty
    # stable mode and the warnings too: ratio mode is split_table
    with pytest.warns(SmallClassWarning) as record:
        stable = split_dataset(table(["big"] * 50 + ["tiny"] * 2), seed=0, ratios=RATIOS, stable=True)
    assert any("'tiny'" in str(w.message) for w in record) and all(w.filename == __file__ for w in record)
    parts, _ = quiet_split(table(["big"] * 50 + ["tiny"] * 2), ratios=RATIOS, seed=0, stable=True)
    assert split_by_id(stable) == {i: s for s, p in parts.items() for i in p["id"]}


def genre_rows() -> pd.DataFrame:
    """GTZAN style: 3 genres x 6 clips, clip ids ``<genre>/<genre>.0000k`` below data.root, 2 artists each."""
    ids = [f"{g}/{g}.{k:05d}" for g in ("blues", "jazz", "rock") for k in range(6)]
    return pd.DataFrame({"id": ids, "clip_id": ids, "label": [i.split("/")[0] for i in ids],
                         "group": [f"{i.split('/')[0]}-{int(i[-1]) // 3}" for i in ids]})


def write_list(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_lists_of_ids_are_reproduced_exactly(tmp_path):
    rows = genre_rows()
    given = {i: ("train", "train", "train", "val", "test", "test")[int(i[-1])] for i in rows["id"]}
    files = {s: write_list(tmp_path / f"{s}.txt", ["# artist-filtered", ""] +
                           [i for i, g in given.items() if g == s]) for s in SPLITS}
    lists = read_lists(files)
    assert all(not e.startswith("#") and e for es in lists.values() for e in es)
    result = quiet(split_dataset, rows, seed=0, mode="lists", lists=lists, clips=manifest_of(rows), root="/data/root")
    assert split_by_id(result) == given
    assert result.unassigned.empty and result.unmatched.empty


def test_lists_of_paths_are_reproduced_exactly(tmp_path):
    rows = genre_rows()
    clips = manifest_of(rows)
    clips["path"] = [f"/data/root/{i}.au" for i in clips["id"]]
    train = ["blues/blues.00000.wav",              # below data.root, another extension
             "/data/root/blues/blues.00001.au",    # absolute
             "data/../data/root/blues/blues.00002.wav",  # relative to the repository (data.root as given)
             "blues.00003.au",                     # a file name only one clip has
             "jazz.00000",                         # a stem only one clip has
             "jazz\\jazz.00001.wav"]               # written on Windows
    test = [f"/data/root/{g}/{g}.{k:05d}.au" for g in ("jazz", "rock") for k in (4, 5)]
    result = quiet(split_dataset, rows, seed=0, mode="lists", lists={"train": train, "test": test}, clips=clips,
                   root="data/root", val_share=0.0)
    got = split_by_id(result)
    expected_train = {"blues/blues.00000", "blues/blues.00001", "blues/blues.00002", "blues/blues.00003",
                      "jazz/jazz.00000", "jazz/jazz.00001"}
    assert {i for i, s in got.items() if s == "train"} == expected_train
    assert {i for i, s in got.items() if s == "test"} == {f"{g}/{g}.{k:05d}" for g in ("jazz", "rock") for k in (4, 5)}
    assert part(result, "val").empty
    assert set(result.unassigned["id"]) == set(rows["id"]) - set(got)
    assert (result.unassigned["reason"] == "in_no_list").all() and result.unmatched.empty


def test_list_entries_naming_no_clip_are_reported(tmp_path):
    rows = genre_rows()
    clips = pd.concat([manifest_of(rows), pd.DataFrame({"id": ["dup/a/x", "dup/b/x", "rejected/r"],
                                                        "path": ["/data/root/dup/a/x.wav", "/data/root/dup/b/x.wav",
                                                                 "/data/root/rejected/r.wav"]})])
    lists = {"train": [i for i in rows["id"] if int(i[-1]) < 4] + ["ghost.wav", "x.wav"],
             "test": [i for i in rows["id"] if int(i[-1]) >= 4] + ["rejected/r.wav"]}
    result = quiet(split_dataset, rows, seed=0, mode="lists", lists=lists, clips=clips, root="/data/root")
    unmatched = result.unmatched.set_index("entry")
    assert list(result.unmatched.columns) == UNMATCHED_COLUMNS and len(unmatched) == 3
    assert unmatched.loc["ghost.wav", "reason"] == "names no clip"
    assert unmatched.loc["x.wav", "reason"].startswith("ambiguous: 2 clips")
    assert unmatched.loc["rejected/r.wav", "list"] == "test" and "no rows" in unmatched.loc["rejected/r.wav", "reason"]
    assert len(fold_rows(result)) == len(rows)


def test_clip_in_two_lists_is_an_error():
    rows = genre_rows()
    lists = {"train": ["blues/blues.00000", "blues/blues.00001"], "test": ["jazz/jazz.00000", "blues/blues.00001.wav"]}
    with pytest.raises(ValueError, match=r"clip 'blues/blues\.00001' is in split\.lists\.train .* and in "
                                         r"split\.lists\.test"):
        split_dataset(rows, seed=0, mode="lists", lists=lists, clips=manifest_of(rows), root="/data/root")


def test_lists_without_val_carve_val_and_leave_unlisted_clips_out():
    rows = genre_rows()
    lists = {"train": [i for i in rows["id"] if int(i[-1]) < 5 and not i.startswith("rock")],
             "test": [i for i in rows["id"] if int(i[-1]) == 5]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        result = split_dataset(rows, seed=0, mode="lists", lists=lists, clips=manifest_of(rows), root="/data/root",
                               val_share=0.5)
    got = split_by_id(result)
    unlisted = {i for i in rows["id"] if i.startswith("rock") and int(i[-1]) < 5}
    assert set(result.unassigned["id"]) == unlisted and not unlisted & set(got)
    assert {i for i, s in got.items() if s in ("train", "val")} == set(lists["train"])
    assert not set(part(result, "train")["group"]) & set(part(result, "val")["group"]) and len(part(result, "val"))
    with pytest.raises(ValueError, match=r"split\.lists: no clip is assigned"):
        split_dataset(rows, seed=0, mode="lists", lists={"train": ["nothing"], "test": ["none"]},
                      clips=manifest_of(rows))


def test_read_lists_names_the_key_of_a_missing_file(tmp_path):
    path = write_list(tmp_path / "l.txt", ["a  ", "  # note", "", "b #2.wav"])
    assert read_lists({"train": path, "val": None}) == {"train": ["a", "b #2.wav"]}
    with pytest.raises(ValueError, match=r"split\.lists\.test: cannot read the list .*nope\.txt"):
        read_lists({"test": str(tmp_path / "nope.txt")})


def quiet(func, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        return func(*args, **kw)


def test_cli_split_column_mode_writes_unassigned(tmp_path, capsys):
    from soundstage.cli import main
    from soundstage.io import read_csv, write_csv

    rows, fold = folds(60, n_groups=20)
    ids = rows["clip_id"].tolist()
    fold[ids[0]] = ""  # an empty cell: the column is read as text (else 5 would read back as 5.0)
    write_csv(tmp_path / "manifest.csv", manifest_of(rows, fold=fold))
    write_csv(tmp_path / "000.csv", rows)
    (tmp_path / "params.yaml").write_text("seed: 3\nsplit: {mode: column, column: {name: fold, test: [5]}}\n")
    args = ["--params", str(tmp_path / "params.yaml"), "split", str(tmp_path / "000.csv"),
            "--manifest", str(tmp_path / "manifest.csv"), "--out-dir", str(tmp_path / "out")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "WARNING: 1 clip(s) in no split" in err and ids[0] in err and "unassigned.csv" in err
    unassigned = read_csv(tmp_path / "out" / "unassigned.csv")
    assert list(unassigned.columns) == UNASSIGNED_COLUMNS
    assert unassigned[["id", "reason"]].to_dict("records") == [{"id": ids[0], "reason": "no_value"}]
    written = read_folds(tmp_path / "out" / "folds.csv")
    assert set(written.loc[written["split"] == "test", "id"]) == {c for c, f in fold.items() if f == "5"}
    assert ids[0] not in set(written["id"]) and (written["split"] == "val").any()

    # every clip covered: unassigned.csv is still written, empty
    fold[ids[0]] = "1"
    write_csv(tmp_path / "manifest.csv", manifest_of(rows, fold=fold))
    assert main(args) == 0
    assert "in no split" not in capsys.readouterr().err
    assert read_csv(tmp_path / "out" / "unassigned.csv").empty

    # a column that is not in the manifest: exit 1, naming the parameter
    (tmp_path / "params.yaml").write_text("split: {mode: column, column: {name: fold_id, test: [5]}}\n")
    assert main(args) == 1
    assert "split.column.name: the manifest has no column 'fold_id'" in capsys.readouterr().err


def test_cli_split_lists_mode_warns_about_entries_and_unlisted_clips(tmp_path, capsys):
    from soundstage.cli import main
    from soundstage.io import read_csv, write_csv

    rows = genre_rows()
    write_csv(tmp_path / "manifest.csv", manifest_of(rows))
    write_csv(tmp_path / "000.csv", rows)
    train = write_list(tmp_path / "train.txt", [i for i in rows["id"] if int(i[-1]) < 4] + ["ghost.wav"])
    test = write_list(tmp_path / "test.txt", ["# held out"] + [f"{i}.au" for i in rows["id"] if int(i[-1]) == 5])
    (tmp_path / "params.yaml").write_text(f"data: {{root: /data/root}}\nsplit: {{mode: lists, lists: "
                                          f"{{train: '{train}', test: '{test}'}}}}\n")
    args = ["--params", str(tmp_path / "params.yaml"), "split", str(tmp_path / "000.csv"),
            "--manifest", str(tmp_path / "manifest.csv"), "--out-dir", str(tmp_path / "out")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 list entry names no clip" in err and "split.lists.train: 'ghost.wav': names no clip" in err
    assert "3 clip(s) in no split" in err and "blues/blues.00004" in err
    unassigned = read_csv(tmp_path / "out" / "unassigned.csv")
    assert set(unassigned["id"]) == {i for i in rows["id"] if int(i[-1]) == 4}
    folds = read_folds(tmp_path / "out" / "folds.csv")
    assert set(folds.loc[folds["split"] == "test", "id"]) == {i for i in rows["id"] if int(i[-1]) == 5}
    # a list file that is missing: exit 1, naming the key
    Path(test).unlink()
    assert main(args) == 1
    assert "split.lists.test: cannot read the list" in capsys.readouterr().err


# --- through ingest: official test sets of real dataset layouts ----------------------------------

def ingest_and_split(tmp_path, params: dict) -> dict[str, pd.DataFrame]:
    """``soundstage ingest`` then ``soundstage split`` (on rows as process writes them for unsegmented
    clips); returns fold "0"'s rows per split, unassigned.csv and the whole fold table (``folds``)."""
    import yaml

    from soundstage.cli import main
    from soundstage.io import read_csv, write_csv

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sharding": {"n_shards": 1}, **params}))
    cfg = ["--params", str(tmp_path / "params.yaml")]
    assert main([*cfg, "ingest", "--out-dir", str(tmp_path / "ingest")]) == 0
    manifest = read_csv(tmp_path / "ingest" / "manifest.csv")
    rows = manifest[["id", "label"]].assign(clip_id=manifest["id"], group=manifest["group"].fillna(manifest["id"]))
    write_csv(tmp_path / "000.csv", rows)
    assert main([*cfg, "split", str(tmp_path / "000.csv"), "--manifest", str(tmp_path / "ingest" / "manifest.csv"),
                 "--out-dir", str(tmp_path / "split")]) == 0
    folds = read_folds(tmp_path / "split" / "folds.csv")
    first = folds[folds["fold"] == "0"]
    return {**{s: first[first["split"] == s] for s in SPLITS}, "folds": folds,
            "unassigned": read_csv(tmp_path / "split" / "unassigned.csv")}


def test_fsdd_take_rule_through_ingest(tmp_path):
    from audio_fixtures import write_tone

    root = tmp_path / "recordings"
    speakers = ["jackson", "nicolas", "theo", "yweweler"]
    for d in range(3):
        for s in speakers:
            for t in range(8):
                write_tone(root / f"{d}_{s}_{t}.wav", sr=8000, duration=0.05)
    out = ingest_and_split(tmp_path, {
        "data": {"root": str(root), "layout": "regex",
                 "regex": {"pattern": r"(?P<label>\d+)_(?P<group>[a-z]+)_(?P<take>\d+)"}},
        "split": {"mode": "column", "column": {"name": "take", "test": ["0", "1", "2", "3", "4"]}}})
    take = {f"{d}_{s}_{t}": t for d in range(3) for s in speakers for t in range(8)}
    assert set(out["test"]["id"]) == {i for i, t in take.items() if t <= 4}
    assert set(out["train"]["id"]) | set(out["val"]["id"]) == {i for i, t in take.items() if t > 4}
    assert len(out["val"]) and not set(out["train"]["group"]) & set(out["val"]["group"])  # whole speakers in val
    assert out["unassigned"].empty


def test_esc50_fold_column_through_ingest(tmp_path, capsys):
    from audio_fixtures import write_tone

    root = tmp_path / "ESC-50"
    rows = []
    for k in range(40):
        name = f"{1 + k % 5}-{100 + k // 2}-A-{k % 4}.wav"  # fold-source-take-target, ESC-50's names
        write_tone(root / "audio" / name, sr=8000, duration=0.05)
        rows.append({"filename": name, "fold": str(1 + k % 5), "target": str(k % 4), "category": f"c{k % 4}",
                     "src_file": str(100 + k // 2)})
    rows[7]["fold"] = ""  # no fold: left out, reported
    (root / "meta").mkdir()
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
    out = ingest_and_split(tmp_path, {
        "data": {"root": str(root / "audio"), "layout": "csv",
                 "csv": {"path": str(root / "meta" / "esc50.csv"), "path_column": "filename",
                         "label_column": "category"}},
        "split": {"mode": "column", "column": {"name": "fold", "test": [5], "val": ["4"]}}})
    fold = {r["filename"].removesuffix(".wav"): r["fold"] for r in rows}
    assert set(out["test"]["id"]) == {i for i, f in fold.items() if f == "5"}
    assert set(out["val"]["id"]) == {i for i, f in fold.items() if f == "4"}
    assert set(out["train"]["id"]) == {i for i, f in fold.items() if f in ("1", "2", "3")}
    assert out["unassigned"][["id", "reason"]].to_dict("records") == [{"id": rows[7]["filename"][:-4],
                                                                       "reason": "no_value"}]
    assert "1 clip(s) in no split" in capsys.readouterr().err


# --- folds: kfold, leave_one_group_out, column and lists folds, the refit fold -------------------

def speakers(n_groups: int = 60, *, seed: int = 0, segments: bool = False) -> pd.DataFrame:
    """Single-label speakers ``spk<g>`` of 1-4 clips (label ``L<g % 4>``); with ``segments`` each
    clip has 1-3 segments ``<clip>__s<k>`` sharing its clip_id."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for c in range(int(rng.integers(1, 5))):
            clip = f"spk{g}/c{c}"
            for k in range(int(rng.integers(1, 4)) if segments else 1):
                rows.append({"id": f"{clip}__s{k}" if segments else clip, "clip_id": clip, "label": f"L{g % 4}",
                             "group": f"spk{g}"})
    return pd.DataFrame(rows)


def assert_folds_are_clean(result, rows: pd.DataFrame) -> None:
    """Every evaluated fold assigns each assigned row once, with no group in two of its splits."""
    for f in fold_ids(result.info, refit=True):
        mine = fold_rows(result, f)
        assert not mine["id"].duplicated().any(), f
        groups = {s: set(group_keys(mine[mine["split"] == s])) for s in SPLITS}
        assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"]
                    or groups["val"] & groups["test"]), f
        assert list(mine.index) == sorted(mine.index)  # rows in input order within a fold
        order = {i: n for n, i in enumerate(rows["id"])}
        assert [order[i] for i in mine["id"]] == sorted(order[i] for i in mine["id"]), f


@pytest.mark.parametrize("segments", [False, True])
def test_kfold_tests_every_row_once_with_groups_disjoint(segments):
    rows = speakers(segments=segments)
    result = quiet(split_dataset, rows, seed=3, mode="kfold", k=5, val_share=0.2)
    ids = [str(i) for i in range(5)]
    assert result.info["k"] == 5 and [f["fold"] for f in result.info["folds"]] == ids
    assert result.info["refit"] == REFIT and fold_ids(result.info, refit=True) == [*ids, REFIT]
    assert fold_ids(result.info, refit=False) == ids
    assert list(dict.fromkeys(result.folds["fold"])) == [*ids, REFIT]  # fold order, then the refit fold
    assert list(result.folds.columns) == FOLD_COLUMNS and result.unassigned.empty
    tested = result.folds[(result.folds["fold"] != REFIT) & (result.folds["split"] == "test")]
    assert sorted(tested["id"]) == sorted(rows["id"])  # every row tested exactly once
    assert (tested.groupby("group")["fold"].nunique() == 1).all()  # a group in one test fold
    assert (tested.groupby("clip_id")["fold"].nunique() == 1).all()  # segments of a clip together
    for f in ids:
        mine = fold_rows(result, f)
        assert sorted(mine["id"]) == sorted(rows["id"])  # every row in every fold
        others = set(tested.loc[tested["fold"] != f, "id"])
        assert set(mine.loc[mine["split"].isin(["train", "val"]), "id"]) == others
        assert len(part(result, "val", f)) and len(part(result, "test", f))
        # stratified: every class is tested in every fold, near a fifth of its clips
        share = mine[mine["split"] == "test"].groupby("label").size() / rows.groupby("label").size()
        assert share.notna().all() and (share.between(0.1, 0.3)).all(), (f, share.to_dict())
    assert_folds_are_clean(result, rows)
    c = result.counts
    assert list(c.columns) == ["fold", "label", *SPLITS, "total"] and list(dict.fromkeys(c["fold"])) == ids
    totals = c[c["label"] == "total"].set_index("fold")
    for f in result.info["folds"]:
        assert [f[s] for s in SPLITS] == totals.loc[f["fold"], list(SPLITS)].tolist() and f["name"] is None
    assert result.info["hash"] == assignment_hash(result.folds)


def test_kfold_is_the_library_call_and_deterministic_for_a_seed():
    from sklearn.model_selection import StratifiedGroupKFold

    rows = speakers()
    fold = assign_kfold(rows, k=4, seed=11)
    y = pd.factorize(rows["label"], sort=True)[0]
    for i, (_, test) in enumerate(StratifiedGroupKFold(4, shuffle=True, random_state=11).split(rows, y, rows["group"])):
        assert (np.flatnonzero(fold == i) == np.sort(test)).all()
    first = quiet(split_dataset, rows, seed=11, mode="kfold", k=4)
    again = quiet(split_dataset, rows.copy(), seed=11, mode="kfold", k=4)
    assert first.folds.equals(again.folds) and first.info == again.info
    other = quiet(split_dataset, rows, seed=12, mode="kfold", k=4)
    assert not (assign_kfold(rows, k=4, seed=12) == fold).all()
    assert other.info["hash"] != first.info["hash"]


def test_kfold_bad_input_names_split_k():
    rows = speakers(6)
    with pytest.raises(ValueError, match=r"split\.k: 7 folds need at least 7 groups.*the rows have 6"):
        split_dataset(rows, seed=0, mode="kfold", k=7)
    for k in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"split\.k: must be an integer >= 2"):
            split_dataset(rows, seed=0, mode="kfold", k=k)
    # every class has fewer rows than folds (scikit-learn refuses): still named split.k
    few = table(["a", "a", "b", "b", "c", "c"])
    with pytest.raises(ValueError, match=r"split\.k: .*lower split\.k"):
        split_dataset(few, seed=0, mode="kfold", k=3)
    with pytest.raises(ValueError, match="without a label"):
        split_dataset(table(["a", "", "b"]), seed=0, mode="kfold", k=2)


def test_kfold_warns_once_per_class_with_fewer_groups_than_folds():
    rows = pd.concat([speakers(40), table(["tiny"] * 6, ["t0"] * 3 + ["t1"] * 3, prefix="t")], ignore_index=True)
    with pytest.warns(SmallClassWarning) as record:
        result = split_dataset(rows, seed=0, mode="kfold", k=5, val_share=0.0)
    messages = [str(w.message) for w in record if "'tiny'" in str(w.message)]
    assert len(messages) == 1, messages  # one line for the class, not one per fold
    missing = [f for f in fold_ids(result.info, refit=False) if part(result, "test", f)["label"].eq("tiny").sum() == 0]
    assert len(missing) == 3
    assert f"test of folds {', '.join(missing)}" in messages[0]
    assert "2 group(s), fewer than split.k = 5" in messages[0] and "split.mode kfold" in messages[0]
    assert all(w.filename == __file__ for w in record)


def test_leave_one_group_out_tests_each_group_alone():
    rows = speakers(12, segments=True)
    result = quiet(split_dataset, rows, seed=0, mode="leave_one_group_out", val_share=0.25)
    names = [f"spk{g}" for g in range(12)]  # natural order: spk2 before spk10
    assert [f["name"] for f in result.info["folds"]] == names and result.info["k"] == 12
    for f, name in zip(fold_ids(result.info, refit=False), names, strict=True):
        assert set(part(result, "test", f)["id"]) == set(rows.loc[rows["group"] == name, "id"])
        assert set(fold_rows(result, f)["id"]) == set(rows["id"])
        assert len(part(result, "val", f))
    assert_folds_are_clean(result, rows)
    refit = fold_rows(result, REFIT)
    assert set(refit["id"]) == set(rows["id"]) and "test" not in set(refit["split"])


def test_leave_one_group_out_needs_groups():
    no_group = table(["a", "b"] * 5)
    with pytest.raises(ValueError, match=r"split\.mode leave_one_group_out: the rows have no groups.*"
                                         r"data\.csv\.group_column"):
        split_dataset(no_group, seed=0, mode="leave_one_group_out")
    # as the process stage writes them: a clip without group has its clip id as group
    with pytest.raises(ValueError, match="the rows have no groups"):
        split_dataset(no_group.assign(group=no_group["clip_id"]), seed=0, mode="leave_one_group_out")
    with pytest.raises(ValueError, match=r"needs at least 2 groups, the rows have 1 \(spk\)"):
        split_dataset(table(["a", "b"] * 5, ["spk"] * 10), seed=0, mode="leave_one_group_out")
    # some clips without group: each is a fold of its own, said once
    mixed = table(["a", "b"] * 5, ["s1", "s1", "s2", "s2", "s3", "s3", "", "", "s4", "s4"])
    with pytest.warns(SplitWarning, match=r"2 clip\(s\) have no group, so each is a fold of its own"):
        result = quiet(split_dataset, mixed, seed=0, mode="leave_one_group_out")
    assert result.info["k"] == 6


def test_leave_one_group_out_warns_about_a_class_in_one_group():
    rows = pd.concat([speakers(8), table(["solo"] * 3, ["lone"] * 3, prefix="x")], ignore_index=True)
    with pytest.warns(SmallClassWarning) as record:
        result = split_dataset(rows, seed=0, mode="leave_one_group_out", val_share=0.0)
    messages = [str(w.message) for w in record]
    lone = [f["fold"] for f in result.info["folds"] if f["name"] == "lone"]
    assert messages == [f"class 'solo' has no clip in train of fold {lone[0]} (split.mode leave_one_group_out: the "
                        "class is in one group only, so the fold testing it never trains on it)"]


def esc50_like(n_clips: int = 100, n_folds: int = 5) -> tuple[pd.DataFrame, dict[str, str]]:
    """Clips of 4 labels in source recordings, the fold value (``1`` .. ``n_folds``) per source."""
    rows = table([f"L{i % 4}" for i in range(n_clips)], [f"src{i // 2}" for i in range(n_clips)])
    return rows, {c: str(1 + (i // 2) % n_folds) for i, c in enumerate(rows["clip_id"])}


def test_column_folds_reproduce_the_given_folds_in_natural_order():
    rows, fold = esc50_like(200, n_folds=10)
    fold[rows["clip_id"][3]] = " "  # no value: unassigned
    result = quiet(split_dataset, rows, seed=0, mode="column", column="fold", column_folds=True,
                   clips=manifest_of(rows, fold=fold), val_share=0.2)
    names = [f["name"] for f in result.info["folds"]]
    assert names == [str(v) for v in range(1, 11)]  # "10" after "9"
    assert [f["fold"] for f in result.info["folds"]] == [str(i) for i in range(10)]
    for f, value in zip(fold_ids(result.info, refit=False), names, strict=True):
        assert set(part(result, "test", f)["id"]) == {c for c, v in fold.items() if v == value}
        assert set(fold_rows(result, f)["id"]) == set(rows["id"]) - {rows["clip_id"][3]}
        assert len(part(result, "val", f))
    assert result.unassigned[["id", "reason"]].to_dict("records") == [{"id": rows["id"][3], "reason": "no_value"}]
    assert rows["id"][3] not in set(result.folds["id"])  # in no fold, not even the refit one
    assert set(fold_rows(result, REFIT)["id"]) == set(rows["id"]) - {rows["id"][3]}
    assert_folds_are_clean(result, rows)


def test_column_folds_keep_segments_together_and_leave_unknown_clips_out():
    rows = segmented_rows(40, max_segments=3)
    fold = {f"clip{c}": str(c % 4) for c in range(40)}
    clips = manifest_of(rows, fold=fold)
    clips = clips[clips["id"] != "clip7"]  # not in the manifest
    result = quiet(split_dataset, rows, seed=1, mode="column", column="fold", column_folds=True, clips=clips)
    assert [f["name"] for f in result.info["folds"]] == ["0", "1", "2", "3"]
    assert set(result.unassigned["clip_id"]) == {"clip7"} and set(result.unassigned["reason"]) == {"not_in_manifest"}
    for f in fold_ids(result.info, refit=True):
        assert (fold_rows(result, f).groupby("clip_id")["split"].nunique() == 1).all()


def test_column_folds_bad_input():
    rows, fold = esc50_like()
    clips = manifest_of(rows, fold=fold)
    with pytest.raises(ValueError, match=r"split\.column\.folds: cannot be combined with split\.column\.test"):
        split_dataset(rows, seed=0, mode="column", column="fold", column_folds=True, test=["5"], clips=clips)
    with pytest.raises(ValueError, match=r"split\.column\.name: folds need at least 2 distinct values.*1 \(5\)"):
        split_dataset(rows, seed=0, mode="column", column="fold", column_folds=True, clips=clips.assign(fold="5"))
    with pytest.raises(ValueError, match=r"split\.column\.name: no clip is assigned to a split \(100 no_value\)"):
        split_dataset(rows, seed=0, mode="column", column="fold", column_folds=True, clips=clips.assign(fold=None))


def test_column_folds_warn_once_per_class_missing_from_folds():
    rows, fold = esc50_like(80, n_folds=10)
    rows.loc[rows.index[:2], "label"] = "rare"  # one source recording: tested in one fold only
    with pytest.warns(SmallClassWarning) as record:
        split_dataset(rows, seed=0, mode="column", column="fold", column_folds=True,
                      clips=manifest_of(rows, fold=fold), val_share=0.0)
    rare = [str(w.message) for w in record if "'rare'" in str(w.message)]
    assert len(rare) == 1 and "test of folds 1, 2, 3, 4, 5, 6, 7, 8, 9" in rare[0], rare
    assert "train of fold 0" in rare[0]  # its only clips are tested there: never learnt in that fold


def test_fold_lists_reproduce_the_files(tmp_path):
    rows = genre_rows()
    given = {"first": [i for i in rows["id"] if int(i[-1]) in (0, 1)],
             "second": [i for i in rows["id"] if int(i[-1]) in (2, 3)],
             "third": [f"/data/root/{i}.au" for i in rows["id"] if int(i[-1]) == 4] + ["ghost.wav"]}
    paths = [write_list(tmp_path / f"{name}.txt", ["# fold"] + ids) for name, ids in given.items()]
    fold_lists = read_fold_lists(paths)
    assert [name for name, _ in fold_lists] == ["first", "second", "third"]
    result = quiet(split_dataset, rows, seed=0, mode="lists", fold_lists=fold_lists, clips=manifest_of(rows),
                   root="/data/root", val_share=0.3)
    assert [f["name"] for f in result.info["folds"]] == ["first", "second", "third"]
    tests = [{i for i in rows["id"] if int(i[-1]) in digits} for digits in ((0, 1), (2, 3), (4,))]
    for f, expected in zip(fold_ids(result.info, refit=False), tests, strict=True):
        assert set(part(result, "test", f)["id"]) == expected
        assert set(fold_rows(result, f)["id"]) == set().union(*tests)
    unlisted = {i for i in rows["id"] if i.endswith("5")}
    assert set(result.unassigned["id"]) == unlisted and (result.unassigned["reason"] == "in_no_list").all()
    assert not unlisted & set(result.folds["id"])
    assert result.unmatched.to_dict("records") == [{"list": "folds.2", "entry": "ghost.wav", "reason": "names no clip"}]


def test_fold_lists_bad_input(tmp_path):
    rows = genre_rows()
    clips = manifest_of(rows)
    a, b = ["blues/blues.00000", "jazz/jazz.00001"], ["rock/rock.00002", "blues/blues.00000.wav"]
    with pytest.raises(ValueError, match=r"clip 'blues/blues\.00000' is in split\.lists\.folds\.0 \[a\] "
                                         r"\('blues/blues\.00000'\) and in split\.lists\.folds\.1 \[b\]"):
        split_dataset(rows, seed=0, mode="lists", fold_lists=[("a", a), ("b", b)], clips=clips)
    with pytest.raises(ValueError, match=r"split\.lists\.folds: cannot be combined with split\.lists\.test"):
        split_dataset(rows, seed=0, mode="lists", fold_lists=[("a", a), ("b", b[:1])], lists={"test": a},
                      clips=clips)
    with pytest.raises(ValueError, match=r"split\.lists\.folds: needs at least 2 lists"):
        split_dataset(rows, seed=0, mode="lists", fold_lists=[("a", a)], clips=clips)
    with pytest.raises(ValueError, match=r"split\.lists\.folds\.1 \[b\]: names no clip with rows"):
        split_dataset(rows, seed=0, mode="lists", fold_lists=[("a", a), ("b", ["ghost"])], clips=clips)
    with pytest.raises(ValueError, match=r"split\.lists: no clip is assigned"):
        split_dataset(rows, seed=0, mode="lists", fold_lists=[("a", ["x"]), ("b", ["y"])], clips=clips)
    with pytest.raises(ValueError, match=r"split\.lists: train and test lists are required.*split\.lists\.folds"):
        split_dataset(rows, seed=0, mode="lists", lists={"train": a}, clips=clips)
    with pytest.raises(ValueError, match=r"split\.lists\.folds\.1: cannot read the list .*nope\.txt"):
        read_fold_lists([write_list(tmp_path / "a.txt", a), tmp_path / "nope.txt"])
    # read_lists leaves split.lists.folds to read_fold_lists
    assert read_lists({"train": None, "folds": ["x.txt", "y.txt"]}) == {}


def test_refit_fold_only_with_several_folds():
    rows = speakers(30)
    for mode, kw in [("kfold", {"k": 3}), ("leave_one_group_out", {})]:
        result = quiet(split_dataset, rows, seed=2, mode=mode, val_share=0.2, **kw)
        refit = fold_rows(result, REFIT)
        assert result.info["refit"] == REFIT and REFIT not in [f["fold"] for f in result.info["folds"]]
        assert sorted(refit["id"]) == sorted(rows["id"]) and set(refit["split"]) == {"train", "val"}
        assert not set(refit.loc[refit["split"] == "train", "group"]) & set(refit.loc[refit["split"] == "val", "group"])
        assert REFIT not in set(result.counts["fold"])
        # the refit fold is the carve of every assigned row
        from soundstage.split import carve_val
        carved = carve_val(rows, pd.Series(["train"] * len(rows), dtype=object), val_share=0.2, seed=2)
        assert refit["split"].tolist() == carved.tolist()
    ratio = quiet(split_dataset, rows, seed=2, ratios=RATIOS)
    assert REFIT not in set(ratio.folds["fold"]) and ratio.info["refit"] is None
    assert fold_ids(ratio.info, refit=True) == ["0"]


def test_info_is_json_serializable():
    rows, fold = esc50_like()
    result = quiet(split_dataset, rows, seed=0, mode="column", column="fold", column_folds=True,
                   clips=manifest_of(rows, fold=fold))
    info = json.loads(json.dumps(result.info))
    assert info == result.info and set(info) == {"mode", "k", "folds", "refit", "hash"}
    assert info["folds"][0] == {"fold": "0", "name": "1", **{s: len(part(result, s)) for s in SPLITS}}


def test_modes_constant():
    assert MODES == ("ratio", "kfold", "leave_one_group_out", "column", "lists")


# --- assignment hash and reading folds back ------------------------------------------------------

def test_assignment_hash_of_folds():
    rows = split_rows()
    other = rows["clip_id"].map(lambda c: SPLITS[(int(c[4:]) + 1) % 3])  # per clip, as a fold assigns
    folds = pd.concat([rows.assign(fold="0"), rows.assign(fold="1", split=other)])
    h = assignment_hash(folds)
    assert h != assignment_hash(rows) and len(h) == 12
    assert assignment_hash(folds.sample(frac=1.0, random_state=4)) == h
    assert assignment_hash(folds.drop_duplicates(["clip_id", "fold"])) == h  # segments count once
    assert assignment_hash(folds.astype({"fold": "category"})) == h
    # a clip tested in another fold (same split names, another fold): another hash
    moved = folds.copy()
    first = moved["clip_id"] == "clip5"
    moved.loc[first & (moved["fold"] == "1"), "fold"] = "2"
    assert assignment_hash(moved) != h
    # the folds swapped: another hash
    assert assignment_hash(folds.assign(fold=folds["fold"].map({"0": "1", "1": "0"}))) != h
    # pinned: a change of encoding would make every earlier run look like another split
    assert assignment_hash(pd.DataFrame({"id": ["b", "a"], "fold": ["0", "1"], "split": ["test", "train"]})) == \
        "e59cd45134ce"


def test_read_folds_and_rows_of_fold_round_trip(tmp_path):
    from soundstage.io import write_csv

    rows = speakers(20, segments=True)
    rows["id"] = "0" + rows["id"]  # ids and groups that look like numbers stay text
    rows["clip_id"] = "0" + rows["clip_id"]
    rows["group"] = [f"{int(g[3:]):03d}" for g in rows["group"]]
    result = quiet(split_dataset, rows, seed=0, mode="kfold", k=4)
    write_csv(tmp_path / "folds.csv", result.folds)
    back = read_folds(tmp_path / "folds.csv")
    assert back.equals(result.folds.astype({"label": str, "group": str}).reset_index(drop=True))
    assert back["group"].iloc[0].startswith("0") and set(back["fold"]) == {"0", "1", "2", "3", REFIT}
    assert assignment_hash(back) == result.info["hash"]

    features = pd.DataFrame({"id": rows["id"], "x": np.arange(len(rows))}).iloc[::-1]  # another row order
    features = pd.concat([features, pd.DataFrame({"id": ["stranger"], "x": [-1]})])
    for f in fold_ids(result.info, refit=True):
        got = rows_of_fold(features, back, f)
        mine = fold_rows(result, f)
        assert list(got.columns) == ["id", "x", "split"] and got["id"].tolist() == features["id"][:-1].tolist()
        assert dict(zip(got["id"], got["split"], strict=True)) == dict(zip(mine["id"], mine["split"], strict=True))
        assert got.index.equals(features.index[:-1])  # the table's index, to index arrays with
    assert set(rows_of_fold(features.head(5), back, "0")["id"]) == set(features["id"].head(5))  # inner join


def test_rows_of_fold_bad_input():
    rows, fold = esc50_like()
    result = quiet(split_dataset, rows, seed=0, mode="column", column="fold", column_folds=True,
                   clips=manifest_of(rows, fold=fold))
    with pytest.raises(ValueError, match=r"fold '7' is not in the fold table \(its folds: 0, 1, 2, 3, 4, all\)"):
        rows_of_fold(rows[["id"]], result.folds, "7")
    with pytest.raises(ValueError, match="no split column"):
        rows_of_fold(rows.assign(split="train"), result.folds, "0")
    with pytest.raises(ValueError, match="an id column"):
        rows_of_fold(rows[["label"]], result.folds, "0")
    twice = pd.concat([result.folds, fold_rows(result, "0").head(1)])
    with pytest.raises(ValueError, match=r"fold '0' assigns id\(s\) \['c00000'\] twice"):
        rows_of_fold(rows[["id"]], twice, "0")
    assert rows_of_fold(rows[["id"]], result.folds, 0)["split"].notna().all()  # an int fold reads as text


def test_empty_input_gives_one_empty_fold():
    result = split_dataset(table([]), seed=0, ratios=RATIOS)
    assert result.folds.empty and list(result.folds.columns) == FOLD_COLUMNS
    assert result.counts.to_dict("records") == [{"fold": "0", "label": "total", "train": 0, "val": 0, "test": 0,
                                                 "total": 0}]
    assert result.info["k"] == 1 and result.info["folds"][0]["train"] == 0
    with pytest.raises(ValueError, match=r"split\.k: 2 folds need at least 2 groups"):
        split_dataset(table([]), seed=0, mode="kfold", k=2)


# --- the CLI with folds (params split.k, split.column.folds, split.lists.folds) --------------------

def test_cli_kfold_writes_folds_and_their_info(tmp_path, capsys):
    from soundstage.cli import main
    from soundstage.io import read_csv, write_csv

    rows = speakers(24)
    write_csv(tmp_path / "000.csv", rows)
    (tmp_path / "params.yaml").write_text("seed: 5\nsplit: {mode: kfold, k: 3, val_share: 0.2}\n")
    assert main(["--params", str(tmp_path / "params.yaml"), "split", str(tmp_path / "000.csv"),
                 "--out-dir", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    folds = read_folds(tmp_path / "out" / "folds.csv")
    expected = quiet(split_dataset, rows, seed=5, mode="kfold", k=3, val_share=0.2)
    assert folds.equals(expected.folds.astype({"label": str, "group": str}))
    assert json.loads((tmp_path / "out" / "folds.json").read_text(encoding="utf-8")) == expected.info
    counts = read_csv(tmp_path / "out" / "counts.csv", text=["fold"])
    assert list(dict.fromkeys(counts["fold"])) == ["0", "1", "2"]


@pytest.mark.parametrize(("refit", "evaluated", "expected"), [
    (False, False, "m/folds/0 m/folds/1 m/folds/2"),
    (True, False, "m/folds/0 m/folds/1 m/folds/2 m/folds/all"),
    (True, True, "m/folds/0 m/folds/1 m/folds/2"),
])
def test_cli_folds_lists_the_targets_dvc_asks_for(tmp_path, capsys, refit, evaluated, expected):
    """`soundstage folds` turns folds.json into the paths a DVC stage hands Snakemake: the refit
    model's fold "all" only with train.refit, never with --evaluated."""
    from soundstage.cli import main

    rows = speakers(24)
    info = quiet(split_dataset, rows, seed=5, mode="kfold", k=3).info
    (tmp_path / "folds.json").write_text(json.dumps(info), encoding="utf-8")
    (tmp_path / "params.yaml").write_text(f"train: {{refit: {str(refit).lower()}}}\n")
    args = ["--params", str(tmp_path / "params.yaml"), "folds", "m/folds/{fold}",
            "--info", str(tmp_path / "folds.json")]
    assert main(args + (["--evaluated"] if evaluated else [])) == 0
    assert capsys.readouterr().out.strip() == expected


def test_cli_folds_of_one_split_ignore_refit(tmp_path, capsys):
    from soundstage.cli import main

    info = quiet(split_dataset, speakers(24), seed=5, mode="ratio",
                 ratios={"train": 0.6, "val": 0.2, "test": 0.2}).info
    (tmp_path / "folds.json").write_text(json.dumps(info), encoding="utf-8")
    (tmp_path / "params.yaml").write_text("train: {refit: true}\n")
    assert main(["--params", str(tmp_path / "params.yaml"), "folds", "s/{fold}.npz", "m/{fold}",
                 "--info", str(tmp_path / "folds.json")]) == 0
    assert capsys.readouterr().out.strip() == "s/0.npz m/0"


def test_esc50_folds_through_ingest(tmp_path):
    from audio_fixtures import write_tone

    root = tmp_path / "ESC-50"
    rows = []
    for k in range(40):
        name = f"{1 + k % 5}-{100 + k // 2}-A-{k % 4}.wav"
        write_tone(root / "audio" / name, sr=8000, duration=0.05)
        rows.append({"filename": name, "fold": str(1 + k % 5), "category": f"c{k % 4}"})
    rows[7]["fold"] = ""
    (root / "meta").mkdir()
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        out = ingest_and_split(tmp_path, {
            "data": {"root": str(root / "audio"), "layout": "csv",
                     "csv": {"path": str(root / "meta" / "esc50.csv"), "path_column": "filename",
                             "label_column": "category"}},
            "split": {"mode": "column", "column": {"name": "fold", "folds": True}}})
    fold = {r["filename"].removesuffix(".wav"): r["fold"] for r in rows}
    folds = out["folds"]
    info = json.loads((tmp_path / "split" / "folds.json").read_text(encoding="utf-8"))
    assert [f["name"] for f in info["folds"]] == ["1", "2", "3", "4", "5"] and info["refit"] == REFIT
    for i, value in enumerate(["1", "2", "3", "4", "5"]):
        tested = folds[(folds["fold"] == str(i)) & (folds["split"] == "test")]
        assert set(tested["id"]) == {c for c, f in fold.items() if f == value}
    assert out["unassigned"]["id"].tolist() == [rows[7]["filename"][:-4]]


def test_cli_fold_lists(tmp_path, capsys):
    from soundstage.cli import main
    from soundstage.io import write_csv

    rows = genre_rows()
    write_csv(tmp_path / "manifest.csv", manifest_of(rows))
    write_csv(tmp_path / "000.csv", rows)
    lists = [write_list(tmp_path / f"fold{k}.txt", [i for i in rows["id"] if int(i[-1]) % 3 == k]) for k in range(3)]
    (tmp_path / "params.yaml").write_text(f"data: {{root: /data/root}}\nsplit: {{mode: lists, lists: {{folds: "
                                          f"[{', '.join(repr(x) for x in lists)}]}}}}\n")
    args = ["--params", str(tmp_path / "params.yaml"), "split", str(tmp_path / "000.csv"),
            "--manifest", str(tmp_path / "manifest.csv"), "--out-dir", str(tmp_path / "out")]
    assert main(args) == 0
    capsys.readouterr()
    folds = read_folds(tmp_path / "out" / "folds.csv")
    info = json.loads((tmp_path / "out" / "folds.json").read_text(encoding="utf-8"))
    assert [f["name"] for f in info["folds"]] == ["fold0", "fold1", "fold2"]
    for k in range(3):
        tested = folds[(folds["fold"] == str(k)) & (folds["split"] == "test")]
        assert set(tested["id"]) == {i for i in rows["id"] if int(i[-1]) % 3 == k}
    Path(lists[1]).unlink()  # a fold list that is missing: exit 1, naming its key
    assert main(args) == 1
    assert "split.lists.folds.1: cannot read the list" in capsys.readouterr().err
