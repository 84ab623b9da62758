"""``soundstage compare``: MLflow runs side by side (model, key params, val/test scores)."""

from __future__ import annotations

import pandas as pd

METRICS = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1")


def runs_table(*, tracking_uri: str, experiment: str | None = None, model: str | None = None,
               sort_by: str = "val_macro_f1", ascending: bool = False, diff_only: bool = True,
               limit: int | None = None) -> pd.DataFrame:
    """One row per finished run: ``run_id, experiment, model, start`` + metrics + params.

    ``diff_only`` keeps only the parameters whose values differ between the listed runs (the ones
    that explain a difference in scores). ``sort_by`` is a metric name such as ``test_accuracy``.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    exps = client.search_experiments()
    if experiment:
        exps = [e for e in exps if e.name == experiment]
        if not exps:
            raise ValueError(f"no MLflow experiment named {experiment!r} at {tracking_uri}")
    names = {e.experiment_id: e.name for e in exps}
    if not names:
        return pd.DataFrame(columns=["run_id", "experiment", "model", "start", *METRICS])
    runs = mlflow.search_runs(experiment_ids=list(names), output_format="pandas")
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "experiment", "model", "start", *METRICS])
    if "tags.model" not in runs:
        runs["tags.model"] = None
    if model:
        runs = runs[runs["tags.model"] == model]
    out = pd.DataFrame({
        "run_id": runs["run_id"].str[:8],
        "experiment": runs["experiment_id"].map(names),
        "model": runs["tags.model"],
        "start": pd.to_datetime(runs["start_time"]).dt.strftime("%Y-%m-%d %H:%M:%S"),
    })
    for m in METRICS:
        out[m] = runs.get(f"metrics.{m}")
    params = runs[[c for c in runs.columns if c.startswith("params.")]].rename(columns=lambda c: c[len("params."):])
    if diff_only and len(params) > 1:
        params = params.loc[:, params.astype(str).nunique(dropna=False) > 1]
    out = pd.concat([out, params], axis=1)
    if sort_by not in out:
        raise ValueError(f"--sort {sort_by!r}: not a column (choose from {', '.join(METRICS)})")
    out = out.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return out.head(limit) if limit else out
