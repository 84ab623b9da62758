"""Stage ``split``: stratified, group-aware, seeded train/val/test assignment.

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
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
_TOL = 1e-9


class SmallClassWarning(UserWarning):
    """A class has too few groups to appear in every split, or ended up missing from one."""


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
    # numpy's per-call overhead would dominate (~30 us vs ~3 us per group).
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
    ratio = _ratio_array(ratios)
    rows = rows.reset_index(drop=True)
    split = assign_splits(rows, ratios=ratios, seed=seed, stable=stable)
    out = rows.assign(split=split.to_numpy())
    counts = counts_table(out["label"] if len(out) else pd.Series([], dtype=str), out["split"])
    if len(out):
        _warn_missing(out["label"].astype(str), group_keys(rows), counts, ratio, stable=stable)
    return {s: out[out["split"] == s].reset_index(drop=True) for s in SPLITS}, counts


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
        warnings.warn(msg, SmallClassWarning, stacklevel=3)
