"""``soundstage compare``: MLflow runs side by side (model, key params, val/test scores and their 95 %
intervals when ``evaluate`` logged them)."""

from __future__ import annotations

import pandas as pd

#: Metric columns shown by default (``evaluate`` logs them into each training run).
METRICS = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1")
BASE_COLUMNS = ["run_id", "experiment", "model", "start", "git"]


def runs_table(*, tracking_uri: str, experiment: str | None = None, model: str | None = None,
               sort_by: str = "val_macro_f1", ascending: bool = False, diff_only: bool = True,
               limit: int | None = None, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
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

    Returns
    -------
    DataFrame
        ``git`` is the short commit, with ``*`` when the working copy was dirty. A metric whose runs
        logged a 95 % bootstrap interval (``evaluate``'s ``<metric>_ci95_low``/``_high``) is followed by
        ``<metric>_ci95``, text ``[low–high]`` (2 decimals); a run without one (evaluated before
        intervals existed, or with ``evaluate.bootstrap: 0``) leaves it blank, and when no listed run
        has one the column is not there.

    Raises
    ------
    ValueError
        ``experiment`` does not exist, or ``sort_by`` is not a metric of any listed run.
    """
    import mlflow

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
    runs = []
    token = None
    while True:
        page = client.search_runs(list(names), filter_string="attributes.status = 'FINISHED'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if model:
        runs = [r for r in runs if r.data.tags.get("model") == model]
    if not runs:
        return empty
    rows = []
    for r in runs:
        commit = r.data.tags.get("git.commit", "")
        git = commit[:8] if commit and commit != "unknown" else "?"
        git += "*" if r.data.tags.get("git.dirty") == "true" else ""
        rows.append({"run_id": r.info.run_id[:8], "experiment": names.get(r.info.experiment_id),
                     "model": r.data.tags.get("model"), "start": r.info.start_time, "git": git,
                     **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                     **{f"params.{k}": v for k, v in r.data.params.items()}})
    raw = pd.DataFrame(rows)
    shown = list(metrics)
    if sort_by not in shown:
        if f"metrics.{sort_by}" not in raw:
            available = sorted(c[len("metrics."):] for c in raw.columns
                               if c.startswith("metrics.") and not c.startswith("metrics.history_"))
            raise ValueError(f"--sort {sort_by!r}: no run has this metric (available: {', '.join(available)})")
        shown.append(sort_by)
    out = raw[BASE_COLUMNS].copy()
    out["start"] = pd.to_datetime(out["start"], unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S")
    for m in shown:
        out[m] = raw[f"metrics.{m}"] if f"metrics.{m}" in raw else float("nan")
        if f"metrics.{m}_ci95_low" in raw and f"metrics.{m}_ci95_high" in raw:
            out[f"{m}_ci95"] = _interval_text(raw[f"metrics.{m}_ci95_low"], raw[f"metrics.{m}_ci95_high"])
    params = raw[sorted(c for c in raw.columns if c.startswith("params."))].rename(columns=lambda c: c[len("params."):])
    if diff_only and len(params) > 1:
        params = params.loc[:, _differing(params, raw["model"])]
    out = pd.concat([out, params], axis=1)
    out = out.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    out = out.reset_index(drop=True)
    return out.head(limit) if limit else out


def _interval_text(low: pd.Series, high: pd.Series) -> pd.Series:
    """``[low–high]`` per run, 2 decimals as in the table of ``make run``; "" for a run without one."""
    text = "[" + low.map("{:.2f}".format) + "–" + high.map("{:.2f}".format) + "]"
    return text.where(low.notna() & high.notna(), "")


def _differing(params: pd.DataFrame, model: pd.Series) -> pd.Series:
    """Which params differ between runs: two different values anywhere, or a value set in some runs of
    a model and not in others. A param that only one model has (``random_forest.n_estimators`` next to
    ``keras_mlp.*`` runs) does not count as a difference by itself: the model column says it."""
    text = params.astype(object).where(params.notna(), None)
    values_differ = text.nunique(dropna=True) > 1
    within_model = text.fillna("\0").groupby(model.fillna("").to_numpy()).nunique().gt(1).any()
    return values_differ | within_model
