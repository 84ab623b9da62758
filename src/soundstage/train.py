"""Stage ``train``: fit one model on the train split, bundle it, and record the run in MLflow.

Models (``params.yaml: train.models``): ``random_forest`` and ``keras_mlp`` on the summary table,
``keras_cnn`` on log-mels normalized with the train statistics of the ``stats`` stage. Validation
data drives early stopping of the Keras models; the test split is never read here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soundstage import models
from soundstage.bundle import Bundle, save_bundle
from soundstage.features import feature_columns


def load_logmels(ids: list[str], logmel_dir: str | Path) -> list[np.ndarray]:
    """Memory-mapped log-mels: the OS pages in only the crops a batch touches."""
    return [np.load(Path(logmel_dir) / f"{i}.npy", mmap_mode="r") for i in ids]


def fit(*, model: str, table: pd.DataFrame, params: dict[str, Any], seed: int, n_jobs: int = 1,
        logmel_dir: str | Path | None = None, logmel_stats: dict[str, np.ndarray] | None = None
        ) -> tuple[Any, dict[str, Any], dict[str, list[float]]]:
    """Fit ``model`` on ``table`` rows with ``split == "train"`` (val for early stopping).

    Returns
    -------
    fitted : the model object
    meta : dict
        Bundle metadata (kind, labels, feature columns, normalization statistics).
    history : dict
        Per-epoch training curves (empty for the forest).
    """
    labels = sorted(table["label"].astype(str).unique())
    index = {lab: i for i, lab in enumerate(labels)}
    train = table[table["split"] == "train"]
    val = table[table["split"] == "val"]
    if train.empty:
        raise ValueError("train: the train split is empty")
    y_train = train["label"].map(index).to_numpy(np.int64)
    y_val = val["label"].map(index).to_numpy(np.int64)
    cols = feature_columns(table)
    meta: dict[str, Any] = {"model": model, "kind": model, "labels": labels, "feature_columns": cols}
    history: dict[str, list[float]] = {}

    if model == "random_forest":
        fitted = models.fit_random_forest(train[cols].to_numpy(np.float32), y_train, seed=seed, n_jobs=n_jobs, **params)
    elif model == "keras_mlp":
        scaler = models.Standardizer.fit(train[cols].to_numpy(np.float64))
        meta["standardizer"] = scaler.to_dict()
        X_val = scaler.transform(val[cols].to_numpy(np.float64)) if len(val) else None
        fitted, history = models.fit_keras_mlp(scaler.transform(train[cols].to_numpy(np.float64)), y_train,
                                               X_val, y_val if len(val) else None, n_classes=len(labels),
                                               seed=seed, **params)
    elif model == "keras_cnn":
        if logmel_dir is None or logmel_stats is None:
            raise ValueError("keras_cnn needs the log-mel folder and the train log-mel statistics")
        mean = np.asarray(logmel_stats["mean"], np.float64)[:, None]
        std = np.maximum(np.asarray(logmel_stats["std"], np.float64), 1e-8)[:, None]
        def norm(ids: list[str]) -> list[np.ndarray]:
            return [((s - mean) / std).astype(np.float32) for s in load_logmels(ids, logmel_dir)]
        p = dict(params)
        fitted, history = models.fit_keras_cnn(norm(train["id"].tolist()), y_train,
                                               norm(val["id"].tolist()) if len(val) else None,
                                               y_val if len(val) else None, n_classes=len(labels), seed=seed,
                                               spec_augment_params=p.pop("spec_augment"), **p)
        meta["logmel_stats"] = {"mean": np.asarray(logmel_stats["mean"]).tolist(),
                                "std": np.asarray(logmel_stats["std"]).tolist()}
        meta["cnn"] = {"crop_frames": params["crop_frames"], "hop_frames": params["crop_frames"] // 2}
    else:
        raise ValueError(f"train.models: unknown model {model!r}")
    return fitted, meta, history


def train(*, model: str, table_path: str | Path, out_dir: str | Path, params: dict[str, Any], seed: int,
          process_params: dict[str, Any], feature_params: dict[str, Any], experiment: str,
          tracking_uri: str, tags: dict[str, str], flat_params: dict[str, Any], n_jobs: int = 1,
          logmel_dir: str | Path | None = None, stats_path: str | Path | None = None) -> Bundle:
    """Fit, bundle and log one model; the MLflow run id is stored in the bundle for ``evaluate``."""
    import mlflow

    from soundstage.tracking import start_run

    table = pd.read_parquet(table_path)
    stats = dict(np.load(stats_path)) if stats_path is not None else None
    with start_run(experiment=experiment, run_name=model, uri=tracking_uri, tags={"model": model, **tags}) as run:
        mlflow.log_params({k: ("None" if v is None else v) for k, v in flat_params.items()})
        t0 = time.perf_counter()
        fitted, meta, history = fit(model=model, table=table, params=params, seed=seed, n_jobs=n_jobs,
                                    logmel_dir=logmel_dir, logmel_stats=stats)
        mlflow.log_metric("fit_seconds", time.perf_counter() - t0)
        for name, values in history.items():
            for step, value in enumerate(values):
                mlflow.log_metric(f"history_{name}", float(value), step=step)
        if history.get("loss"):
            mlflow.log_metric("epochs_trained", len(history["loss"]))
        meta.update({"params": params, "seed": seed, "process": process_params, "features": feature_params,
                     "mlflow": {"tracking_uri": tracking_uri, "experiment": experiment, "run_id": run.info.run_id},
                     "tags": tags})
        bundle = save_bundle(out_dir, model=fitted, meta=meta)
        mlflow.log_artifact(str(Path(out_dir) / "bundle.json"), artifact_path="bundle")
        _log_model(fitted, model)
    return bundle


def _log_model(fitted: Any, model: str) -> None:
    """Log the model with its MLflow flavor (sklearn or keras)."""
    import mlflow

    if model == "random_forest":
        mlflow.sklearn.log_model(fitted, name="model", serialization_format="skops",
                                 skops_trusted_types=None)
    else:
        mlflow.keras.log_model(fitted, name="model")
