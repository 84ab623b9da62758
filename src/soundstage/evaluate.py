"""Stage ``evaluate``: score a model bundle on val and test, at clip level.

Segment predictions (when ``process`` cut clips into windows) are averaged per clip before
scoring. Per split: accuracy, balanced accuracy, macro precision/recall/F1, each with a 95 %
bootstrap interval (``<metric>_ci95``; clips, or whole groups when the table has them, resampled
with replacement), a per-class report and the confusion matrix (DVC plot JSON of
``{actual, predicted}`` records, and a PNG). Metrics and figures are also logged into the model's
MLflow training run.

Under cross-validation each fold's bundle is scored on that fold's val and test clips
(``reports/evaluate/<model>/folds/<fold>/``), then :func:`aggregate_folds` makes the model's report
(``reports/evaluate/<model>/``): the mean, standard deviation and per-fold values of every metric, the
confusion matrix summed over the folds, and an MLflow parent run over the folds' runs. With a single
fold the model's report holds that fold's scores and intervals, as before the folds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soundstage.bundle import Bundle, load_bundle
from soundstage.features import load_logmels
from soundstage.io import atomic_path, write_html_table, write_json

SCORED_SPLITS = ("val", "test")
#: The scalar metrics of :func:`score` that get a bootstrap interval, in the order they are written.
CI_METRICS = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1")
#: Bounds the ``(resamples, clips)`` blocks :func:`bootstrap_ci` works on at once (8-byte cells: 32 MiB).
_BLOCK_CELLS = 1 << 22


def predict_rows(bundle: Bundle, rows: pd.DataFrame, *, logmel_dir: str | Path | None = None) -> np.ndarray:
    """Segment-level probabilities ``(len(rows), n_labels)`` for rows of the features table."""
    if rows.empty:
        return np.zeros((0, len(bundle.labels)))
    if bundle.kind == "keras_cnn":
        if logmel_dir is None:
            raise ValueError("evaluating a CNN needs the log-mel folder")
        return bundle.predict(logmels=[np.asarray(s) for s in load_logmels(rows, logmel_dir)])
    return bundle.predict(summary=rows[bundle.meta["feature_columns"]].to_numpy(np.float32))


def clip_predictions(rows: pd.DataFrame, probs: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Segment probabilities ``probs [shape=(len(rows), n_labels)]`` averaged per clip: ``clip_id, label,
    predicted, p_<label>...``, one row per clip in order of first appearance."""
    columns = [f"p_{lab}" for lab in labels]
    segments = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=columns)
    segments.insert(0, "clip_id", rows["clip_id"].astype(str).to_numpy())
    segments.insert(1, "label", rows["label"].astype(str).to_numpy())
    clips = segments.groupby("clip_id", sort=False).agg({"label": "first", **dict.fromkeys(columns, "mean")})
    clips.insert(1, "predicted", np.asarray(labels, dtype=object)[clips[columns].to_numpy().argmax(axis=1)])
    return clips.reset_index()


