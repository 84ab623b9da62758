"""Stage ``split``: one train/val/test assignment, from ratios or from the data itself.

Three modes (``params.yaml: split.mode``), one entry point, :func:`split_dataset`:

``ratio`` (default)
    Stratified, group-aware, seeded split by ``split.ratios`` (:func:`split_table`, described below).
``column``
    The assignment is a per-clip metadata value (a manifest column: ``fold``, ``take``), either a
    split name (``train``/``val``/``test``) or, with a rule (``split.column.test`` and optionally
    ``.val``: lists of values, compared as text), test for those values, val for those, train for
    every other value (:func:`assign_from_column`). Official test sets: ESC-50's fold 5, the
    free-spoken-digit takes 0-4.
``lists``
    Text files of clip ids or file paths, one per split (:func:`read_list`,
    :func:`assign_from_lists`): GTZAN's artist-filtered lists.

In the data modes a clip that the data does not place (no value, a value that is no split name, in
no list) is *unassigned*: never trained or scored on, and returned with a reason
(:data:`UNASSIGNED_REASONS`). When the data gives no val clip at all, val is carved out of train
with the ratio greedy below (group-aware, stratified, seeded): ``split.val_share`` of train
(:func:`carve_val`). The assignment is per clip, so segments of a clip stay together; the data
decides alone whether a group (a speaker) spans train and test (the free-spoken-digit takes do).

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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
#: ``params.yaml: split.mode``.
MODES = ("ratio", "column", "lists")
#: Columns of the table of clips that the data left out (``data/split/unassigned.csv``).
UNASSIGNED_COLUMNS = ["id", "clip_id", "label", "group", "reason"]
#: Why a clip was left out of every split (the ``reason`` column).
UNASSIGNED_REASONS = {
    "no_value": "split.mode column: the clip's value of split.column.name is missing or empty",
    "not_a_split": "split.mode column without split.column.test: the value is none of train, val, test",
    "not_in_manifest": "split.mode column: the clip id is not in the manifest (a manifest older than the rows)",
    "in_no_list": "split.mode lists: no list names the clip",
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
    """A short fingerprint of which clip is in which split (the MLflow tag ``split.hash``).

    The first :data:`HASH_CHARS` hex digits of the SHA-1 of the sorted, distinct ``(clip, split)``
    pairs of ``table``, the clip as :func:`clip_ids` gives it.

    Parameters
    ----------
    table : DataFrame
        ``split`` and ``clip_id`` (or ``id``) per row: the features table, or the split stage's CSVs
        concatenated. Segments of a clip count once, so segmenting clips differently keeps the hash.

    Returns
    -------
    str
        :data:`HASH_CHARS` lowercase hex digits. The same assignment gives the same hash whatever the
        row order, the dtypes or the number of segments per clip; any clip moving to another split,
        or added or removed, gives another hash. A row without a split counts as a split of its own.

    Raises
    ------
    ValueError
        No ``split`` column, or a row with neither ``id`` nor ``clip_id``.
    """
    if "split" not in table:
        raise ValueError("split: the table has no split column")
    split = table["split"].astype("string").fillna("")
    pairs = sorted(set(zip(clip_ids(table), split.astype(str), strict=True)))
    # JSON, not joined text: no clip id, whatever characters it holds, can blur two pairs into one.
    text = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
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
    values = _by_clip(values, "the manifest")
    clip = clip_ids(rows)
    known = clip.isin(values.index).to_numpy()
    by_clip = {c: str(v).strip() for c, v in values.items() if not pd.isna(v) and str(v).strip()}
    text = [by_clip.get(c) for c in clip]  # None: missing or empty
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


def read_lists(paths: Mapping[str, str | Path | None]) -> dict[str, list[str]]:
    """:func:`read_list` of every given ``split.lists.<split>`` file (``None``: no list).

    Raises
    ------
    ValueError
        Naming the key of a file that cannot be read.
    """
    lists = {}
    for name, path in paths.items():
        if path is None:
            continue
        try:
            lists[name] = read_list(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"split.lists.{name}: cannot read the list {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    return lists


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
    clip = clip_ids(rows)
    if clips is None:
        ids, paths = list(dict.fromkeys(clip)), None
    else:
        ids = clips["id"].astype(str).tolist()
        paths = clips["path"].tolist() if "path" in clips else None
    index = _ClipIndex(ids, paths, root)
    have_rows = set(clip)
    owner: dict[str, tuple[str, str]] = {}  # clip id -> (split, entry)
    unmatched = []
    for name in SPLITS:
        for entry in lists.get(name, ()):
            found, why = index.find(entry)
            if found is None:
                unmatched.append({"list": name, "entry": entry, "reason": why})
                continue
            if found in owner and owner[found][0] != name:
                first, first_entry = owner[found]
                raise ValueError(f"split.lists: clip {found!r} is in split.lists.{first} ({first_entry!r}) "
                                 f"and in split.lists.{name} ({entry!r}): a clip belongs to one list")
            owner.setdefault(found, (name, entry))
            if found not in have_rows:
                unmatched.append({"list": name, "entry": entry,
                                  "reason": f"clip {found!r} has no rows (rejected before the split)"})
    named = [owner[c][0] if c in owner else None for c in clip]
    split = _split_series(named, np.ones(len(named), dtype=bool), rows.index)
    reason = pd.Series([None if s else "in_no_list" for s in named], index=rows.index, dtype=object)
    return split, _unassigned(rows, reason), pd.DataFrame(unmatched, columns=UNMATCHED_COLUMNS)


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


@dataclass(frozen=True)
class SplitResult:
    """What :func:`split_dataset` returns.

    ``parts``: ``{split: rows of that split + a split column}``; ``counts``: :func:`counts_table` of
    the assigned rows; ``unassigned``: :data:`UNASSIGNED_COLUMNS` (rows in no split: not trained or
    scored on); ``unmatched``: :data:`UNMATCHED_COLUMNS` (list entries naming no clip to split).
    """

    parts: dict[str, pd.DataFrame]
    counts: pd.DataFrame
    unassigned: pd.DataFrame
    unmatched: pd.DataFrame


def split_dataset(rows: pd.DataFrame, *, seed: int, mode: str = "ratio", ratios: Mapping[str, float] | None = None,
                  stable: bool = False, clips: pd.DataFrame | None = None, column: str | None = None,
                  test: Sequence[object] | None = None, val: Sequence[object] | None = None,
                  lists: Mapping[str, Sequence[str]] | None = None, root: str | Path | None = None,
                  val_share: float = 0.15) -> SplitResult:
    """Split ``rows`` by ``mode`` (``params.yaml: split``; see the module docstring).

    Parameters
    ----------
    rows : DataFrame
        The process stage's rows (``id, clip_id, label, group``, ...), segments included.
    seed : int
        Seed of the ratio greedy (ratio mode, and carving val in the others).
    mode : {'ratio', 'column', 'lists'}
    ratios, stable
        Ratio mode: :func:`split_table`'s arguments (its result, bit for bit).
    clips : DataFrame
        Column and lists modes: the manifest (``id`` = clip id, ``path``, metadata columns).
    column, test, val
        Column mode: the manifest column and the rule of :func:`assign_from_column`.
    lists : mapping
        Lists mode: ``{split: entries}`` of :func:`assign_from_lists`; ``root`` is ``data.root``.
    val_share : float
        Fraction of train carved out as val (group-aware, stratified) when the data gives no val
        clip; 0: no val.

    Raises
    ------
    ValueError
        Naming the parameter: a column the manifest lacks, a clip in two lists, every clip
        unassigned, or an empty train split.
    """
    if mode not in MODES:
        raise ValueError(f"split.mode: unknown mode {mode!r} ({', '.join(MODES)})")
    rows = rows.reset_index(drop=True)
    no_unmatched = pd.DataFrame(columns=UNMATCHED_COLUMNS)
    if mode == "ratio":
        if ratios is None:
            raise ValueError("split.ratios: required in ratio mode")
        parts, counts = split_table(rows, ratios=ratios, seed=seed, stable=stable)
        return SplitResult(parts, counts, pd.DataFrame(columns=UNASSIGNED_COLUMNS), no_unmatched)
    if mode == "column":
        if not column:
            raise ValueError("split.column.name: required when split.mode is column")
        if clips is None:
            raise ValueError("split.mode column: needs the manifest (its metadata columns)")
        if column not in clips.columns:
            raise ValueError(f"split.column.name: the manifest has no column {column!r} (columns: "
                             f"{', '.join(map(str, clips.columns))}); ingest keeps the regex layout's named "
                             "groups and the csv layout's columns")
        split, unassigned = assign_from_column(rows, clips.set_index(clips["id"].astype(str))[column], test=test,
                                               val=val)
        key, unmatched = "split.column.name" if test is None else "split.column.test", no_unmatched
        val_given = "split.column.val" if val is not None else None
    else:
        if not lists or "train" not in lists or "test" not in lists:
            raise ValueError("split.lists: train and test lists are required when split.mode is lists")
        split, unassigned, unmatched = assign_from_lists(rows, lists, clips=clips, root=root)
        key, val_given = "split.lists.train", "split.lists.val" if "val" in lists else None
    if len(rows) and len(unassigned) == len(rows):
        why = ", ".join(f"{n} {r}" for r, n in unassigned["reason"].value_counts().items())
        raise ValueError(f"{'split.column.name' if mode == 'column' else 'split.lists'}: no clip is assigned "
                         f"to a split ({why}); check the values or lists against data/ingest/manifest.csv")
    if not (split == "val").any():
        if val_given:
            warnings.warn(f"{val_given} gives no clip: val is carved out of train instead (split.val_share)",
                          SplitWarning, stacklevel=2)
        split = carve_val(rows, split, val_share=val_share, seed=seed)
    if not (split == "train").any():
        raise ValueError(f"{key}: train is empty ({', '.join(f'{n} {s}' for s, n in split.value_counts().items())}"
                         f"{f', {len(unassigned)} unassigned' if len(unassigned) else ''}): nothing to train on")
    kept = split.notna().to_numpy()
    out = rows.assign(split=split.to_numpy())
    counts = counts_table(out.loc[kept, "label"], out.loc[kept, "split"])
    parts = {s: out[out["split"] == s].reset_index(drop=True) for s in SPLITS}
    _warn_uncovered(out[kept], mode=mode)
    return SplitResult(parts, counts, unassigned, unmatched)


def _warn_uncovered(assigned: pd.DataFrame, *, mode: str) -> None:
    """A :class:`SmallClassWarning` per class missing from a split that holds clips."""
    present = [s for s in SPLITS if (assigned["split"] == s).any()]
    by_label = assigned.groupby(assigned["label"].astype(str))["split"].agg(set)
    for label, have in by_label.items():
        missing = [s for s in present if s not in have]
        if missing:
            warnings.warn(f"class {label!r} has no clip in {', '.join(missing)} (split.mode {mode})",
                          SmallClassWarning, stacklevel=3)
