"""Stage ``split``: stratified, group-aware, seeded train/val/test assignment.

The unit of assignment is the *group* (artist, speaker, source recording; a segmented clip's
segments share the clip as group), so no group ever appears in two splits. Groups are assigned
greedily, largest first, each to the split whose relative per-label deficit is largest, which keeps
every label's proportions close to the requested ratios (exactly so when every group is one clip).

``stable=True`` instead draws each group's split from a hash of (seed, group): adding files never
moves an existing clip, at the price of only statistical (not exact) stratification.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


class SmallClassWarning(UserWarning):
    """A class has too few groups to appear in every split."""


def _group_keys(rows: pd.DataFrame) -> pd.Series:
    group = rows["group"].astype("string")
    fallback = rows["clip_id"] if "clip_id" in rows else rows["id"]
    return group.where(group.notna() & (group != ""), fallback.astype("string")).astype(str)


def _stable_unit(seed: int, group: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: pd.DataFrame, *, ratios: Mapping[str, float], seed: int,
                  stable: bool = False) -> pd.Series:
    """Return the split name of every row (indexed like ``rows``).

    Parameters
    ----------
    rows : DataFrame
        Must hold ``label`` and ``group`` (empty group: the row's ``clip_id``/``id`` is its group).
    ratios : mapping
        ``{"train": .., "val": .., "test": ..}`` summing to 1.
    seed : int
        Seed of every random choice.
    stable : bool
        Hash-based assignment that never moves an existing group when rows are added.
    """
    if rows.empty:
        return pd.Series([], dtype=str, index=rows.index)
    groups = _group_keys(rows)
    ratio = np.array([float(ratios[s]) for s in SPLITS])
    if stable:
        edges = np.cumsum(ratio)
        def pick(g: str) -> str:
            u = _stable_unit(seed, g)
            return SPLITS[min(int(np.searchsorted(edges, u, side="right")), len(SPLITS) - 1)]
        mapping = {g: pick(g) for g in groups.unique()}
        return groups.map(mapping).rename("split")

    labels = sorted(rows["label"].astype(str).unique())
    counts = pd.crosstab(groups, rows["label"].astype(str)).reindex(columns=labels, fill_value=0)
    totals = counts.sum(axis=0).to_numpy(dtype=float)
    target = ratio[:, None] * totals[None, :]
    current = np.zeros_like(target)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    sizes = counts.to_numpy().sum(axis=1)
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest groups first, random among equals
    mapping: dict[str, str] = {}
    active = ratio > 0
    for gi in order:
        c = counts.iloc[gi].to_numpy(dtype=float)
        # Relative deficit: a split that has 0 of its 3.6 wanted clips outranks one at 12 of 16.8,
        # so small splits get whole groups too instead of being starved by the largest one.
        deficit = (target - current) / np.maximum(target, 1e-9)
        score = (deficit * c[None, :]).sum(axis=1) / max(c.sum(), 1.0)
        score[~active] = -np.inf
        best = int(np.argmax(score))
        current[best] += c
        mapping[str(counts.index[gi])] = SPLITS[best]
    return groups.map(mapping).rename("split")


def split_table(rows: pd.DataFrame, *, ratios: Mapping[str, float], seed: int,
                stable: bool = False) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Split ``rows`` and return ``({split: rows}, counts)``; counts is a label × split table.

    Warns (``SmallClassWarning``, naming the class) when a class has fewer groups than splits with a
    non-zero ratio, since it then cannot appear in all of them.
    """
    rows = rows.reset_index(drop=True)
    split = assign_splits(rows, ratios=ratios, seed=seed, stable=stable)
    out = rows.assign(split=split.to_numpy())
    needed = sum(1 for s in SPLITS if ratios[s] > 0)
    groups = _group_keys(rows)
    n_groups = groups.groupby(rows["label"].astype(str)).nunique()
    for label, n in n_groups.items():
        if n < needed:
            warnings.warn(f"class {label!r} has {n} group(s)/clip(s): too few to appear in all {needed} splits",
                          SmallClassWarning, stacklevel=2)
    counts = (pd.crosstab(out["label"].astype(str), out["split"]).reindex(columns=list(SPLITS), fill_value=0))
    counts.loc["total"] = counts.sum(axis=0)
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "label"
    for s in SPLITS:
        missing = [lab for lab in counts.index[:-1] if ratios[s] > 0 and counts.loc[lab, s] == 0]
        if missing:
            warnings.warn(f"split {s!r} has no clip of class(es) {', '.join(map(repr, missing))}",
                          SmallClassWarning, stacklevel=2)
    return {s: out[out["split"] == s].reset_index(drop=True) for s in SPLITS}, counts.reset_index()
