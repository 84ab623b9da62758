"""Stage ``split``: cross-validation folds, each a train/val/test assignment, from ratios or from the data.

Five modes (``params.yaml: split.mode``), one entry point, :func:`split_dataset`:

``ratio`` (default)
    One fold: stratified, group-aware, seeded split by ``split.ratios`` (:func:`split_table`,
    described below).
``kfold``
    ``split.k`` folds: scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded) over the groups, so
    every clip is tested in exactly one fold and no group is in two folds' test sets; train is every
    other fold's clips (:func:`assign_kfold`).
``leave_one_group_out``
    One fold per group (speaker, artist), in natural order of the group names: test is that group,
    train every other group. Needs real groups (a clip that is its own group would be a fold).
``column``
    A per-clip metadata value (a manifest column: ``fold``, ``take``): a split name
    (``train``/``val``/``test``); or, with a rule (``split.column.test`` and optionally ``.val``: lists
    of values, compared as text), test for those values, val for those, train for every other value
    (:func:`assign_from_column`); or, with ``split.column.folds: true``, a fold name: one fold per
    distinct value (natural order: ``2`` before ``10``), test the clips of that value, train the
    others. Official test sets: ESC-50's fold 5 or its five folds, UrbanSound8K's ten, the
    free-spoken-digit takes 0-4.
``lists``
    Text files of clip ids or file paths, one per split (:func:`read_list`,
    :func:`assign_from_lists`): GTZAN's artist-filtered lists; or ``split.lists.folds``, one file
    of test clips per fold (:func:`read_fold_lists`).

The output is one long table (:data:`FOLD_COLUMNS`, ``data/split/folds.csv``) of ``(row, fold,
split)``: fold ids are ``"0"``, ``"1"``, ... (``"0"`` alone in ratio mode and for a single data-given
assignment) and, when there are several folds, ``"all"``: the *refit* assignment, every assigned row
in train but for a carved val, to train the final model on (:data:`REFIT`). In every fold each
assigned row is in exactly one split; :func:`rows_of_fold` picks a fold's rows out of any table with
an ``id`` column, :func:`read_folds` reads the table back.

In the data modes a clip that the data does not place (no value, a value that is no split name, in
no list) is *unassigned*: never trained or scored on in any fold, and returned with a reason
(:data:`UNASSIGNED_REASONS`). When the data gives no val clip at all (always in the fold modes), val
is carved out of each fold's train with the ratio greedy below (group-aware, stratified, seeded):
``split.val_share`` of train (:func:`carve_val`). The assignment is per clip, so segments of a clip
stay together; the data decides alone whether a group (a speaker) spans train and test (the
free-spoken-digit takes do). A class missing from a split of a fold is warned about once per class,
naming the folds (:class:`SmallClassWarning`).

Ratio mode
----------
The unit of assignment is the *group* (artist, speaker, source recording; a segmented clip's
segments share their clip as group; a row without a group is its own group, keyed by its
``clip_id``), so no group ever appears in two splits. A group may hold clips of several labels
(a speaker who says every digit).

Default mode (``stable=False``): a deterministic greedy in two passes over the groups.

1. *Coverage.* Labels are visited rarest first (fewest groups). For every split with a non-zero
   ratio that holds no clip of the label yet, one unassigned group of the label is placed there:
   a seeded-random one among those whose clip count of the label fits the split's target for it,
   else the smallest. Smaller splits are served first. So whenever a label has at least as many
   groups as there are non-empty splits (3, or 2 with ``val: 0``), it appears in every split
   (multi-label groups can make this impossible; it is then warned about). A label with fewer
   groups is left to pass 2, which places a lone group in train (a class that cannot be
   everywhere is at least learnt).
2. *Balance.* The other groups, largest first (seeded order among equal sizes), each go to the
   split where they reduce the stratification error most: the sum over the group's labels of
   ``|clips - target| / label total``, an L1 distance to ``ratio * label total`` in which every
   label weighs the same. Ties go to the split that is least full relative to its targets, then
   to a seeded choice. With one clip per group this gives every label exactly ``floor`` or
   ``ceil`` of its target in every split (once each target is at least one clip).

Cost: ``O(n_groups * n_labels)`` time (in practice ``O(n_groups * labels per group)``) and
``O(n_clips)`` memory. Every random choice is a hash of ``(seed, group)`` rather than a draw from a
generator, so the result depends on the seed and the set of rows only: not on row order, and not on
the numpy version.

Stable mode (``stable=True``): a group's split is a pure function of ``(seed, group, ratios)``: a
hash of ``(seed, group)`` mapped to ``[0, 1)`` falls in ``[0, test)`` → test, ``[test, test + val)``
→ val, else train. Adding (or removing) files therefore never moves another clip, and keeping
``test`` fixed while moving ratio between train and val never changes the test set. The price is
stratification: any rule under which a group's split cannot depend on the other groups (which is
what "adding files never moves a clip" demands without remembering a previous split) is a fixed
function per group, so per-label counts are only multinomial around the targets (a label with
``n`` groups lands ``sqrt(n * r * (1 - r))`` groups from its target on average), and a small class
can miss val or test. Ordering groups by hash *within* a label and cutting at ratio ranks would
stratify exactly, but inserting a group shifts the rank of every group after it, moving clips, so
it does not keep the guarantee. Hence both modes: exact stratification for one-off experiments,
stable for growing datasets; ``split_table`` warns about classes missing from a split either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
#: ``params.yaml: split.mode``.
MODES = ("ratio", "kfold", "leave_one_group_out", "column", "lists")
#: Columns of the fold table (``data/split/folds.csv``): one row per (input row, fold) assigned in the fold.
FOLD_COLUMNS = ["id", "clip_id", "label", "group", "fold", "split"]
#: Fold id of the refit assignment (every assigned row in train or val), present when there are several folds.
REFIT = "all"
#: Columns of the table of clips that the data left out (``data/split/unassigned.csv``).
UNASSIGNED_COLUMNS = ["id", "clip_id", "label", "group", "reason"]
#: Why a clip was left out of every split (the ``reason`` column).
UNASSIGNED_REASONS = {
    "no_value": "split.mode column: the clip's value of split.column.name is missing or empty",
    "not_a_split": "split.mode column without split.column.test: the value is none of train, val, test",
    "not_in_manifest": "split.mode column: the clip id is not in the manifest (a manifest older than the rows)",
    "in_no_list": "split.mode lists: no list (or fold list) names the clip",
}
#: Columns of the table of list entries that name no clip to split (:func:`assign_from_lists`).
UNMATCHED_COLUMNS = ["list", "entry", "reason"]
#: Hex digits kept of :func:`assignment_hash`: 48 bits, so two assignments share one with odds ~1 in 3e14.
HASH_CHARS = 12
_TOL = 1e-9


class SmallClassWarning(UserWarning):
    """A class has too few groups to appear in every split, or ended up missing from one."""


class SplitWarning(UserWarning):
    """Something in the data-given assignment looks unintended (a val rule or list that gave no clip)."""


def _ratio_array(ratios: Mapping[str, float]) -> np.ndarray:
    """``ratios`` ordered like :data:`SPLITS` (``params.yaml: split.ratios``, validated there)."""
    return np.array([float(ratios[s]) for s in SPLITS])


def group_keys(rows: pd.DataFrame) -> pd.Series:
    """The group of every row as text: ``group``, or where that is missing or empty, the row's
    ``clip_id`` (or ``id`` without a ``clip_id`` column), so segments of one clip stay together."""
    n = len(rows)
    fallback = pd.Series([pd.NA] * n, index=rows.index, dtype="string")
    for col in ("id", "clip_id"):  # clip_id wins where present
        if col in rows:
            own = rows[col].astype("string")
            fallback = own.where(own.notna() & (own.str.strip() != ""), fallback)
    if fallback.isna().any():
        raise ValueError("split: every row needs an id or clip_id")
    if "group" not in rows:
        return fallback.astype(str)
    group = rows["group"].astype("string")
    return group.where(group.notna() & (group.str.strip() != ""), fallback).astype(str)


def _unit(seed: int, group: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from ``(seed, salt, group)``: the seeded randomness of this module."""
    digest = hashlib.sha256(f"{seed}\0{salt}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _labels(rows: pd.DataFrame) -> pd.Series:
    if "label" not in rows:
        raise ValueError("split: rows need a label column")
    label = rows["label"].astype("string")
    bad = label.isna() | (label.str.strip() == "")
    if bad.any():
        raise ValueError(f"split: {int(bad.sum())} row(s) without a label")
    return label.astype(str)


def assign_splits(rows: pd.DataFrame, *, ratios: Mapping[str, float], seed: int,
                  stable: bool = False) -> pd.Series:
    """Return the split name of every row (a Series named ``split``, indexed like ``rows``).

    Parameters
    ----------
    rows : DataFrame
        Must hold ``label``; ``group`` is optional (missing or empty: the row's ``clip_id``, else
        its ``id``, is its group).
    ratios : mapping
        ``{"train": .., "val": .., "test": ..}``, each >= 0 (train > 0), summing to 1
        (``params.yaml: split.ratios``; :func:`soundstage.config.validate_params` checks them).
    seed : int
        Seed of every random choice.
    stable : bool
        Hash-based assignment that never moves an existing group when rows are added (see the
        module docstring for the trade-off).
    """
    ratio = _ratio_array(ratios)
    if rows.empty:
        return pd.Series([], dtype=str, index=rows.index, name="split")
    groups = group_keys(rows)
    labels = _labels(rows)
    if stable:
        # test at the bottom of [0, 1): its membership depends on ratios["test"] only.
        val_edge, test_edge = ratio[2] + ratio[1], ratio[2]
        def pick(g: str) -> str:
            u = _unit(seed, g)
            return "test" if u < test_edge else "val" if u < val_edge else "train"
        mapping = {g: pick(g) for g in groups.unique()}
    else:
        mapping = _greedy(groups.to_numpy(), labels.to_numpy(), ratio=ratio, seed=seed)
    return pd.Series(groups.map(mapping).to_numpy(), index=rows.index, name="split", dtype=object)


def _greedy(groups: np.ndarray, labels: np.ndarray, *, ratio: np.ndarray, seed: int) -> dict[str, str]:
    gcode, gnames = pd.factorize(groups, sort=True)
    lcode, _ = pd.factorize(labels, sort=True)
    n_groups, n_labels, n_splits = len(gnames), int(lcode.max()) + 1, len(SPLITS)
    # Sparse group x label counts as (group, label, count) triples sorted by group, then label.
    uniq, pcount = np.unique(gcode.astype(np.int64) * n_labels + lcode, return_counts=True)
    pgroup, plabel = uniq // n_labels, uniq % n_labels
    pcount = pcount.astype(float)
    indptr = np.searchsorted(pgroup, np.arange(n_groups + 1))
    size = np.bincount(pgroup, weights=pcount, minlength=n_groups)
    total = np.bincount(plabel, weights=pcount, minlength=n_labels)
    n_label_groups = np.bincount(plabel, minlength=n_labels)
    target = ratio[:, None] * total[None, :]
    current = np.zeros((n_splits, n_labels))
    assigned = np.full(n_groups, -1)
    key = np.array([_unit(seed, str(g), "order") for g in gnames])
    active = np.flatnonzero(ratio > 0)

    def place(g: int, s: int) -> None:  # coverage pass only; the balance pass inlines this
        assigned[g] = s
        sl = slice(indptr[g], indptr[g + 1])
        current[s, plabel[sl]] += pcount[sl]

    # 1. Coverage: every label with enough groups gets one group in each non-empty split.
    by_label = np.argsort(plabel, kind="stable")
    label_ptr = np.searchsorted(plabel[by_label], np.arange(n_labels + 1))
    seed_splits = sorted(active, key=lambda s: (ratio[s], s))  # small splits first
    for lab in np.lexsort((np.arange(n_labels), n_label_groups)):  # rarest label first
        if n_label_groups[lab] < len(active):
            continue  # cannot reach every split: left to the balance pass (SmallClassWarning)
        pairs = by_label[label_ptr[lab]:label_ptr[lab + 1]]
        for s in seed_splits:
            if current[s, lab] > 0:
                continue
            free = pairs[assigned[pgroup[pairs]] < 0]
            if not len(free):
                break
            cand_g, cand_c = pgroup[free], pcount[free]
            fits = cand_c <= max(1.0, target[s, lab])
            if fits.any():
                g = cand_g[fits][np.argmin(key[cand_g[fits]])]
            else:
                g = cand_g[np.lexsort((key[cand_g], size[cand_g], cand_c))[0]]
            place(int(g), s)

    # 2. Balance: largest groups first, each where it lowers the L1 stratification error most.
    # Plain Python floats: per group only ~3 x (labels of the group) numbers are touched, for which
    # numpy's per-call overhead would dominate.
    cur, tgt, tot = current.tolist(), target.tolist(), total.tolist()
    labs_of, cnt_of, ptr = plabel.tolist(), pcount.tolist(), indptr.tolist()
    owner = assigned.tolist()
    act = [int(s) for s in active]
    for g in np.lexsort((np.arange(n_groups), key, -size)).tolist():  # codes follow sorted names
        if owner[g] >= 0:
            continue
        labs, cs = labs_of[ptr[g]:ptr[g + 1]], cnt_of[ptr[g]:ptr[g + 1]]
        deltas = []
        for s in act:
            row, want = cur[s], tgt[s]
            deltas.append(sum((abs(want[lab] - row[lab] - c) - abs(want[lab] - row[lab])) / tot[lab]
                              for lab, c in zip(labs, cs, strict=True)))
        low = min(deltas)
        cand = [s for s, d in zip(act, deltas, strict=True) if d <= low + _TOL]
        if len(cand) > 1:  # equally good: the split least full relative to its targets
            fills = [sum((cur[s][lab] + c) / tgt[s][lab] * c for lab, c in zip(labs, cs, strict=True)) for s in cand]
            low = min(fills)
            cand = [s for s, f in zip(cand, fills, strict=True) if f <= low + _TOL * max(1.0, abs(low))]
        best = cand[int(_unit(seed, str(gnames[g]), "tie") * len(cand))] if len(cand) > 1 else cand[0]
        owner[g] = best
        row = cur[best]
        for lab, c in zip(labs, cs, strict=True):
            row[lab] += c
    return {str(name): SPLITS[s] for name, s in zip(gnames, owner, strict=True)}


def counts_table(labels: pd.Series, split: pd.Series) -> pd.DataFrame:
    """Clip counts per label x split, with a ``total`` row and column.

    Columns ``label, train, val, test, total``; one row per label (sorted), then ``total``.
    """
    names, lcode = np.unique(labels.astype(str).to_numpy(), return_inverse=True)
    scode = pd.Index(SPLITS).get_indexer(split.to_numpy())
    if (scode < 0).any():
        raise ValueError(f"unknown split name(s): {sorted(set(split[scode < 0]))}")
    grid = np.zeros((len(names), len(SPLITS)), dtype=np.int64)
    np.add.at(grid, (lcode, scode), 1)
    counts = pd.DataFrame(grid, index=pd.Index(names.astype(str), dtype=object), columns=list(SPLITS))
    # concat, not .loc["total"] =, so that a class named "total" is not overwritten
    counts = pd.concat([counts, counts.sum(axis=0).to_frame("total").T])
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "label"
    counts.columns.name = None
    return counts.reset_index()


def split_table(rows: pd.DataFrame, *, ratios: Mapping[str, float], seed: int,
                stable: bool = False) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Split ``rows`` and return ``({split: rows + split column}, counts)``.

    ``counts`` is :func:`counts_table`. Warns (:class:`SmallClassWarning`, naming the class) when a
    class has fewer groups than splits with a non-zero ratio, so it cannot appear in all of them,
    and when a class with enough groups still misses a split (stable mode draws each group
    independently; multi-label groups can make full coverage impossible).
    """
    out, counts = _ratio_split(rows, ratios=ratios, seed=seed, stable=stable)
    return {s: out[out["split"] == s].reset_index(drop=True) for s in SPLITS}, counts


def _ratio_split(rows: pd.DataFrame, *, ratios: Mapping[str, float], seed: int,
                 stable: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rows`` (index reset) with a ``split`` column, and its counts; warns for the caller's caller."""
    rows = rows.reset_index(drop=True)
    out = rows.assign(split=assign_splits(rows, ratios=ratios, seed=seed, stable=stable).to_numpy())
    counts = counts_table(out["label"] if len(out) else pd.Series([], dtype=str), out["split"])
    if len(out):
        _warn_missing(out["label"].astype(str), group_keys(rows), counts, _ratio_array(ratios), stable=stable)
    return out, counts


def _warn_missing(labels: pd.Series, groups: pd.Series, counts: pd.DataFrame, ratio: np.ndarray, *,
                  stable: bool) -> None:
    active = [s for s, r in zip(SPLITS, ratio, strict=True) if r > 0]
    n_groups = groups.groupby(labels).nunique()
    table = counts.iloc[:-1].set_index("label")  # without the totals row (a class may be named "total")
    for label, n in n_groups.items():
        missing = [s for s in active if table.loc[label, s] == 0]
        if not missing:
            continue
        where = ", ".join(missing)
        if n < len(active):
            msg = (f"class {label!r} has {n} group(s): too few to appear in all {len(active)} splits "
                   f"({', '.join(active)}); it has no clip in {where}")
        else:
            why = ("stable mode draws every group's split from its hash" if stable else
                   "its groups also hold other classes that were placed first")
            msg = f"class {label!r} has no clip in {where} although it has {n} groups ({why})"
        warnings.warn(msg, SmallClassWarning, stacklevel=4)  # past _ratio_split and its caller


# --- assignment from the data (split.mode column, lists) -----------------------------------------

def clip_ids(rows: pd.DataFrame) -> pd.Series:
    """The clip of every row as text: ``clip_id`` where present and not empty, else ``id`` (a
    segment ``<clip_id>__s<k>`` belongs to its clip)."""
    clip = rows["id"].astype("string") if "id" in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
    if "clip_id" in rows:
        own = rows["clip_id"].astype("string")
        clip = own.where(own.notna() & (own.str.strip() != ""), clip)
    if clip.isna().any():
        raise ValueError("split: every row needs an id or clip_id")
    return clip.astype(str)


def assignment_hash(table: pd.DataFrame) -> str:
    """A short fingerprint of which clip is in which split (of which fold): the MLflow tag ``split.hash``.

    The first :data:`HASH_CHARS` hex digits of the SHA-1 of the sorted, distinct ``(clip, split)``
    pairs of ``table``, or with a ``fold`` column ``(clip, fold, split)`` triples, the clip as
    :func:`clip_ids` gives it and the fold as text.

    Parameters
    ----------
    table : DataFrame
        ``split`` and ``clip_id`` (or ``id``) per row, and optionally ``fold``: the features table,
        or the split stage's fold table (:data:`FOLD_COLUMNS`). Segments of a clip count once, so
        segmenting clips differently keeps the hash.

    Returns
    -------
    str
        :data:`HASH_CHARS` lowercase hex digits. The same assignment gives the same hash whatever the
        row order, the dtypes or the number of segments per clip; any clip moving to another split or
        fold, or added or removed, gives another hash. A row without a split (or fold) counts as a
        split (fold) of its own.

    Raises
    ------
    ValueError
        No ``split`` column, or a row with neither ``id`` nor ``clip_id``.
    """
    if "split" not in table:
        raise ValueError("split: the table has no split column")
    columns = [clip_ids(table)] + [table[c].astype("string").fillna("").astype(str)
                                   for c in ("fold", "split") if c in table]
    keys = sorted(set(zip(*columns, strict=True)))
    # JSON, not joined text: no clip id, whatever characters it holds, can blur two keys into one.
    text = json.dumps(keys, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def _unassigned(rows: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    """:data:`UNASSIGNED_COLUMNS` of the rows with a ``reason`` (the others have none)."""
    left = reason.notna()
    out = pd.DataFrame({"id": rows["id"].astype(str) if "id" in rows else clip_ids(rows),
                        "clip_id": clip_ids(rows),
                        "label": rows["label"] if "label" in rows else pd.NA,
                        "group": rows["group"] if "group" in rows else pd.NA,
                        "reason": reason}, index=rows.index)
    return out[left].reset_index(drop=True)[UNASSIGNED_COLUMNS]


def _by_clip(values: pd.Series, what: str) -> pd.Series:
    values = values.copy()
    values.index = values.index.astype(str)
    if values.index.duplicated().any():
        dup = values.index[values.index.duplicated()][:3].tolist()
        raise ValueError(f"split: {what} names clip(s) {dup} twice")
    return values


def assign_from_column(rows: pd.DataFrame, values: pd.Series, *, test: Sequence[object] | None = None,
                       val: Sequence[object] | None = None) -> tuple[pd.Series, pd.DataFrame]:
    """Split of every row from its clip's metadata value.

    Parameters
    ----------
    rows : DataFrame
        ``id`` (and ``clip_id``, ``label``, ``group``) per row; segments of a clip share ``clip_id``.
    values : Series
        The value of every clip (``split.column.name`` of the manifest), indexed by clip id; compared
        as stripped text. Missing or empty: the clip is unassigned (``no_value``).
    test, val : sequence, optional
        The rule (``split.column.test``, ``split.column.val``): clips whose value is in ``test`` go
        to test, in ``val`` to val, any other value to train. Without ``test`` the values are split
        names themselves (``train``, ``val``, ``test``, any case); another value is ``not_a_split``.

    Returns
    -------
    split : Series
        Split name of every row, indexed like ``rows``, named ``split``; missing (``None``) for an
        unassigned row.
    unassigned : DataFrame
        :data:`UNASSIGNED_COLUMNS`, one row per unassigned row of ``rows``.
    """
    if val is not None and test is None:
        raise ValueError("split.column.val: needs split.column.test (a rule names test values)")
    text, known = _column_text(rows, values)
    if test is None:
        split = [t.lower() if t is not None and t.lower() in SPLITS else None for t in text]
    else:
        test_set, val_set = ({str(v).strip() for v in vs} for vs in (test, val or ()))
        if test_set & val_set:
            raise ValueError(f"split.column.val: value(s) {sorted(test_set & val_set)} also in split.column.test")
        split = [None if t is None else "test" if t in test_set else "val" if t in val_set else "train" for t in text]
    reason = [None if s is not None else "no_value" if t is None else "not_a_split"
              for s, t in zip(split, text, strict=True)]
    reason = pd.Series(np.where(known, np.array(reason, dtype=object), "not_in_manifest"), index=rows.index,
                       dtype=object)
    return _split_series(split, reason.isna(), rows.index), _unassigned(rows, reason)


def _column_text(rows: pd.DataFrame, values: pd.Series) -> tuple[list[str | None], np.ndarray]:
    """Every row's clip value as stripped text (``None``: missing or empty), and whether the clip is
    in ``values`` (indexed by clip id) at all."""
    values = _by_clip(values, "the manifest")
    clip = clip_ids(rows)
    by_clip = {c: str(v).strip() for c, v in values.items() if not pd.isna(v) and str(v).strip()}
    return [by_clip.get(c) for c in clip], clip.isin(values.index).to_numpy()


def _split_series(split: Sequence[object], keep: pd.Series | np.ndarray, index: pd.Index) -> pd.Series:
    """Split names where ``keep``, else ``None``: object dtype, named ``split``."""
    names = [s if k and isinstance(s, str) else None for s, k in zip(split, np.asarray(keep), strict=True)]
    return pd.Series(names, index=index, dtype=object, name="split")


def read_list(path: str | Path) -> list[str]:
    """Entries of a split list file: one clip id or file path per line; blank lines and lines
    starting with ``#`` are skipped (a ``#`` inside a line is part of a file name)."""
    with open(path, encoding="utf-8-sig") as fh:
        lines = [line.strip() for line in fh]
    return [line for line in lines if line and not line.startswith("#")]


def read_lists(paths: Mapping[str, Any]) -> dict[str, list[str]]:
    """:func:`read_list` of every given ``split.lists.<split>`` file (``None``: no list); a ``folds``
    key (``split.lists.folds``, read by :func:`read_fold_lists`) is skipped.

    Raises
    ------
    ValueError
        Naming the key of a file that cannot be read.
    """
    return {name: _read_named(f"split.lists.{name}", path) for name, path in paths.items()
            if path is not None and name != "folds"}


def read_fold_lists(paths: Sequence[str | Path]) -> list[tuple[str, list[str]]]:
    """``(name, entries)`` of every ``split.lists.folds`` file, in order: fold ``i`` tests the clips
    of file ``i``, named by the file's stem (:func:`read_list` reads the entries).

    Raises
    ------
    ValueError
        Naming the key (``split.lists.folds.<i>``) of a file that cannot be read.
    """
    return [(Path(path).stem, _read_named(f"split.lists.folds.{i}", path)) for i, path in enumerate(paths)]


def _read_named(key: str, path: str | Path) -> list[str]:
    try:
        return read_list(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}: cannot read the list {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _strip_extension(name: str) -> str:
    """``a/b.00001.wav`` -> ``a/b.00001``: the last extension only, as ingest makes clip ids."""
    head, sep, last = name.rpartition("/")
    return f"{head}{sep}{last.rsplit('.', 1)[0]}" if "." in last.lstrip(".") else name


class _ClipIndex:
    """Where a list entry finds its clip: the clip id, a path below the data root (extension
    dropped), an absolute path, or a file name that only one clip has."""

    def __init__(self, ids: Sequence[str], paths: Sequence[str] | None, root: str | Path | None) -> None:
        self.ids = set(ids)
        self.by_path: dict[str, str] = {}
        self.by_name: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        for i, clip in enumerate(ids):
            self.by_stem.setdefault(clip.rpartition("/")[2], []).append(clip)
            if paths is not None and isinstance(paths[i], str) and paths[i]:
                path = os.path.normpath(paths[i]).replace("\\", "/")
                self.by_path[path] = clip
                self.by_name.setdefault(path.rpartition("/")[2], []).append(clip)
        # The root as given (paths relative to the repository), absolute, and with links resolved.
        given = [] if root is None else [os.path.normpath(root), os.path.abspath(root), os.path.realpath(root)]
        self.roots = [r.replace("\\", "/").rstrip("/") for r in dict.fromkeys(given)]

    def find(self, entry: str) -> tuple[str | None, str]:
        """``(clip id, "")`` or ``(None, why not)``."""
        text = entry.replace("\\", "/")
        norm = os.path.normpath(text).replace("\\", "/") if text else text
        full = os.path.abspath(norm).replace("\\", "/") if text else text
        relative = [text, norm] + [p[len(r) + 1:] for p in (norm, full) for r in self.roots
                                   if r and p.startswith(r + "/")]
        for rel in dict.fromkeys(relative):
            for key in (rel, _strip_extension(rel)):
                if key in self.ids:
                    return key, ""
        if os.path.isabs(norm) and norm in self.by_path:
            return self.by_path[norm], ""
        name = norm.rpartition("/")[2]
        for table, key in ((self.by_name, name), (self.by_stem, name), (self.by_stem, _strip_extension(name))):
            found = sorted(set(table.get(key, [])))
            if len(found) == 1:
                return found[0], ""
            if len(found) > 1:
                return None, f"ambiguous: {len(found)} clips named {key!r} ({', '.join(found[:3])})"
        return None, "names no clip"


def assign_from_lists(rows: pd.DataFrame, lists: Mapping[str, Sequence[str]], *, clips: pd.DataFrame | None = None,
                      root: str | Path | None = None) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """Split of every row from lists of clip ids or file paths.

    Parameters
    ----------
    rows : DataFrame
        ``id`` (and ``clip_id``, ``label``, ``group``) per row; segments of a clip share ``clip_id``.
    lists : mapping
        ``{split: entries}`` for some of ``train``, ``val``, ``test`` (:func:`read_list` of
        ``split.lists.<split>``). An entry is a clip id, or a path relative to ``root`` (or to the
        repository, through ``root``) whose extension may differ, or an absolute path, or a file
        name (with or without extension) that only one clip has.
    clips : DataFrame, optional
        The clips entries may name: the manifest (``id``, absolute ``path``). Default: the clips of
        ``rows``, by id only.
    root : path, optional
        ``data.root``: the folder clip ids are relative to.

    Returns
    -------
    split : Series
        Split name of every row (``None``: in no list), indexed like ``rows``, named ``split``.
    unassigned : DataFrame
        :data:`UNASSIGNED_COLUMNS` of the rows in no list (reason ``in_no_list``).
    unmatched : DataFrame
        :data:`UNMATCHED_COLUMNS`: entries that name no clip, more than one, or a clip without rows
        (rejected before the split).

    Raises
    ------
    ValueError
        A clip named by two lists (naming the clip and both lists), or an unknown split name.
    """
    unknown = sorted(set(lists) - set(SPLITS))
    if unknown:
        raise ValueError(f"split.lists: unknown split(s) {unknown} (train, val, test)")
    named, unmatched = _match_lists(rows, [(s, f"split.lists.{s}", lists[s]) for s in SPLITS if s in lists],
                                    clips=clips, root=root)
    split = _split_series(named, np.ones(len(named), dtype=bool), rows.index)
    reason = pd.Series([None if s else "in_no_list" for s in named], index=rows.index, dtype=object)
    return split, _unassigned(rows, reason), unmatched


def _match_lists(rows: pd.DataFrame, lists: Sequence[tuple[str, str, Sequence[str]]], *,
                 clips: pd.DataFrame | None, root: str | Path | None) -> tuple[list[str | None], pd.DataFrame]:
    """The list naming each row's clip (its key, ``None``: no list) and the unmatched entries.

    ``lists`` holds ``(key, shown, entries)``: ``key`` goes to the ``list`` column of the unmatched
    table, ``shown`` (the params key) into the error about a clip in two lists.
    """
    clip = clip_ids(rows)
    if clips is None:
        ids, paths = list(dict.fromkeys(clip)), None
    else:
        ids = clips["id"].astype(str).tolist()
        paths = clips["path"].tolist() if "path" in clips else None
    index = _ClipIndex(ids, paths, root)
    have_rows = set(clip)
    owner: dict[str, tuple[str, str, str]] = {}  # clip id -> (key, shown, entry)
    unmatched = []
    for key, shown, entries in lists:
        for entry in entries:
            found, why = index.find(entry)
            if found is None:
                unmatched.append({"list": key, "entry": entry, "reason": why})
                continue
            if found in owner and owner[found][0] != key:
                _, first, first_entry = owner[found]
                raise ValueError(f"split.lists: clip {found!r} is in {first} ({first_entry!r}) "
                                 f"and in {shown} ({entry!r}): a clip belongs to one list")
            owner.setdefault(found, (key, shown, entry))
            if found not in have_rows:
                unmatched.append({"list": key, "entry": entry,
                                  "reason": f"clip {found!r} has no rows (rejected before the split)"})
    return [owner[c][0] if c in owner else None for c in clip], pd.DataFrame(unmatched, columns=UNMATCHED_COLUMNS)


def carve_val(rows: pd.DataFrame, split: pd.Series, *, val_share: float, seed: int) -> pd.Series:
    """Move ``val_share`` of the train rows to val with the ratio greedy (:func:`assign_splits` with
    ratios ``{train: 1 - val_share, val: val_share, test: 0}``): stratified by label, no group in
    both train and val, deterministic for a seed. Other rows keep their split."""
    if not 0 <= val_share < 1:
        raise ValueError(f"split.val_share: must be in [0, 1), got {val_share}")
    train = (split == "train").to_numpy()
    if val_share == 0 or not train.any():
        return split.copy()
    inner = assign_splits(rows[train], ratios={"train": 1.0 - val_share, "val": val_share, "test": 0.0}, seed=seed)
    out = split.copy()
    out[train] = inner.to_numpy()
    return out


# --- folds (split.mode kfold, leave_one_group_out, column and lists with folds) -------------------

def _natural_key(text: str) -> tuple[tuple[str | int, ...], str]:
    """Natural order: runs of digits compare as numbers (``"2"`` before ``"10"``, ``s9`` before ``s10``)."""
    parts = re.split(r"(\d+)", text)  # text at even positions, digits at odd ones: comparable item by item
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text


def assign_kfold(rows: pd.DataFrame, *, k: int, seed: int) -> np.ndarray:
    """The test fold of every row: scikit-learn's ``StratifiedGroupKFold(k, shuffle=True,
    random_state=seed)`` over the rows' labels and groups (:func:`group_keys`: segments of a clip
    share their clip's group).

    Returns
    -------
    ndarray [shape=(len(rows),), dtype=int]
        Fold index ``0 .. k-1`` of every row, in row order. Every fold holds a row; a group's rows
        share their fold.

    Raises
    ------
    ValueError
        Naming ``split.k``: ``k`` below 2, more folds than groups, more folds than rows of every
        class, or a fold left without a row.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"split.k: must be an integer >= 2, got {k!r}")
    groups, labels = group_keys(rows), _labels(rows)
    n_groups = groups.nunique()
    if k > n_groups:
        raise ValueError(f"split.k: {k} folds need at least {k} groups (a group is tested in one fold), the rows "
                         f"have {n_groups}: lower split.k")
    y = pd.factorize(labels, sort=True)[0]
    with warnings.catch_warnings():
        # scikit-learn warns about rows per class; SmallClassWarning says it per class, in groups
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            tests = [test for _, test in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
                np.zeros((len(rows), 1)), y, groups.to_numpy())]
        except ValueError as exc:
            raise ValueError(f"split.k: {exc}; lower split.k") from None
    fold = np.full(len(rows), -1)
    for i, test in enumerate(tests):
        fold[test] = i
    empty = [str(i) for i in range(k) if not (fold == i).any()]
    if empty:
        raise ValueError(f"split.k: fold(s) {', '.join(empty)} of {k} got no group (groups holding several classes "
                         f"leave too few choices): lower split.k")
    return fold


def _groups_out(rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Leave-one-group-out: the fold index of every row (its group's, in natural order) and the groups."""
    groups = group_keys(rows)
    clip = clip_ids(rows)
    own = (groups == clip).to_numpy()  # no group given: the row's clip is its group
    if len(rows) and own.all():
        raise ValueError("split.mode leave_one_group_out: the rows have no groups (every clip would be a fold of "
                         "its own): give the data groups (data.folder.group_regex, data.csv.group_column, a "
                         "(?P<group>...) in data.regex.pattern) or use split.mode kfold")
    if own.any():
        warnings.warn(f"split.mode leave_one_group_out: {clip[own].nunique()} clip(s) have no group, so each is a "
                      f"fold of its own ({', '.join(clip[own].unique()[:3])}...)", SplitWarning, stacklevel=3)
    names = sorted(groups.unique(), key=_natural_key)
    if len(names) < 2:
        raise ValueError(f"split.mode leave_one_group_out: needs at least 2 groups, the rows have {len(names)} "
                         f"({', '.join(names)})")
    return pd.Index(names).get_indexer(groups), names


def _column_folds(rows: pd.DataFrame, values: pd.Series) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """``split.column.folds``: the fold index of every row (-1: unassigned), the fold names (the
    distinct values in natural order) and the unassigned rows."""
    text, known = _column_text(rows, values)
    reason = pd.Series(np.where(known, np.array([None if t else "no_value" for t in text], dtype=object),
                                "not_in_manifest"), index=rows.index, dtype=object)
    names = sorted({t for t, r in zip(text, reason, strict=True) if r is None and t}, key=_natural_key)
    code = {t: i for i, t in enumerate(names)}
    fold = np.array([code[t] if r is None else -1 for t, r in zip(text, reason, strict=True)], dtype=int)
    return fold, names, _unassigned(rows, reason)


def _list_folds(rows: pd.DataFrame, fold_lists: Sequence[tuple[str, Sequence[str]]], *, clips: pd.DataFrame | None,
                root: str | Path | None) -> tuple[np.ndarray, list[str], pd.DataFrame, pd.DataFrame]:
    """``split.lists.folds``: the fold index of every row (its list's, -1: in none), the fold names
    (the files' stems), the unassigned rows and the unmatched entries."""
    keys = [(str(i), f"split.lists.folds.{i} [{name}]", entries) for i, (name, entries) in enumerate(fold_lists)]
    named, unmatched = _match_lists(rows, [(f"folds.{i}", shown, e) for i, shown, e in keys], clips=clips, root=root)
    fold = np.array([-1 if n is None else int(n.rpartition(".")[2]) for n in named], dtype=int)
    reason = pd.Series([None if n else "in_no_list" for n in named], index=rows.index, dtype=object)
    return fold, [str(name) for name, _ in fold_lists], _unassigned(rows, reason), unmatched


@dataclass(frozen=True)
class SplitResult:
    """What :func:`split_dataset` returns.

    ``folds``: :data:`FOLD_COLUMNS`, one row per (input row, fold) assigned in the fold, folds in
    order (``"0"``, ``"1"``, ..., then :data:`REFIT`), rows in input order within a fold;
    ``counts``: :func:`counts_table` of every evaluated fold, with a leading ``fold`` column;
    ``unassigned``: :data:`UNASSIGNED_COLUMNS` (rows in no fold: never trained or scored on);
    ``unmatched``: :data:`UNMATCHED_COLUMNS` (list entries naming no clip to split); ``info``: the
    JSON-serializable summary (``data/split/folds.json``) ``{"mode", "k", "folds": [{"fold", "name",
    "train", "val", "test"}, ...], "refit", "hash"}``: ``k`` evaluated folds with their rows per
    split and what defines each (a column value, a group, a list's stem; ``None`` otherwise),
    ``refit`` :data:`REFIT` when ``k > 1`` else ``None``, ``hash`` :func:`assignment_hash` of ``folds``.
    """

    folds: pd.DataFrame
    counts: pd.DataFrame
    unassigned: pd.DataFrame
    unmatched: pd.DataFrame
    info: dict[str, Any]


def split_dataset(rows: pd.DataFrame, *, seed: int, mode: str = "ratio", ratios: Mapping[str, float] | None = None,
                  stable: bool = False, k: int = 5, clips: pd.DataFrame | None = None, column: str | None = None,
                  column_folds: bool = False, test: Sequence[object] | None = None,
                  val: Sequence[object] | None = None, lists: Mapping[str, Sequence[str]] | None = None,
                  fold_lists: Sequence[tuple[str, Sequence[str]]] | None = None, root: str | Path | None = None,
                  val_share: float = 0.15) -> SplitResult:
    """Split ``rows`` into folds by ``mode`` (``params.yaml: split``; see the module docstring).

    Parameters
    ----------
    rows : DataFrame
        The process stage's rows (``id, clip_id, label, group``, ...), segments included.
    seed : int
        Seed of the ratio greedy (ratio mode, and carving val in the others) and of the k folds.
    mode : {'ratio', 'kfold', 'leave_one_group_out', 'column', 'lists'}
    ratios, stable
        Ratio mode: :func:`split_table`'s arguments (its assignment, bit for bit, as fold ``"0"``).
    k : int
        Kfold mode: the number of folds (``split.k``, >= 2; :func:`assign_kfold`).
    clips : DataFrame
        Column and lists modes: the manifest (``id`` = clip id, ``path``, metadata columns).
    column, test, val
        Column mode: the manifest column and the rule of :func:`assign_from_column`.
    column_folds : bool
        Column mode: the column's values are folds (``split.column.folds``); excludes ``test``, ``val``.
    lists : mapping
        Lists mode: ``{split: entries}`` of :func:`assign_from_lists`; ``root`` is ``data.root``.
    fold_lists : sequence of (str, entries)
        Lists mode, instead of ``lists``: ``(name, entries)`` per fold, its test clips
        (:func:`read_fold_lists` of ``split.lists.folds``).
    val_share : float
        Fraction of train carved out as val (group-aware, stratified) when the data gives no val
        clip, and in every fold of the fold modes; 0: no val.

    Raises
    ------
    ValueError
        Naming the parameter: a column the manifest lacks, a clip in two lists, every clip
        unassigned, fewer than two folds, more folds than groups, conflicting keys, an empty train.
    """
    if mode not in MODES:
        raise ValueError(f"split.mode: unknown mode {mode!r} ({', '.join(MODES)})")
    rows = rows.reset_index(drop=True)
    unassigned, unmatched = pd.DataFrame(columns=UNASSIGNED_COLUMNS), pd.DataFrame(columns=UNMATCHED_COLUMNS)
    fold_of: np.ndarray | None = None  # the fold modes: the test fold of every row, -1 unassigned
    names: list[str | None] = [None]
    splits: list[pd.Series] = []
    key, val_given, checked, notes = "split.mode", None, SPLITS, {}
    if mode == "ratio":
        if ratios is None:
            raise ValueError("split.ratios: required in ratio mode")
        splits = [_ratio_split(rows, ratios=ratios, seed=seed, stable=stable)[0]["split"]]
    elif mode == "kfold":
        fold_of, key = assign_kfold(rows, k=k, seed=seed), "split.k"
        names = [None] * k
        per_class = group_keys(rows).groupby(_labels(rows)).nunique()
        notes = {lab: f"it has {n} group(s), fewer than split.k = {k}" for lab, n in per_class.items() if n < k}
    elif mode == "leave_one_group_out":
        fold_of, groups = _groups_out(rows)
        names = list(groups)
        checked = ("train",)  # a test fold is one group: classes it lacks are expected
        per_class = group_keys(rows).groupby(_labels(rows)).nunique()
        notes = {lab: "the class is in one group only, so the fold testing it never trains on it"
                 for lab, n in per_class.items() if n < 2}
    elif mode == "column":
        if not column:
            raise ValueError("split.column.name: required when split.mode is column")
        if clips is None:
            raise ValueError("split.mode column: needs the manifest (its metadata columns)")
        if column not in clips.columns:
            raise ValueError(f"split.column.name: the manifest has no column {column!r} (columns: "
                             f"{', '.join(map(str, clips.columns))}); ingest keeps the regex layout's named "
                             "groups and the csv layout's columns")
        values = clips.set_index(clips["id"].astype(str))[column]
        key = "split.column.name"
        if column_folds:
            if test is not None or val is not None:
                raise ValueError("split.column.folds: cannot be combined with split.column.test or split.column.val "
                                 "(with folds every value of the column is a fold)")
            fold_of, groups, unassigned = _column_folds(rows, values)
            names = list(groups)
        else:
            split, unassigned = assign_from_column(rows, values, test=test, val=val)
            key = key if test is None else "split.column.test"
            val_given = "split.column.val" if val is not None else None
    else:
        if fold_lists is not None:
            if lists:
                raise ValueError(f"split.lists.folds: cannot be combined with split.lists."
                                 f"{', split.lists.'.join(sorted(lists))} (each fold list is a fold's test clips)")
            if len(fold_lists) < 2:
                raise ValueError(f"split.lists.folds: needs at least 2 lists (one per fold), got {len(fold_lists)}")
            fold_of, groups, unassigned, unmatched = _list_folds(rows, fold_lists, clips=clips, root=root)
            names, key = list(groups), "split.lists.folds"
        else:
            if not lists or "train" not in lists or "test" not in lists:
                raise ValueError("split.lists: train and test lists are required when split.mode is lists "
                                 "(or split.lists.folds)")
            split, unassigned, unmatched = assign_from_lists(rows, lists, clips=clips, root=root)
            key, val_given = "split.lists.train", "split.lists.val" if "val" in lists else None
    if len(rows) and len(unassigned) == len(rows):
        why = ", ".join(f"{n} {r}" for r, n in unassigned["reason"].value_counts().items())
        raise ValueError(f"{'split.column.name' if mode == 'column' else 'split.lists'}: no clip is assigned "
                         f"to a split ({why}); check the values or lists against data/ingest/manifest.csv")
    if fold_of is not None:
        if len(names) < 2:
            raise ValueError(f"{key}: folds need at least 2 distinct values of the column, it has {len(names)} "
                             f"({', '.join(map(str, names))})")
        empty = [i for i in range(len(names)) if not (fold_of == i).any()]
        if empty:
            raise ValueError(f"{key}.{empty[0]} [{names[empty[0]]}]: names no clip with rows, so its fold would "
                             "test nothing")
        for i in range(len(names)):
            split = pd.Series(np.where(fold_of == i, "test", np.where(fold_of >= 0, "train", None)), dtype=object)
            splits.append(carve_val(rows, split, val_share=val_share, seed=seed))
    elif mode != "ratio":
        if not (split == "val").any():
            if val_given:
                warnings.warn(f"{val_given} gives no clip: val is carved out of train instead (split.val_share)",
                              SplitWarning, stacklevel=2)
            split = carve_val(rows, split, val_share=val_share, seed=seed)
        splits = [split]
    for i, split in enumerate(splits):
        if mode != "ratio" and not (split == "train").any():
            where = "train" if len(splits) == 1 else f"train of fold {i}" + (f" ({names[i]})" if names[i] else "")
            have = ", ".join(f"{n} {s}" for s, n in split.value_counts().items())
            raise ValueError(f"{key}: {where} is empty ({have}"
                             f"{f', {len(unassigned)} unassigned' if len(unassigned) else ''}): nothing to train on")
    return _result(rows, splits, names, mode=mode, seed=seed, val_share=val_share, checked=checked, notes=notes,
                   unassigned=unassigned, unmatched=unmatched)


def _result(rows: pd.DataFrame, splits: Sequence[pd.Series], names: Sequence[str | None], *, mode: str, seed: int,
            val_share: float, checked: Sequence[str], notes: Mapping[str, str], unassigned: pd.DataFrame,
            unmatched: pd.DataFrame) -> SplitResult:
    """The fold table, counts and info of the evaluated folds ``splits`` (split name of every row,
    ``None``: not in the fold), plus the refit fold when there are several; warns about classes
    missing from a split of a fold."""
    clip = clip_ids(rows)
    base = pd.DataFrame({"id": rows["id"].astype(str) if "id" in rows else clip, "clip_id": clip,
                         "label": rows["label"] if "label" in rows else pd.NA,
                         "group": rows["group"] if "group" in rows else pd.NA})
    frames, counts, info = [], [], []
    for i, (split, name) in enumerate(zip(splits, names, strict=True)):
        keep = split.notna().to_numpy()
        frames.append(base[keep].assign(fold=str(i), split=split[keep].to_numpy()))
        labels = base.loc[keep, "label"] if keep.any() else pd.Series([], dtype=str)
        counts.append(counts_table(labels, split[keep]).assign(fold=str(i)))
        n = split[keep].value_counts()
        info.append({"fold": str(i), "name": name, **{s: int(n.get(s, 0)) for s in SPLITS}})
    if mode != "ratio":  # ratio mode warned in _ratio_split, with the reasons of its greedy
        _warn_uncovered(frames, mode=mode, checked=checked, notes=notes)
    if len(splits) > 1:
        assigned = np.any([s.notna().to_numpy() for s in splits], axis=0)
        refit = carve_val(rows, pd.Series(np.where(assigned, "train", None), dtype=object), val_share=val_share,
                          seed=seed)
        frames.append(base[assigned].assign(fold=REFIT, split=refit[assigned].to_numpy()))
    folds = pd.concat(frames, ignore_index=True)[FOLD_COLUMNS]
    table = pd.concat(counts, ignore_index=True)[["fold", "label", *SPLITS, "total"]]
    summary = {"mode": mode, "k": len(splits), "folds": info, "refit": REFIT if len(splits) > 1 else None,
               "hash": assignment_hash(folds)}
    return SplitResult(folds, table, unassigned, unmatched, summary)


def _warn_uncovered(folds: Sequence[pd.DataFrame], *, mode: str, checked: Sequence[str] = SPLITS,
                    notes: Mapping[str, str] | None = None) -> None:
    """One :class:`SmallClassWarning` per class missing from a split (of ``checked``) that holds
    clips in a fold, naming the folds; ``notes`` explains a class's absence."""
    missing: dict[str, dict[str, list[str]]] = {}  # label -> split -> folds
    for i, fold in enumerate(folds):  # fold i is fold "i"
        present = [s for s in checked if (fold["split"] == s).any()]
        for label, have in fold.groupby(fold["label"].astype(str))["split"].agg(set).items():
            for s in present:
                if s not in have:
                    missing.setdefault(str(label), {}).setdefault(s, []).append(str(i))
    for label, where in missing.items():
        if len(folds) == 1:
            text = ", ".join(where)
        else:
            text = " and ".join(f"{s} of fold{'s' if len(where[s]) > 1 else ''} {', '.join(where[s])}"
                                for s in SPLITS if s in where)
        note = (notes or {}).get(label)
        warnings.warn(f"class {label!r} has no clip in {text} (split.mode {mode}{f': {note}' if note else ''})",
                      SmallClassWarning, stacklevel=4)  # past _result and split_dataset


def fold_ids(info: Mapping[str, Any], *, refit: bool) -> list[str]:
    """The evaluated fold ids of a split (``info``: :attr:`SplitResult.info`, ``folds.json``), then
    :data:`REFIT` when ``refit`` is asked for and the split has a refit fold (several folds)."""
    ids = [str(f["fold"]) for f in info["folds"]]
    return ids + [REFIT] if refit and info.get("refit") is not None else ids


def read_folds(path: str | Path) -> pd.DataFrame:
    """The fold table (``data/split/folds.csv``, :data:`FOLD_COLUMNS`) with ``id``, ``clip_id``,
    ``group`` and ``fold`` as text (a fold ``"0"``, a group ``"007"`` stay as written)."""
    from soundstage.io import read_csv

    return read_csv(path, text=["id", "clip_id", "group", "fold"])


def rows_of_fold(table: pd.DataFrame, folds: pd.DataFrame, fold: str) -> pd.DataFrame:
    """The rows of ``table`` that ``folds`` assigns in ``fold``, with their split.

    Parameters
    ----------
    table : DataFrame
        An ``id`` column (the ids of the fold table: segments or clips) and no ``split`` column:
        the features table, a predictions table.
    folds : DataFrame
        The fold table (:data:`FOLD_COLUMNS`; :func:`read_folds`, :attr:`SplitResult.folds`).
    fold : str
        A fold id: ``"0"``, ``"1"``, ..., or :data:`REFIT`.

    Returns
    -------
    DataFrame
        ``table``'s rows whose id the fold assigns (an inner join on ``id``, ids compared as text),
        in ``table``'s order and with its index, plus a ``split`` column.

    Raises
    ------
    ValueError
        ``fold`` is not in ``folds`` (naming it and the folds there are), ``table`` has no ``id`` or
        has a ``split``, or the fold assigns an id twice.
    """
    if "id" not in table or "split" in table:
        raise ValueError("split: rows_of_fold needs a table with an id column and no split column (the fold gives "
                         "the split)")
    fold = str(fold)
    mine = folds[folds["fold"].astype(str) == fold]
    if mine.empty:
        have = ", ".join(dict.fromkeys(folds["fold"].astype(str))) or "none"
        raise ValueError(f"split: fold {fold!r} is not in the fold table (its folds: {have})")
    by_id = mine.set_index(mine["id"].astype(str))["split"]
    if by_id.index.duplicated().any():
        raise ValueError(f"split: fold {fold!r} assigns id(s) {by_id.index[by_id.index.duplicated()][:3].tolist()} "
                         "twice")
    split = table["id"].astype(str).map(by_id)
    keep = split.notna()
    return table[keep].assign(split=split[keep])
