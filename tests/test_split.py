"""Tests of soundstage.split: stratification, no group leakage, determinism, stability, warnings.

Pure pandas/numpy on synthetic tables (no audio). "Exact" stratification means that every label
gets ``floor`` or ``ceil`` of ``ratio * label total`` clips in every split, which the greedy
guarantees with one clip per group once every target is at least one clip.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soundstage.split import (
    SPLITS,
    UNASSIGNED_COLUMNS,
    UNASSIGNED_REASONS,
    UNMATCHED_COLUMNS,
    SmallClassWarning,
    assign_splits,
    assignment_hash,
    counts_table,
    group_keys,
    read_lists,
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
    parts = {s: read_csv(tmp_path / "out" / f"{s}.csv") for s in SPLITS}
    assert sum(len(p) for p in parts.values()) == len(rows)
    expected = assign_splits(rows, ratios={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    got = pd.concat(parts.values()).set_index("id")["split"]
    assert (got.loc[rows["id"]].to_numpy() == expected.to_numpy()).all()
    c = read_csv(tmp_path / "out" / "counts.csv")
    assert c["label"].tolist() == ["a", "b", "tiny", "total"] and c["total"].iloc[-1] == len(rows)


# --- split.mode column and lists: the assignment from the data -----------------------------------

def manifest_of(rows: pd.DataFrame, **columns) -> pd.DataFrame:
    """The ingest manifest of ``rows``' clips: ``id`` (the clip id), an absolute ``path`` below
    ``/data/root``, and ``columns`` given per clip id as dicts."""
    ids = list(dict.fromkeys(rows["clip_id"].astype(str)))
    out = pd.DataFrame({"id": ids, "path": [f"/data/root/{i}.wav" for i in ids]})
    for name, by_id in columns.items():
        out[name] = [by_id.get(i) for i in ids]
    return out


def split_by_id(result) -> dict[str, str]:
    return {i: s for s, part in result.parts.items() for i in part["id"]}


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
    for s, part in result.parts.items():
        assert list(part.columns) == [*rows.columns, "split"] and (part["split"] == s).all()
    assert result.counts["total"].iloc[-1] == len(rows)


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
    train_groups, val_groups = set(result.parts["train"]["group"]), set(result.parts["val"]["group"])
    assert val_groups and not train_groups & val_groups
    n_val, n_rest = len(result.parts["val"]), len(result.parts["val"]) + len(result.parts["train"])
    assert abs(n_val / n_rest - 0.25) < 0.05
    assert (result.parts["val"]["label"].value_counts() > 0).all() and result.parts["val"]["label"].nunique() == 4
    assert split_by_id(run(3)) == got  # deterministic for a seed
    assert split_by_id(run(4)) != got
    assert split_by_id(run(3, 0.0)) == {c: "test" if f == "5" else "train" for c, f in fold.items()}


def test_segments_of_a_clip_stay_together_in_column_mode():
    rows = segmented_rows(60, max_segments=4)
    fold = {f"clip{c}": str(c % 5) for c in range(60)}
    result = quiet(split_dataset, rows, seed=1, mode="column", clips=manifest_of(rows, fold=fold), column="fold",
                   test=["0"])
    assigned = pd.concat(result.parts.values())
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
    with pytest.raises(ValueError, match=r"split\.mode: unknown mode 'kfold'"):
        split_dataset(rows, seed=0, mode="kfold")


def test_ratio_mode_of_split_dataset_is_split_table():
    rows = random_dataset(np.random.default_rng(8), multi_label=True)
    result = quiet(split_dataset, rows, seed=1, mode="ratio", ratios=RATIOS)
    parts, c = quiet_split(rows, ratios=RATIOS, seed=1)
    assert all(result.parts[s].equals(parts[s]) for s in SPLITS) and result.counts.equals(c)
    assert result.unassigned.empty and result.unmatched.empty


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
    assert not (result.parts["val"]).shape[0]
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
    assert len(pd.concat(result.parts.values())) == len(rows)


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
    assert not set(result.parts["train"]["group"]) & set(result.parts["val"]["group"]) and len(result.parts["val"])
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
    parts = {s: read_csv(tmp_path / "out" / f"{s}.csv") for s in SPLITS}
    assert set(parts["test"]["id"]) == {c for c, f in fold.items() if f == "5"}
    assert ids[0] not in set(pd.concat(parts.values())["id"]) and len(parts["val"])

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
    assert set(read_csv(tmp_path / "out" / "test.csv")["id"]) == {i for i in rows["id"] if int(i[-1]) == 5}
    # a list file that is missing: exit 1, naming the key
    Path(test).unlink()
    assert main(args) == 1
    assert "split.lists.test: cannot read the list" in capsys.readouterr().err


# --- through ingest: official test sets of real dataset layouts ----------------------------------

def ingest_and_split(tmp_path, params: dict) -> dict[str, pd.DataFrame]:
    """``soundstage ingest`` then ``soundstage split`` (on rows as process writes them for unsegmented
    clips); returns the split tables and unassigned.csv by name."""
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
    return {name: read_csv(tmp_path / "split" / f"{name}.csv") for name in (*SPLITS, "unassigned")}


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
