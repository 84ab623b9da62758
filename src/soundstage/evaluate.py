"""Stage ``evaluate``: score a model bundle on val and test, at clip level.

Segment predictions (when ``process`` cut clips into windows) are averaged per clip before
scoring. Per split: accuracy, balanced accuracy, macro precision/recall/F1, a per-class report and
the confusion matrix (DVC plot JSON of ``{actual, predicted}`` records, and a PNG). Metrics and
figures are also logged into the model's MLflow training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soundstage.bundle import Bundle, load_bundle
from soundstage.features import load_logmels
from soundstage.io import atomic_path, write_json

SCORED_SPLITS = ("val", "test")


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
             logmel_dir: str | Path | None = None, log_to_mlflow: bool = True) -> dict[str, Any]:
    """Score one bundle on val and test; write ``out_dir/{metrics.json, predictions_<split>.csv,
    confusion_<split>.json, confusion_<split>.png}``; return the metrics."""
    bundle = load_bundle(bundle_dir)
    table = pd.read_parquet(table_path)
    out_dir = Path(out_dir)
    labels = bundle.labels
    # What produced these numbers, so that a summary can refuse metrics of other parameters.
    metrics: dict[str, Any] = {"model": bundle.meta["model"], "labels": labels,
                               "provenance": {"params_hash": bundle.meta.get("params_hash"),
                                              "bundle": bundle.meta.get("mlflow", {}).get("run_id")}}
    for split in SCORED_SPLITS:
        rows = table[table["split"] == split].reset_index(drop=True)
        clips = clip_predictions(rows, predict_rows(bundle, rows, logmel_dir=logmel_dir), labels)
        metrics[split] = score(clips["label"].to_numpy(), clips["predicted"].to_numpy(), labels)
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
    """Combine per-model metrics into ``{model: {split: {accuracy, balanced_accuracy, macro_f1}}}``.

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
        out[m["model"]] = {s: {k: m[s][k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in m[s]}
                           for s in SCORED_SPLITS}
    return out


def format_table(summary: dict[str, Any]) -> str:
    """The metrics table ``make run`` prints."""
    head = f"{'model':<16} {'val acc':>8} {'val F1':>8} {'test acc':>9} {'test F1':>8}"
    lines = [head, "-" * len(head)]
    def cell(scores: dict[str, Any], split: str, key: str) -> str:
        v = scores.get(split, {}).get(key)
        return "n/a" if v is None else f"{v:.3f}"

    for model, m in summary.items():
        lines.append(f"{model:<16} {cell(m, 'val', 'accuracy'):>8} {cell(m, 'val', 'macro_f1'):>8} "
                     f"{cell(m, 'test', 'accuracy'):>9} {cell(m, 'test', 'macro_f1'):>8}")
    return "\n".join(lines)
