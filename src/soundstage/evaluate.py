"""Stage ``evaluate``: score a model bundle on val and test, at clip level.

Segment predictions (when ``process`` cut clips into windows) are averaged per clip before
scoring. Per split: accuracy, balanced accuracy, macro precision/recall/F1, each with a 95 %
bootstrap interval (``<metric>_ci95``; clips, or whole groups when the table has them, resampled
with replacement), a per-class report and the confusion matrix (DVC plot JSON of
``{actual, predicted}`` records, and a PNG). Metrics and figures are also logged into the model's
MLflow training run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soundstage.bundle import Bundle, load_bundle
from soundstage.features import load_logmels
from soundstage.io import atomic_path, write_json

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
        return bundle.predict(logmels=[np.asarray(s) for s in load_logmels(rows["id"].tolist(), logmel_dir)])
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


def plot_confusion(matrix: list[list[int]], labels: list[str], path: str | Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    vmax = cm.max() if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > vmax / 2 else "black", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def evaluate(*, bundle_dir: str | Path, table_path: str | Path, out_dir: str | Path,
             logmel_dir: str | Path | None = None, log_to_mlflow: bool = True, bootstrap: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """Score one bundle on val and test; write ``out_dir/{metrics.json, predictions_<split>.csv,
    confusion_<split>.json, confusion_<split>.png}``; return the metrics.

    ``bootstrap`` resamples (``params.yaml: evaluate.bootstrap``; 0: none) seeded by ``seed`` give
    each split's intervals (:func:`bootstrap_ci`), over the table's ``group`` column when it has one
    (a clip without a group is its own).

    The metrics' ``provenance`` holds the bundle's ``params_hash``, its MLflow run id (``bundle``) and
    ``split_hash``, :func:`soundstage.split.assignment_hash` of the scored table. When the bundle
    records another split hash (``training.split_hash``), a ``UserWarning`` says that the model was
    trained on another split (its val/test clips may have been training clips)."""
    from soundstage.split import assignment_hash

    bundle = load_bundle(bundle_dir)
    table = pd.read_parquet(table_path)
    out_dir = Path(out_dir)
    labels = bundle.labels
    split_hash = assignment_hash(table)
    trained_on = (bundle.meta.get("training") or {}).get("split_hash")
    if trained_on is not None and trained_on != split_hash:
        warnings.warn(f"evaluate: {table_path} assigns clips to splits differently (split.hash {split_hash}) from "
                      f"the table {bundle.meta['model']} was trained on ({trained_on}): its val/test clips may have "
                      "been training clips; train again on this table", UserWarning, stacklevel=2)
    # What produced these numbers, so that a summary can refuse metrics of other parameters or splits.
    metrics: dict[str, Any] = {"model": bundle.meta["model"], "labels": labels,
                               "provenance": {"params_hash": bundle.meta.get("params_hash"),
                                              "bundle": bundle.meta.get("mlflow", {}).get("run_id"),
                                              "split_hash": split_hash}}
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
        plot_confusion(matrix, labels, out_dir / f"confusion_{split}.png", title=f"{bundle.meta['model']} — {split}")
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


class StaleMetrics(ValueError):
    """A metrics file describes a model trained with other parameters than the current ones."""


def combine_metrics(*, metrics_files: list[str | Path], params_hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """Combine per-model metrics into ``{model: {split: {accuracy, balanced_accuracy, macro_f1}}}``,
    with their ``<metric>_ci95`` intervals and the ``bootstrap`` record where the files have them.

    ``params_hashes`` (``{model: hash}`` of the current parameters, as ``train`` records them in the
    bundle) makes each file prove it describes them: a file whose recorded ``params_hash`` differs,
    or that records none, raises :class:`StaleMetrics` naming it.
    """
    import json

    out: dict[str, Any] = {}
    for f in metrics_files:
        m = json.loads(Path(f).read_text(encoding="utf-8"))
        if params_hashes is not None and m["model"] in params_hashes:
            recorded = (m.get("provenance") or {}).get("params_hash")
            if recorded != params_hashes[m["model"]]:
                raise StaleMetrics(f"{f}: these metrics describe a {m['model']} trained with other parameters "
                                   f"than the current ones (params hash {recorded} recorded, "
                                   f"{params_hashes[m['model']]} now); run the pipeline again")
        keys = [k for key in ("accuracy", "balanced_accuracy", "macro_f1") for k in (key, f"{key}_ci95")]
        out[m["model"]] = {s: {k: m[s][k] for k in [*keys, "bootstrap"] if k in m[s]} for s in SCORED_SPLITS}
    return out


def format_table(summary: dict[str, Any]) -> str:
    """The metrics table ``make run`` prints (:func:`combine_metrics`' summary): val and test accuracy
    and macro F1, the test scores with their 95 % interval ``0.812 [0.74–0.87]`` when recorded, and a
    line saying what the intervals are."""
    def cell(scores: dict[str, Any], split: str, key: str) -> str:
        v = scores.get(split, {}).get(key)
        if v is None:
            return "n/a"
        ci = scores[split].get(f"{key}_ci95") if split == "test" else None
        return f"{v:.3f}" if ci is None else f"{v:.3f} [{ci[0]:.2f}–{ci[1]:.2f}]"

    runs = [m.get("test", {}).get("bootstrap") for m in summary.values()]
    acc, f1 = (18, 18) if any(runs) else (9, 8)  # room for " 0.812 [0.74–0.87]"
    head = f"{'model':<16} {'val acc':>8} {'val F1':>8} {'test acc':>{acc}} {'test F1':>{f1}}"
    lines = [head, "-" * len(head)]
    for model, m in summary.items():
        lines.append(f"{model:<16} {cell(m, 'val', 'accuracy'):>8} {cell(m, 'val', 'macro_f1'):>8} "
                     f"{cell(m, 'test', 'accuracy'):>{acc}} {cell(m, 'test', 'macro_f1'):>{f1}}")
    boot = next((b for b in runs if b), None)
    if boot:
        lines.append(f"[low–high]: 95 % bootstrap interval over the {boot['n_units']} test {boot['unit']}s "
                     f"({boot['resamples']} resamples); a difference within it may be noise")
    return "\n".join(lines)