def score(truth: list[str] | np.ndarray, predicted: list[str] | np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Classification metrics of clip-level predictions."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    if len(truth) == 0:
        return {"n": 0}
    p, r, f, _ = precision_recall_fscore_support(truth, predicted, labels=labels, average="macro", zero_division=0)
    return {
        "n": int(len(truth)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "macro_precision": float(p), "macro_recall": float(r), "macro_f1": float(f),
        "per_class": classification_report(truth, predicted, labels=labels, output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


def bootstrap_ci(truth: list[str] | np.ndarray, predicted: list[str] | np.ndarray, labels: list[str],
                 groups: list[str] | np.ndarray | None = None, *, resamples: int, seed: int) -> dict[str, Any]:
    """95 % percentile bootstrap intervals of the :data:`CI_METRICS` of clip-level predictions.

    Each resample draws units with replacement and scores the clips they hold exactly as :func:`score`
    would (same definitions, same zero-division rules). With ``groups`` (speaker, artist, source
    recording...) the unit is the group, all of its clips together: clips of one group are not
    independent, so resampling them one by one would give too narrow an interval. A class of the test
    set that a resample happens not to hold is left out of that resample's macro averages
    (:func:`_confusion_metrics`).

    Parameters
    ----------
    truth, predicted : array-like of str [shape=(n_clips,)]
        True and predicted label of each clip.
    labels : list of str
        The model's labels: the classes macro precision/recall/F1 average over.
    groups : array-like [shape=(n_clips,)], optional
        Group of each clip. ``None``, or one group per clip, resamples clips.
    resamples : int
        Number of bootstrap resamples ``B``; 0 returns ``{}``.
    seed : int
        Seed of the resampling: the same inputs and seed give the same intervals, bit for bit.

    Returns
    -------
    dict
        ``{"<metric>_ci95": [low, high], ..., "bootstrap": {"resamples": B, "unit": "group" | "clip",
        "n_units": n}}``, ready to merge into :func:`score`'s dict; ``{}`` when ``resamples`` is 0 or
        there are no clips.

    Raises
    ------
    ValueError
        ``resamples`` is negative, or the arrays differ in length.
    """
    truth, predicted = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    if resamples < 0:
        raise ValueError(f"bootstrap_ci: resamples must be >= 0, got {resamples}")
    if len(truth) != len(predicted) or (groups is not None and len(groups) != len(truth)):
        raise ValueError("bootstrap_ci: truth, predicted and groups must have one entry per clip")
    if resamples == 0 or len(truth) == 0:
        return {}
    # Labels outside the model's list (a class unseen in training) still count, as in score().
    categories = [*labels, *sorted((set(truth.tolist()) | set(predicted.tolist())) - set(labels))]
    m = len(categories)
    cell = (pd.Categorical(truth, categories=categories).codes.astype(np.int64) * m
            + pd.Categorical(predicted, categories=categories).codes)
    if groups is None:
        unit = np.arange(len(truth))
    else:
        unit = pd.factorize(pd.Series(np.asarray(groups, dtype=object)).astype(str), sort=False)[0]
    n_units, n = int(unit.max()) + 1, len(truth)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)  # resamples per block: bounded memory, whatever the test set's size
    counts = []
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        drawn = rng.integers(0, n_units, size=(b, n_units))
        # How often each resample drew each unit; every clip of a unit counts that often.
        times = np.bincount((np.arange(b)[:, None] * n_units + drawn).ravel(), minlength=b * n_units)
        clip_times = times.reshape(b, n_units)[:, unit]
        counts.append(np.bincount((np.arange(b)[:, None] * (m * m) + cell).ravel(), weights=clip_times.ravel(),
                                  minlength=b * m * m))
    full = np.bincount(cell, minlength=m * m).reshape(m, m)
    held = (full.sum(axis=0) + full.sum(axis=1))[: len(labels)] > 0  # model labels the test set holds
    values = _confusion_metrics(np.concatenate(counts).reshape(resamples, m, m), n_labels=len(labels), held=held)
    out: dict[str, Any] = {}
    for key in CI_METRICS:
        low, high = np.percentile(values[key], [2.5, 97.5])
        out[f"{key}_ci95"] = [float(low), float(high)]
    out["bootstrap"] = {"resamples": int(resamples), "unit": "clip" if n_units == n else "group",
                        "n_units": n_units}
    return out


def _confusion_metrics(cm: np.ndarray, *, n_labels: int, held: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`CI_METRICS` of a stack of confusion matrices ``cm [shape=(B, m, m)]`` (rows: actual,
    the first ``n_labels`` categories the model's labels), each of shape ``(B,)``, as sklearn
    defines them (balanced accuracy averages the recall of the classes present in the truth, macro
    scores average over the model's labels, 0 where a ratio is 0/0), except that a label the test set
    holds (``held [shape=(n_labels,)]``, true or predicted) but a resample does not leave out of that
    resample's macro averages: a test set without the class would not score it, and counting it 0
    would pull the interval down (one-class groups, artists of one genre, drop whole classes)."""
    diag = np.diagonal(cm, axis1=1, axis2=2)
    actual, predicted = cm.sum(axis=2), cm.sum(axis=1)
    present = actual > 0
    recall_all = np.divide(diag, actual, out=np.zeros_like(diag), where=present)
    tp, act, pred = diag[:, :n_labels], actual[:, :n_labels], predicted[:, :n_labels]
    counted = ~held[None, :] | (act + pred > 0)  # (B, n_labels)

    def macro(x: np.ndarray) -> np.ndarray:
        return (x * counted).sum(axis=1) / np.maximum(counted.sum(axis=1), 1)

    return {
        "accuracy": diag.sum(axis=1) / cm.sum(axis=(1, 2)),
        "balanced_accuracy": recall_all.sum(axis=1) / present.sum(axis=1),
        "macro_precision": macro(np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)),
        "macro_recall": macro(np.divide(tp, act, out=np.zeros_like(tp), where=act > 0)),
        "macro_f1": macro(np.divide(2 * tp, act + pred, out=np.zeros_like(tp), where=act + pred > 0)),
    }


def with_intervals(scores: dict[str, Any], intervals: dict[str, Any]) -> dict[str, Any]:
    """``scores`` (:func:`score`) with each ``<metric>_ci95`` of ``intervals`` (:func:`bootstrap_ci`)
    right after its metric and ``bootstrap`` after the scalars; every key of ``scores`` kept."""
    out: dict[str, Any] = {}
    for key, value in scores.items():
        if key == "per_class" and "bootstrap" in intervals:
            out["bootstrap"] = intervals["bootstrap"]
        out[key] = value
        if f"{key}_ci95" in intervals:
            out[f"{key}_ci95"] = intervals[f"{key}_ci95"]
    return {**out, **{k: v for k, v in intervals.items() if k not in out}}


def clip_groups(rows: pd.DataFrame, clip_ids: pd.Series) -> np.ndarray | None:
    """The group of each clip of ``clip_ids`` (that of its first segment in ``rows``; the clip itself
    when missing or empty), or ``None`` when ``rows`` have no ``group`` column."""
    if "group" not in rows:
        return None
    first = rows.groupby(rows["clip_id"].astype(str), sort=False)["group"].first()
    group = first.reindex(clip_ids.astype(str)).astype("string")
    own = pd.Series(clip_ids.astype(str).to_numpy(), index=group.index, dtype="string")
    # As split.group_keys does: a clip without a group is its own ("" would pool all such clips).
    return group.where(group.notna() & (group.str.strip() != ""), own).to_numpy(dtype=object)


def plot_confusion(matrix: list[list[int]] | np.ndarray, labels: list[str], path: str | Path, *, title: str,
                   normalized: bool = False) -> None:
    """Write a confusion matrix (rows actual, columns predicted, in ``labels`` order) as a PNG, each
    cell's count written in it; ``normalized``: shares (:func:`normalize_confusion`), two decimals, on
    a 0-1 colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues", **({"vmin": 0.0, "vmax": 1.0} if normalized else {}))
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    vmax = 1.0 if normalized else cm.max() if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:.2f}" if normalized else str(v), ha="center", va="center",
                color="white" if v > vmax / 2 else "black", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def evaluate(*, bundle_dir: str | Path, table_path: str | Path, out_dir: str | Path,
             logmel_dir: str | Path | None = None, log_to_mlflow: bool = True, bootstrap: int = 1000,
             seed: int = 0, folds_path: str | Path | None = None, fold: str | None = None) -> dict[str, Any]:
    """Score one bundle on val and test; write ``out_dir/{metrics.json, predictions_<split>.csv,
    confusion_<split>.json, confusion_<split>.png}``; return the metrics.

    ``bootstrap`` resamples (``params.yaml: evaluate.bootstrap``; 0: none) seeded by ``seed`` give
    each split's intervals (:func:`bootstrap_ci`), over the table's ``group`` column when it has one
    (a clip without a group is its own).

    With ``folds_path`` (the split's ``folds.csv``, :func:`soundstage.split.read_folds`) the scored rows
    are those of the features table that fold ``fold`` assigns to val and test
    (:func:`soundstage.split.rows_of_fold`); ``fold`` defaults to the one the bundle was trained on
    (``training.fold``). Without it, the table itself says which split each row is in (its ``split``
    column, the layout of before the folds).

    The metrics' ``provenance`` holds the bundle's ``params_hash``, its MLflow run id (``bundle``),
    ``split_hash`` (:func:`soundstage.split.assignment_hash` of the whole folds table, or of the scored
    table without one) and ``fold`` (``None`` without folds). When the bundle records another split
    hash (``training.split_hash``), a ``UserWarning`` says that the model was trained on another split
    (its val/test clips may have been training clips).

    Raises
    ------
    ValueError
        ``fold`` is given without ``folds_path``, or no fold is known (neither given nor recorded in the
        bundle), or it is not the fold the bundle was trained on (its test clips were training clips),
        or the folds table has no such fold; without ``folds_path``, a table without a ``split`` column.
    """
    from soundstage.split import assignment_hash

    bundle = load_bundle(bundle_dir)
    table = pd.read_parquet(table_path)
    out_dir = Path(out_dir)
    labels = bundle.labels
    training = bundle.meta.get("training") or {}
    if folds_path is not None:
        from soundstage.split import read_folds, rows_of_fold

        trained_fold = training.get("fold")
        if fold is None and trained_fold is None:
            raise ValueError(f"evaluate: {bundle_dir} records no fold (training.fold): say which fold of "
                             f"{folds_path} to score")
        fold = str(fold if fold is not None else trained_fold)
        if trained_fold is not None and str(trained_fold) != fold:
            raise ValueError(f"evaluate: {bundle_dir} was trained on fold {trained_fold}, not {fold}: the test clips "
                             f"of fold {fold} were its training clips")
        folds = read_folds(folds_path)
        split_hash, source = assignment_hash(folds), folds_path
        table = rows_of_fold(table, folds, fold)
    else:
        if fold is not None:
            raise ValueError(f"evaluate: fold {fold!r} given without the folds table (folds_path) that defines it")
        if "split" not in table:
            raise ValueError(f"evaluate: {table_path} has no split column: pass the split's folds table "
                             "(folds_path)")
        split_hash, source = assignment_hash(table), table_path
    trained_on = training.get("split_hash")
    if trained_on is not None and trained_on != split_hash:
        warnings.warn(f"evaluate: {source} assigns clips to splits differently (split.hash {split_hash}) from "
                      f"the table {bundle.meta['model']} was trained on ({trained_on}): its val/test clips may have "
                      "been training clips; train again on this split", UserWarning, stacklevel=2)
    # What produced these numbers, so that a summary can refuse metrics of other parameters or splits.
    metrics: dict[str, Any] = {"model": bundle.meta["model"], "labels": labels,
                               "provenance": {"params_hash": bundle.meta.get("params_hash"),
                                              "bundle": bundle.meta.get("mlflow", {}).get("run_id"),
                                              "split_hash": split_hash, "fold": fold}}
    for split in SCORED_SPLITS:
        rows = table[table["split"] == split].reset_index(drop=True)
        clips = clip_predictions(rows, predict_rows(bundle, rows, logmel_dir=logmel_dir), labels)
        metrics[split] = score(clips["label"].to_numpy(), clips["predicted"].to_numpy(), labels)
        if bootstrap:
            intervals = bootstrap_ci(clips["label"].to_numpy(), clips["predicted"].to_numpy(), labels,
                                     clip_groups(rows, clips["clip_id"]), resamples=bootstrap, seed=seed)
            metrics[split] = with_intervals(metrics[split], intervals)
        with atomic_path(out_dir / f"predictions_{split}.csv") as tmp:
            clips.to_csv(tmp, index=False, float_format="%.6f")
        write_json(out_dir / f"confusion_{split}.json",
                   [{"actual": a, "predicted": p} for a, p in zip(clips["label"], clips["predicted"], strict=True)])
        matrix = metrics[split].get("confusion_matrix", [[0] * len(labels) for _ in labels])
        title = f"{bundle.meta['model']} — {split}" + ("" if fold is None else f", fold {fold}")
        plot_confusion(matrix, labels, out_dir / f"confusion_{split}.png", title=title)
    write_json(out_dir / "metrics.json", metrics)
    if log_to_mlflow and bundle.meta.get("mlflow", {}).get("run_id"):
        _log(bundle, metrics, out_dir)
    return metrics


def _log(bundle: Bundle, metrics: dict[str, Any], out_dir: Path) -> None:
    import mlflow

    info = bundle.meta["mlflow"]
    mlflow.set_tracking_uri(info["tracking_uri"])
    with mlflow.start_run(run_id=info["run_id"]):
        for split in SCORED_SPLITS:
            m = metrics[split]
            if not m.get("n"):
                continue
            mlflow.log_metrics({f"{split}_{k}": m[k] for k in
                                ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1")})
            bounds = {f"{split}_{k}_ci95_{end}": m[f"{k}_ci95"][i] for k in CI_METRICS if f"{k}_ci95" in m
                      for i, end in enumerate(("low", "high"))}
            if bounds:
                mlflow.log_metrics(bounds)
            for label, rep in m["per_class"].items():
                if label in bundle.labels:
                    mlflow.log_metric(f"{split}_f1_{_metric_name(label)}", rep["f1-score"])
        for f in sorted(out_dir.iterdir()):
            if f.suffix in {".json", ".png", ".csv"}:
                mlflow.log_artifact(str(f), artifact_path="evaluation")


def _metric_name(label: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", label)


def normalize_confusion(matrix: list[list[int]] | np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix ``[shape=(n_labels, n_labels)]`` (rows actual) divided by its sum:
    the share of each actual class predicted as each class (its recall on the diagonal); rows sum to 1,
    a class without clips stays a row of zeros."""
    cm = np.asarray(matrix, dtype=np.float64)
    cm = cm if cm.ndim == 2 else cm.reshape(0, 0)  # [] for no label
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def per_class_f1_table(scores: dict[str, Any], labels: list[str]) -> pd.DataFrame:
    """``label, f1, f1_std, support``: one split of :func:`aggregate_folds`' report (``scores``, its
    ``per_class`` entry), a row per label in ``labels`` order; ``f1`` is the mean over the folds, ``f1_std``
    their sample standard deviation (0 with one fold), ``support`` the clips of the class, all folds
    together. Blank scores for a class no fold scored; no rows for a split without clips."""
    per_class = scores.get("per_class") or {}
    rows = [{"label": label, "f1": (rep := per_class.get(label) or {}).get("f1-score"),
             "f1_std": rep.get("f1-score_std"), "support": int(rep.get("support", 0))}
            for label in labels] if scores.get("n") else []
    table = pd.DataFrame(rows, columns=["label", "f1", "f1_std", "support"])
    return table.astype({"label": object, "f1": np.float64, "f1_std": np.float64, "support": np.int64})


def plot_per_class_f1(table: pd.DataFrame, path: str | Path, *, title: str) -> None:
    """Write :func:`per_class_f1_table` as a PNG: a horizontal bar per class (first class on top), its
    standard deviation over the folds as an error bar (none when every one is 0: a single fold), its
    support beside its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.32 * len(table) + 1.4)))
    y = np.arange(len(table))
    f1 = table["f1"].to_numpy(np.float64)
    std = np.nan_to_num(table["f1_std"].to_numpy(np.float64))
    ax.barh(y, np.nan_to_num(f1), xerr=std if std.any() else None, color="#4c72b0",
            error_kw={"ecolor": "black", "capsize": 3, "linewidth": 1})
    ax.set_yticks(y, [f"{label} (n={n})" + ("" if np.isfinite(v) else ", not scored")
                      for label, n, v in zip(table["label"].astype(str), table["support"], f1, strict=True)])
    if len(table):
        ax.set_ylim(len(table) - 0.5, -0.5)  # the first class on top
    else:
        ax.text(0.5, 0.5, "no clips to score", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("F1")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


#: The scalar metrics of :func:`score`, in the order ``folds.csv`` gives them per split.
SCALAR_METRICS = (*CI_METRICS, "n")
#: The per-class scores of :func:`score`'s ``per_class`` that :func:`aggregate_folds` averages over folds.
PER_CLASS_SCORES = ("precision", "recall", "f1-score")


def aggregate_folds(*, fold_dirs: Sequence[str | Path], out_dir: str | Path, split_info: dict[str, Any] | None = None,
                    log_to_mlflow: bool = True, tracking_uri: str | None = None) -> dict[str, Any]:
    """Combine the per-fold reports of one model (:func:`evaluate` with a fold) into the model's report.

    Writes into ``out_dir``:

    - ``metrics.json``: the returned dict (below), readable as a single evaluation's (``m[split][metric]``);
    - ``folds.csv``: one row per fold, ``fold`` then ``<split>_<metric>`` for val and test and every
      :data:`SCALAR_METRICS` (blank where a fold has no clips of the split);
    - ``predictions_<split>.csv``: every fold's predictions, a ``fold`` column first, folds in order;
    - ``confusion_<split>.json``: ``{actual, predicted}`` of those predictions (the DVC plot of the
      summed confusion matrix) and ``confusion_<split>.png``, the summed matrix;
    - ``confusion_test_normalized.png``: the summed test matrix with each row divided by its sum
      (:func:`normalize_confusion`: the share of each class predicted as each class);
    - ``per_class_f1.csv`` (:func:`per_class_f1_table` of the test split: ``label, f1, f1_std, support``,
      a DVC plot) and ``per_class_f1.png`` (:func:`plot_per_class_f1`).

    In k-fold cross-validation every clip is a test clip exactly once, so the test predictions cover
    the dataset once; the val clips of one fold are train clips of others, so a clip can appear in the
    val predictions of several folds (the val files then count it once per fold).

    Parameters
    ----------
    fold_dirs : sequence of path
        The folds' report folders (``reports/evaluate/<model>/folds/<fold>/``), each with
        ``metrics.json`` and ``predictions_{val,test}.csv``; the cross-validation folds only, not the
        refit model (fold ``"all"``, which has no test clips). A fold's id is its metrics'
        ``provenance.fold``, else the folder's name.
    out_dir : path
        Where the model's report goes (``reports/evaluate/<model>/``).
    split_info : dict, optional
        The split's description (``data/split/folds.json``: ``mode``, ``k``...), stored as ``split``.
    log_to_mlflow : bool
        With more than one fold, log a parent run over the folds' runs
        (:func:`soundstage.tracking.log_parent_run`): run name the model, tags and params of the folds'
        runs plus ``soundstage.folds`` (K), ``split.mode``, ``split.hash`` and params ``split.mode``,
        ``split.k``; metrics ``<split>_<metric>`` (mean) and ``<split>_<metric>_std`` for the
        :data:`CI_METRICS`, ``<split>_f1_<label>`` (mean); this function's files under ``evaluation/``.
        The folds' runs are then nested under it. With one fold there is no parent: the fold's run is
        the model's run and already holds its metrics; it gets the files of :data:`MODEL_FIGURES`.
        Folds without an MLflow run skip this (a warning).
    tracking_uri : str, optional
        The MLflow store of the folds' runs; default :func:`soundstage.tracking.tracking_uri`.

    Returns
    -------
    dict
        ``{"model", "labels", "n_folds": K, "folds": [fold ids], "split": split_info or None,
        "provenance": {"params_hash", "split_hash", "bundles": [MLflow run id per fold]},
        "val": {...}, "test": {...}}``. ``labels`` is the union of the folds' labels, in the order of
        the first fold, then of first appearance. Per split, for each metric ``M`` of :data:`CI_METRICS`:
        ``M``, the mean over the folds; ``M_std``, their sample standard deviation (``ddof=1``; 0.0 when
        a single fold has the split); ``M_folds``, the value of each fold in ``folds`` order (``None``
        for a fold without clips of the split). A fold without clips of a split (no val set) is left out
        of that split's means, deviations and sums; a split that no fold has is ``{"n": 0}``, as in
        :func:`evaluate`. ``n`` is the number of scored clips, all folds together. ``per_class``:
        ``{label: {"precision", "recall", "f1-score"`` (each with ``_std`` and ``_folds`` as above)
        ``, "support"}}``, the support summed, the scores over the folds whose split holds clips of the
        class (over every fold that reports it when none does). ``confusion_matrix``: the folds'
        matrices summed, rows actual, columns predicted, in ``labels`` order. With one fold (K = 1) the
        fold's ``<metric>_ci95`` intervals and ``bootstrap`` record are kept as they are; with more,
        they are left out: the spread over the folds is the measure.

    Raises
    ------
    ValueError
        No fold; two folds with one id, or fold ``"all"``; folds of different models, or whose
        ``provenance.params_hash`` or ``provenance.split_hash`` differ (the message names the files).
    """
    dirs = [Path(d) for d in fold_dirs]
    if not dirs:
        raise ValueError("aggregate_folds: no fold to aggregate")
    files = [d / "metrics.json" for d in dirs]
    per_fold = [_read_json(f) for f in files]
    provenance = [m.get("provenance") or {} for m in per_fold]
    ids = [str(p["fold"]) if p.get("fold") is not None else d.name for p, d in zip(provenance, dirs, strict=True)]
    if len(set(ids)) < len(ids):
        raise ValueError(f"aggregate_folds: fold ids repeat ({', '.join(ids)}): one folder per fold")
    if "all" in ids:
        raise ValueError(f"aggregate_folds: {files[ids.index('all')]} is the refit model (fold 'all'): it has no "
                         "test clips; aggregate the cross-validation folds only")
    _same_across_folds([m["model"] for m in per_fold], files, what="model", why="are reports of different models")
    for key, why in (("params_hash", "describe models trained with other parameters"),
                     ("split_hash", "describe folds of different splits")):
        _same_across_folds([p.get(key) for p in provenance], files, what=key,
                           why=f"{why}; evaluate every fold again")
    model, k = per_fold[0]["model"], len(per_fold)
    labels = list(dict.fromkeys(lab for m in per_fold for lab in m["labels"]))
    out_dir = Path(out_dir)
    out: dict[str, Any] = {"model": model, "labels": labels, "n_folds": k, "folds": ids, "split": split_info,
                           "provenance": {"params_hash": provenance[0].get("params_hash"),
                                          "split_hash": provenance[0].get("split_hash"),
                                          "bundles": [p.get("bundle") for p in provenance]}}
    for split in SCORED_SPLITS:
        scores = [m.get(split) or {"n": 0} for m in per_fold]
        out[split] = _aggregate_split(scores, [m["labels"] for m in per_fold], labels)
        frames = []
        for fold, d in zip(ids, dirs, strict=True):
            frame = pd.read_csv(d / f"predictions_{split}.csv", keep_default_na=False,
                                dtype={"clip_id": str, "label": str, "predicted": str})
            frame.insert(0, "fold", fold)
            frames.append(frame)
        # Folds without clips of the split add no rows (and, kept, would make pandas guess dtypes).
        predictions = pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)
        with atomic_path(out_dir / f"predictions_{split}.csv") as tmp:
            predictions.to_csv(tmp, index=False, float_format="%.6f")
        write_json(out_dir / f"confusion_{split}.json",
                   [{"actual": a, "predicted": p} for a, p in zip(predictions["label"], predictions["predicted"],
                                                                  strict=True)])
        matrix = out[split].get("confusion_matrix", [[0] * len(labels) for _ in labels])
        used = sum(1 for s in scores if s.get("n"))
        title = f"{model} — {split}" + (f"\nsummed over {used} folds" if k > 1 else "")
        plot_confusion(matrix, labels, out_dir / f"confusion_{split}.png", title=title)
        if split == "test":
            plot_confusion(normalize_confusion(matrix), labels, out_dir / "confusion_test_normalized.png",
                           title=f"{title}\nshare of each actual class", normalized=True)
            f1 = per_class_f1_table(out[split], labels)
            with atomic_path(out_dir / "per_class_f1.csv") as tmp:
                f1.to_csv(tmp, index=False, float_format="%.6f")
            spread = f"\nmean ± std over {used} folds" if used > 1 else ""
            plot_per_class_f1(f1, out_dir / "per_class_f1.png", title=f"{model} — test F1 per class{spread}")
    table = pd.DataFrame([{"fold": fold, **{f"{split}_{key}": (m.get(split) or {}).get(key, 0 if key == "n" else None)
                                            for split in SCORED_SPLITS for key in SCALAR_METRICS}}
                          for fold, m in zip(ids, per_fold, strict=True)])
    with atomic_path(out_dir / "folds.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_html_table(out_dir / "folds.html", table, title=f"{model}: metrics per fold")
    write_json(out_dir / "metrics.json", out)
    if log_to_mlflow and k > 1:
        _log_parent(out, out_dir, tracking_uri=tracking_uri)
    elif log_to_mlflow and out["provenance"]["bundles"][0]:
        _log_figures(out["provenance"]["bundles"][0], out_dir, tracking_uri=tracking_uri)
    return out


#: The files of a model's report that its figures are made of (per-class F1, normalized confusion).
MODEL_FIGURES = ("per_class_f1.csv", "per_class_f1.png", "confusion_test_normalized.png")


def _log_figures(run_id: str, out_dir: Path, *, tracking_uri: str | None) -> None:
    """With one fold, log the model-level figures of ``out_dir`` into the fold's run under ``evaluation/``
    (the fold's own confusion matrices are already there)."""
    import mlflow

    from soundstage import tracking

    client = mlflow.MlflowClient(tracking_uri=tracking_uri or tracking.tracking_uri())
    for name in MODEL_FIGURES:
        if (out_dir / name).is_file():
            client.log_artifact(run_id, str(out_dir / name), artifact_path="evaluation")


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _same_across_folds(values: list[Any], files: list[Path], *, what: str, why: str) -> None:
    """Raise ``ValueError`` naming the first file whose ``values`` entry differs from the first file's."""
    for value, f in zip(values, files, strict=True):
        if value != values[0]:
            raise ValueError(f"aggregate_folds: {files[0]} and {f} {why} ({what} {values[0]} and {value})")


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _aggregate_split(scores: list[dict[str, Any]], fold_labels: list[list[str]], labels: list[str]) -> dict[str, Any]:
    """One split's entry of :func:`aggregate_folds` from each fold's :func:`evaluate` entry ``scores``
    (the folds' labels ``fold_labels``, ``labels`` their union)."""
    used = [i for i, s in enumerate(scores) if s.get("n")]
    if not used:
        return {"n": 0}
    single = len(scores) == 1
    out: dict[str, Any] = {"n": int(sum(scores[i]["n"] for i in used))}
    for key in CI_METRICS:
        values = [float(s[key]) if i in used else None for i, s in enumerate(scores)]
        out[key], out[f"{key}_std"] = _mean_std([v for v in values if v is not None])
        out[f"{key}_folds"] = values
        if single and f"{key}_ci95" in scores[0]:
            out[f"{key}_ci95"] = scores[0][f"{key}_ci95"]
    if single and "bootstrap" in scores[0]:
        out["bootstrap"] = scores[0]["bootstrap"]
    per_class: dict[str, Any] = {}
    for label in labels:
        reports = {i: scores[i].get("per_class", {}).get(label) for i in used}
        reports = {i: r for i, r in reports.items() if isinstance(r, dict)}
        held = {i: r for i, r in reports.items() if r.get("support")} or reports
        entry: dict[str, Any] = {}
        for name in PER_CLASS_SCORES:
            values = [float(held[i][name]) if i in held else None for i in range(len(scores))]
            present = [v for v in values if v is not None]
            entry[name], entry[f"{name}_std"] = _mean_std(present) if present else (None, None)
            entry[f"{name}_folds"] = values
        entry["support"] = int(sum(r.get("support", 0) for r in reports.values()))
        per_class[label] = entry
    out["per_class"] = per_class
    index = {lab: j for j, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for i in used:
        at = np.array([index[lab] for lab in fold_labels[i]])
        matrix[np.ix_(at, at)] += np.asarray(scores[i]["confusion_matrix"], dtype=np.int64)
    out["confusion_matrix"] = matrix.tolist()
    return out


def _log_parent(metrics: dict[str, Any], out_dir: Path, *, tracking_uri: str | None) -> str | None:
    """Log :func:`aggregate_folds`' parent run (see there); its id, or ``None`` when a fold has no run."""
    from soundstage import tracking

    run_ids = metrics["provenance"]["bundles"]
    if not all(run_ids):
        warnings.warn(f"aggregate_folds: no MLflow parent run for {metrics['model']}: fold(s) "
                      f"{', '.join(f for f, r in zip(metrics['folds'], run_ids, strict=True) if not r)} "
                      "have no run", UserWarning, stacklevel=3)
        return None
    split_info = metrics.get("split") or {}
    logged: dict[str, float] = {}
    for split in SCORED_SPLITS:
        m = metrics[split]
        if not m.get("n"):
            continue
        for key in CI_METRICS:
            logged[f"{split}_{key}"] = m[key]
            logged[f"{split}_{key}_std"] = m[f"{key}_std"]
        for label, rep in m["per_class"].items():
            if rep["f1-score"] is not None:
                logged[f"{split}_f1_{_metric_name(label)}"] = rep["f1-score"]
    params = {"split.k": split_info.get("k", metrics["n_folds"])}
    tags: dict[str, Any] = {tracking.FOLDS_TAG: metrics["n_folds"]}
    if split_info.get("mode") is not None:
        params["split.mode"] = tags[tracking.SPLIT_MODE_TAG] = split_info["mode"]
    if metrics["provenance"]["split_hash"] is not None:
        tags[tracking.SPLIT_HASH_TAG] = metrics["provenance"]["split_hash"]
    names = ("metrics.json", "folds.csv", *MODEL_FIGURES,
             *(f"confusion_{s}.{ext}" for s in SCORED_SPLITS for ext in ("json", "png")))
    artifacts = [out_dir / name for name in names if (out_dir / name).is_file()]
    return tracking.log_parent_run(uri=tracking_uri or tracking.tracking_uri(), child_run_ids=run_ids,
                                   run_name=metrics["model"], metrics=logged, params=params, tags=tags,
                                   artifacts=artifacts)


class StaleMetrics(ValueError):
    """A metrics file describes a model trained with other parameters than the current ones."""


def combine_metrics(*, metrics_files: list[str | Path], params_hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """Combine per-model metrics into ``{model: {split: {accuracy, balanced_accuracy, macro_f1}}}``,
    with their ``<metric>_ci95`` intervals and the ``bootstrap`` record where the files have them.

    A model's report over K > 1 cross-validation folds (:func:`aggregate_folds`) gives the means over
    the folds, each with its standard deviation ``<metric>_std``, and ``n_folds`` beside the splits
    (``{model: {"n_folds": K, "val": ..., "test": ...}}``); a report of one fold gives ``n_folds`` 1
    and no deviation (it is 0), its bootstrap intervals instead.

    ``params_hashes`` (``{model: hash}`` of the current parameters, as ``train`` records them in the
    bundle) makes each file prove it describes them: a file whose recorded ``params_hash`` differs,
    or that records none, raises :class:`StaleMetrics` naming it.
    """
    out: dict[str, Any] = {}
    for f in metrics_files:
        m = _read_json(Path(f))
        if params_hashes is not None and m["model"] in params_hashes:
            recorded = (m.get("provenance") or {}).get("params_hash")
            if recorded != params_hashes[m["model"]]:
                raise StaleMetrics(f"{f}: these metrics describe a {m['model']} trained with other parameters "
                                   f"than the current ones (params hash {recorded} recorded, "
                                   f"{params_hashes[m['model']]} now); run the pipeline again")
        spread = ("_std", "_ci95") if m.get("n_folds", 1) > 1 else ("_ci95",)
        keys = [k for key in ("accuracy", "balanced_accuracy", "macro_f1") for k in (key, *(key + s for s in spread))]
        entry: dict[str, Any] = {"n_folds": m["n_folds"]} if "n_folds" in m else {}
        out[m["model"]] = {**entry, **{s: {k: m[s][k] for k in [*keys, "bootstrap"] if k in m[s]}
                                       for s in SCORED_SPLITS}}
    return out


def format_table(summary: dict[str, Any]) -> str:
    """The metrics table ``make run`` prints (:func:`combine_metrics`' summary): val and test accuracy
    and macro F1, and a line under it per kind of spread shown: for a model cross-validated over K > 1
    folds, each score as ``0.812 ± 0.031`` (mean ± sample standard deviation over the folds); for a
    single test set, the test scores with their 95 % bootstrap interval ``0.812 [0.74–0.87]`` when
    recorded."""
    def folded(scores: dict[str, Any]) -> bool:
        return scores.get("n_folds", 1) > 1

    def cell(scores: dict[str, Any], split: str, key: str) -> str:
        v = scores.get(split, {}).get(key)
        if v is None:
            return "n/a"
        std = scores[split].get(f"{key}_std")
        if folded(scores) and std is not None:
            return f"{v:.3f} ± {std:.3f}"
        ci = scores[split].get(f"{key}_ci95") if split == "test" else None
        return f"{v:.3f}" if ci is None else f"{v:.3f} [{ci[0]:.2f}–{ci[1]:.2f}]"

    columns = (("val acc", "val", "accuracy", 8), ("val F1", "val", "macro_f1", 8),
               ("test acc", "test", "accuracy", 9), ("test F1", "test", "macro_f1", 8))
    cells = {model: [cell(m, split, key) for _, split, key, _ in columns] for model, m in summary.items()}
    # At least the widths of old, else one space more than the widest cell (" 0.812 [0.74–0.87]").
    widths = [max(w, *(len(c[j]) + 1 for c in cells.values())) for j, (*_, w) in enumerate(columns)]
    head = f"{'model':<16}" + "".join(f" {name:>{w}}" for (name, *_), w in zip(columns, widths, strict=True))
    lines = [head, "-" * len(head)]
    for model, row in cells.items():
        lines.append(f"{model:<16}" + "".join(f" {c:>{w}}" for c, w in zip(row, widths, strict=True)))
    ks = sorted({m["n_folds"] for m in summary.values() if folded(m)})
    if ks:
        lines.append(f"a ± s: mean ± sample standard deviation over the {' or '.join(map(str, ks))} cross-validation "
                     "folds, each fold scored on its own val and test clips")
    boot = next((m["test"]["bootstrap"] for m in summary.values()
                 if not folded(m) and (m.get("test") or {}).get("bootstrap")), None)
    if boot:
        lines.append(f"[low–high]: 95 % bootstrap interval over the {boot['n_units']} test {boot['unit']}s "
                     f"({boot['resamples']} resamples); a difference within it may be noise")
    return "\n".join(lines)
