"""The figures and plot tables behind the Snakemake report and ``dvc plots``: the training curves that
``train`` writes beside a bundle (``history.csv``, ``training_curves.png``) and what
``aggregate_folds`` adds to a model's report (``per_class_f1.{csv,png}``,
``confusion_test_normalized.png``), on generated fold reports and a tiny dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest
from test_aggregate import LABELS, clips, three_folds, write_fold

from soundstage.evaluate import aggregate_folds, normalize_confusion, per_class_f1_table, plot_per_class_f1
from soundstage.train import HISTORY_CURVES, history_table, plot_history

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG


# ------------------------------------------------------------------ aggregate_folds


def test_aggregate_writes_per_class_f1_and_the_normalized_confusion(tmp_path):
    dirs = three_folds(tmp_path)
    out = tmp_path / "model"
    agg = aggregate_folds(fold_dirs=dirs, out_dir=out, log_to_mlflow=False)
    table = pd.read_csv(out / "per_class_f1.csv", keep_default_na=False, dtype={"label": str})
    assert list(table.columns) == ["label", "f1", "f1_std", "support"]
    assert table["label"].tolist() == LABELS
    folds = [json.loads((d / "metrics.json").read_text()) for d in dirs]
    for row in table.to_dict("records"):
        f1 = np.array([f["test"]["per_class"][row["label"]]["f1-score"] for f in folds])
        assert row["f1"] == pytest.approx(f1.mean(), abs=1e-6)
        assert row["f1_std"] == pytest.approx(f1.std(ddof=1), abs=1e-6)
        assert row["support"] == sum(f["test"]["per_class"][row["label"]]["support"] for f in folds)
    assert table["support"].sum() == agg["test"]["n"]
    for name in ("per_class_f1.png", "confusion_test_normalized.png"):
        assert is_png(out / name), name


def test_normalize_confusion_rows_sum_to_one():
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    shares = normalize_confusion(cm)
    assert shares.dtype == np.float64 and shares.shape == (3, 3)
    np.testing.assert_allclose(shares.sum(axis=1), [1.0, 0.0, 1.0])  # a class without clips stays zeros
    np.testing.assert_allclose(shares[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(np.diag(shares), [0.75, 0.0, 0.5])  # the recall of each class
    assert normalize_confusion(cm.tolist()).tolist() == shares.tolist()
    assert normalize_confusion([]).shape == (0, 0)


def test_per_class_f1_of_a_class_no_fold_scored_and_of_a_split_without_clips(tmp_path):
    # The third label appears in one fold's label list only, and never in its clips.
    dirs = [write_fold(tmp_path, str(k), val=clips(10, 0.7, seed=k, prefix="v"),
                       test=clips(12, 0.7, seed=20 + k, labels=LABELS[:2], prefix="t"),
                       labels=LABELS[:2] if k else LABELS) for k in range(2)]
    aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "m", log_to_mlflow=False)
    table = pd.read_csv(tmp_path / "m" / "per_class_f1.csv", keep_default_na=False, na_values=[""])
    rain = table.set_index("label").loc["rain"]
    assert rain["support"] == 0 and rain["f1"] == 0.0  # reported with no clip: sklearn's zero_division=0
    assert per_class_f1_table({"n": 0}, LABELS).empty
    assert list(per_class_f1_table({"n": 0}, LABELS).columns) == ["label", "f1", "f1_std", "support"]
    unscored = per_class_f1_table({"n": 3, "per_class": {"bird": {"f1-score": 0.5, "f1-score_std": 0.1,
                                                                    "support": 3}}}, ["bird", "car"])
    assert unscored["support"].tolist() == [3, 0] and np.isnan(unscored["f1"].iloc[1])
    plot_per_class_f1(unscored, tmp_path / "f1.png", title="t")  # a blank score draws an empty bar
    plot_per_class_f1(per_class_f1_table({"n": 0}, LABELS), tmp_path / "none.png", title="t")
    assert is_png(tmp_path / "f1.png") and is_png(tmp_path / "none.png")


# ------------------------------------------------------------------ training curves


def test_history_table_has_a_stable_header():
    keras = {"loss": [1.0, 0.5], "accuracy": [0.3, 0.6], "val_loss": [1.2, 0.9], "val_accuracy": [0.2, 0.4],
             "learning_rate": [0.01, 0.005]}
    table = history_table(keras)
    assert list(table.columns) == ["epoch", *HISTORY_CURVES, "learning_rate"]
    assert table["epoch"].tolist() == [1, 2] and table["val_loss"].tolist() == [1.2, 0.9]
    no_val = history_table({"loss": [1.0, 0.8, 0.7], "accuracy": [0.1, 0.2, 0.3]})
    assert list(no_val.columns) == ["epoch", *HISTORY_CURVES] and no_val["val_loss"].isna().all()
    forest = history_table({})
    assert list(forest.columns) == ["epoch", *HISTORY_CURVES] and forest.empty
    with pytest.raises(ValueError, match="different lengths"):
        history_table({"loss": [1.0], "val_loss": [1.0, 2.0]})


def test_plot_history(tmp_path):
    curves = history_table({"loss": [1.0, 0.5, 0.4], "val_loss": [1.1, 0.8, 0.9], "accuracy": [0.2, 0.5, 0.6],
                            "val_accuracy": [0.1, 0.4, 0.3]})
    plot_history(curves, tmp_path / "a.png", title="keras_mlp, fold 0")
    plot_history(history_table({"loss": [1.0, 0.5], "accuracy": [0.2, 0.5]}), tmp_path / "b.png", title="no val")
    assert is_png(tmp_path / "a.png") and is_png(tmp_path / "b.png")


@pytest.mark.integration
@pytest.mark.xdist_group("train")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("model", ["random_forest", "keras_mlp"])
def test_train_writes_its_curves_beside_the_bundle(tmp_path, model):
    """history.csv (and the Keras models' figure) in the bundle folder and in the MLflow run's copy;
    the bundle still loads and predicts as before (the loader reads bundle.json and the model file)."""
    import mlflow
    from test_train import PARAMS, build_dataset, run_train

    from soundstage.bundle import load_bundle

    ds = build_dataset(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bundle = run_train(ds, model, tmp_path / "bundle", uri)
    curves = pd.read_csv(bundle.directory / "history.csv")
    assert list(curves.columns[:5]) == ["epoch", *HISTORY_CURVES]
    files = {p.name for p in bundle.directory.iterdir()}
    if model == "random_forest":
        assert curves.empty and "training_curves.png" not in files
    else:
        assert 1 <= len(curves) <= PARAMS[model]["epochs"]
        assert curves["epoch"].tolist() == list(range(1, len(curves) + 1))
        run = mlflow.MlflowClient(tracking_uri=uri).get_run(bundle.meta["mlflow"]["run_id"])
        assert len(curves) == run.data.metrics["epochs_trained"]
        assert curves["val_loss"].min() == pytest.approx(run.data.metrics["best_val_loss"])
        assert is_png(bundle.directory / "training_curves.png")
    logged = {a.path for a in mlflow.MlflowClient(tracking_uri=uri).list_artifacts(bundle.meta["mlflow"]["run_id"],
                                                                                  "bundle")}
    assert "bundle/history.csv" in logged
    loaded = load_bundle(bundle.directory)
    rows = ds["table"][ds["table"]["split"] == "test"]
    np.testing.assert_allclose(loaded.predict(summary=rows[loaded.meta["feature_columns"]].to_numpy(np.float32)),
                               bundle.predict(summary=rows[bundle.meta["feature_columns"]].to_numpy(np.float32)),
                               rtol=1e-6)
