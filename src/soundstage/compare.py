"""``soundstage compare``: MLflow runs side by side (model, key params, val/test scores and their 95 %
intervals when ``evaluate`` logged them, the split each run used).

Runs come from ``mlflow.search_runs``: the store filters (finished runs, a model, no nested fold runs)
and orders them (by the sort metric, runs without it last), and pages through them.

A cross-validated model is one parent run (``evaluate --aggregate``) holding the mean and standard
deviation over its folds, shown ``0.812 ± 0.031``; the folds' own runs, nested under it, are listed on
request only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pandas as pd

from soundstage.tracking import FOLD_TAG, FOLDS_TAG, PARENT_TAG, SPLIT_HASH_TAG

#: Metric columns shown by default (``evaluate`` logs them into each training run).
METRICS = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1")
BASE_COLUMNS = ["run_id", "experiment", "model", "start", "git"]
#: Hex digits of a run's ``split.hash`` shown in the ``split`` column (as many as of its commit).
SPLIT_CHARS = 8


def runs_table(*, tracking_uri: str, experiment: str | None = None, model: str | None = None,
               sort_by: str = "val_macro_f1", ascending: bool = False, diff_only: bool = True,
               limit: int | None = None, metrics: tuple[str, ...] = METRICS, folds: bool = False) -> pd.DataFrame:
    """One row per finished run: ``run_id, experiment, model, start, git`` + metrics + params.

    Parameters
    ----------
    experiment : str, optional
        Only this MLflow experiment (a dataset name); default: every experiment.
    model : str, optional
        Only runs of this model (the run's ``model`` tag).
    sort_by : str
        Any metric the runs carry (``test_accuracy``, ``val_balanced_accuracy``, ``fit_seconds``...);
        it is added as a column when not among ``metrics``. Runs without it come last.
    diff_only : bool
        Keep only the parameters whose values differ between the listed runs (the ones that explain
        a difference in scores).
    limit : int, optional
        At most this many rows (after sorting).
    folds : bool
        Also list the runs nested under another (tag ``mlflow.parentRunId``: the folds of a
        cross-validation, under the run of their means), with a ``fold`` column (their
        ``soundstage.fold`` tag), and the refit models' runs (fold ``all``: trained on every clip,
        never scored). By default both are hidden: the parent stands for its folds.

    Returns
    -------
    DataFrame
        ``git`` is the short commit, with ``*`` when the working copy was dirty. ``split``, right after
        it, is the start of the run's ``split.hash`` tag (:func:`soundstage.split.assignment_hash`):
        blank for a run trained before the tag existed, and not there when no listed run has one
        (:func:`split_note` says when the listed runs used several splits). A metric whose runs
        logged a 95 % bootstrap interval (``evaluate``'s ``<metric>_ci95_low``/``_high``) is followed by
        ``<metric>_ci95``, text ``[low–high]`` (2 decimals); a run without one (evaluated before
        intervals existed, or with ``evaluate.bootstrap: 0``) leaves it blank, and when no listed run
        has one the column is not there. A metric that some listed run logged with a standard deviation
        over cross-validation folds (``<metric>_std``, by ``evaluate --aggregate``) is text
        ``mean ± std`` (3 decimals; the mean alone for the other runs, blank for none), and the rows are
        sorted by the numeric mean all the same. ``folds``, after ``split``, is the number of folds of
        each run (its ``soundstage.folds`` tag, 1 without one), there when a listed run has more than 1.

    Raises
    ------
    ValueError
        ``experiment`` does not exist, or ``sort_by`` is not a metric of any listed run.
    """
    import mlflow

    if model is not None and "'" in model:
        raise ValueError(f"--model {model!r}: a model name has no quote")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exps = client.search_experiments()
    if experiment:
        exps = [e for e in exps if e.name == experiment]
        if not exps:
            raise ValueError(f"no MLflow experiment named {experiment!r} at {tracking_uri}")
    names = {e.experiment_id: e.name for e in exps}
    empty = pd.DataFrame(columns=[*BASE_COLUMNS, *metrics])
    if not names:
        return empty
    where = ["attributes.status = 'FINISHED'"]
    if model:
        where.append(f"tags.model = '{model}'")
    if not folds:  # the folds are in their parent's mean
        where.append(f"tags.`{PARENT_TAG}` IS NULL")
    # Sorted by the store (runs without the metric last; the newest first among equals), paged by MLflow.
    order = [f"metrics.`{sort_by}` {'ASC' if ascending else 'DESC'}", "attributes.start_time DESC"]
    with _tracking_uri(mlflow, tracking_uri):
        raw = mlflow.search_runs(list(names), filter_string=" and ".join(where), order_by=order,
                                 output_format="pandas")
    if not folds and len(raw) and f"tags.{FOLD_TAG}" in raw:  # a refit model ("all") has no scores of its own
        raw = raw[raw[f"tags.{FOLD_TAG}"].fillna("") != "all"]
    if raw.empty:
        return empty
    raw = raw.reset_index(drop=True)

    def tag(name: str) -> pd.Series:
        return raw[f"tags.{name}"].fillna("") if f"tags.{name}" in raw else pd.Series("", index=raw.index, dtype=object)

    commit = tag("git.commit")
    git = commit.str[:8].where((commit != "") & (commit != "unknown"), "?")
    raw = raw.assign(run_id=raw["run_id"].str[:8], experiment=raw["experiment_id"].map(names), model=tag("model"),
                     start=raw["start_time"], git=git + tag("git.dirty").eq("true").map({True: "*", False: ""}),
                     split=tag(SPLIT_HASH_TAG).str[:SPLIT_CHARS], folds=tag(FOLDS_TAG).map(_int_tag),
                     fold=tag(FOLD_TAG))
    shown = list(metrics)
    if sort_by not in shown:
        if f"metrics.{sort_by}" not in raw:
            available = sorted(c[len("metrics."):] for c in raw.columns
                               if c.startswith("metrics.") and not c.startswith("metrics.history_"))
            raise ValueError(f"--sort {sort_by!r}: no run has this metric (available: {', '.join(available)})")
        shown.append(sort_by)
    out = raw[BASE_COLUMNS].copy()
    out["start"] = pd.to_datetime(out["start"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    if raw["split"].ne("").any():
        out["split"] = raw["split"]
    if raw["folds"].gt(1).any():
        out["folds"] = raw["folds"]
    if folds:
        out["fold"] = raw["fold"]
    spread = {}  # metric -> its std over folds, for the runs that have one
    for m in shown:
        out[m] = raw[f"metrics.{m}"] if f"metrics.{m}" in raw else float("nan")
        if f"metrics.{m}_std" in raw and raw[f"metrics.{m}_std"].notna().any():
            spread[m] = raw[f"metrics.{m}_std"]
        if f"metrics.{m}_ci95_low" in raw and f"metrics.{m}_ci95_high" in raw:
            out[f"{m}_ci95"] = _interval_text(raw[f"metrics.{m}_ci95_low"], raw[f"metrics.{m}_ci95_high"])
    params = raw[sorted(c for c in raw.columns if c.startswith("params."))].rename(columns=lambda c: c[len("params."):])
    if diff_only and len(params) > 1:
        params = params.loc[:, _differing(params, raw["model"])]
    out = pd.concat([out, params], axis=1)
    # Sorted on the numbers (the means, for cross-validated runs) by the store; only now written as text.
    for m, std in spread.items():
        out[m] = _spread_text(out[m], std.loc[out.index])
    out = out.reset_index(drop=True)
    return out.head(limit) if limit else out


def split_note(table: pd.DataFrame) -> str | None:
    """The note to print under a :func:`runs_table` whose runs used more than one split, else ``None``.

    Parameters
    ----------
    table : DataFrame
        :func:`runs_table`'s result; its ``split`` column (when there) holds each run's split hash.

    Returns
    -------
    str or None
        ``note: these runs used 2 different splits (split.hash a1b2c3d4, e5f6a7b8): ...``, the hashes
        in table order. A run without a hash (trained before the tag existed) is not counted as a
        split of its own: runs of one hash plus such runs give no note.
    """
    if "split" not in table:
        return None
    hashes = list(dict.fromkeys(h for h in table["split"] if isinstance(h, str) and h))
    if len(hashes) < 2:
        return None
    return (f"note: these runs used {len(hashes)} different splits (split.hash {', '.join(hashes)}): "
            "their scores are not comparable across splits")


def _interval_text(low: pd.Series, high: pd.Series) -> pd.Series:
    """``[low–high]`` per run, 2 decimals as in the table of ``make run``; "" for a run without one."""
    text = "[" + low.map("{:.2f}".format) + "–" + high.map("{:.2f}".format) + "]"
    return text.where(low.notna() & high.notna(), "")


def _spread_text(mean: pd.Series, std: pd.Series) -> pd.Series:
    """``mean ± std`` per run, 3 decimals; the mean alone for a run without a std, "" without a mean."""
    alone = mean.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    both = mean.map("{:.3f}".format) + " ± " + std.map("{:.3f}".format)
    return both.where(mean.notna() & std.notna(), alone)


def _int_tag(value: str | None) -> int:
    """A count tag (``soundstage.folds``) as an int; 1 when missing or not a number."""
    try:
        return int(value) if value else 1
    except ValueError:
        return 1


@contextlib.contextmanager
def _tracking_uri(mlflow: Any, uri: str) -> Iterator[None]:
    """``mlflow.search_runs`` reads the process-wide tracking URI: set it for the call, then put it back."""
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _differing(params: pd.DataFrame, model: pd.Series) -> pd.Series:
    """Which params differ between runs: two different values anywhere, or a value set in some runs of
    a model and not in others. A param that only one model has (``random_forest.n_estimators`` next to
    ``keras_mlp.*`` runs) does not count as a difference by itself: the model column says it."""
    text = params.astype(object).where(params.notna(), None)
    values_differ = text.nunique(dropna=True) > 1
    within_model = text.fillna("\0").groupby(model.fillna("").to_numpy()).nunique().gt(1).any()
    return values_differ | within_model
