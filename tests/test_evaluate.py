"""Tests for soundstage.evaluate: clip-level aggregation of segments, metrics, report files and
MLflow logging (temporary SQLite store), on a small synthetic features table."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from soundstage.bundle import load_bundle
from soundstage.evaluate import clip_predictions, combine_metrics, evaluate, format_table, predict_rows, score
from soundstage.train import train

# One worker runs this module: its trained bundle is built once (xdist --dist loadgroup).
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.xdist_group("evaluate")]

LABELS = ["bird", "car", "rain"]
N_FEATURES = 5
RF_PARAMS = {"n_estimators": 25, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt",
             "class_weight": "balanced"}


def make_table(*, clips_per_split: dict[str, int], segments: int = 3, seed: int = 0) -> pd.DataFrame:
    """A segmented features table: every clip has ``segments`` rows ``<clip>__s<k>``; class k's
    features are centred on k (noisy enough that some segments are misclassified)."""
    r = np.random.default_rng(seed)
    rows = []
    for split, n in clips_per_split.items():
        for k, label in enumerate(LABELS):
            for i in range(n):
                clip = f"{label}/{split}{i:02d}"
                for s in range(segments):
                    feats = r.normal(loc=k, scale=0.9, size=N_FEATURES).astype(np.float32)
                    rows.append({"id": f"{clip}__s{s}", "clip_id": clip, "label": label, "group": f"{label}.{split}",
                                 "split": split, **{f"feat_mean_{j}": feats[j] for j in range(N_FEATURES)}})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An RF bundle trained on a segmented table, logged to a temporary MLflow store."""
    tmp = tmp_path_factory.mktemp("evaluate")
    table = make_table(clips_per_split={"train": 6, "val": 3, "test": 4})
    table.to_parquet(tmp / "table.parquet")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    bundle = train(model="random_forest", table_path=tmp / "table.parquet", out_dir=tmp / "models" / "random_forest",
                   params=RF_PARAMS, seed=0, process_params={}, feature_params={}, experiment="toy",
                   tracking_uri=uri, tags={"git.commit": "0" * 40, "git.dirty": "false"},
                   flat_params={"random_forest.n_estimators": 25})
    return {"tmp": tmp, "table": table, "uri": uri, "bundle_dir": bundle.directory}


def test_clip_predictions_averages_segments():
    rows = pd.DataFrame({"clip_id": ["x", "y", "x", "x", "y"], "label": ["car", "bird", "car", "car", "bird"]})
    probs = np.array([[0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.4, 0.2, 0.4], [0.7, 0.3, 0.0], [0.2, 0.0, 0.8]])
    out = clip_predictions(rows, probs, LABELS)
    assert out["clip_id"].tolist() == ["x", "y"]  # order of first appearance
    assert out["label"].tolist() == ["car", "bird"]
    np.testing.assert_allclose(out[["p_bird", "p_car", "p_rain"]].to_numpy(),
                               [[0.4, 1.4 / 3, 0.4 / 3], [0.4, 0.2, 0.4]])
    # Clip x: mean p_car 0.467 beats 0.4; clip y: a tie between bird and rain goes to the first label.
    assert out["predicted"].tolist() == ["car", "bird"]
    with pytest.raises(ValueError):  # one clip id per row of probabilities
        clip_predictions(rows.iloc[:-1], probs, LABELS)


def test_clip_predictions_empty():
    out = clip_predictions(pd.DataFrame({"clip_id": [], "label": []}), np.zeros((0, 3)), LABELS)
    assert len(out) == 0
    assert list(out.columns) == ["clip_id", "label", "predicted", "p_bird", "p_car", "p_rain"]


def test_score_by_hand():
    truth = ["bird", "bird", "car", "car", "rain", "rain"]
    pred = ["bird", "car", "car", "car", "rain", "bird"]
    m = score(truth, pred, LABELS)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: actual, columns: predicted
    assert m["per_class"]["car"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["rain"]["support"] == 2
    assert score([], [], LABELS) == {"n": 0}


def test_evaluate_segmented_reports(trained):
    tmp, table = trained["tmp"], trained["table"]
    out = tmp / "reports" / "random_forest"
    metrics = evaluate(bundle_dir=trained["bundle_dir"], table_path=tmp / "table.parquet", out_dir=out,
                       log_to_mlflow=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", *(f"{kind}_{split}.{ext}" for split in ("val", "test")
                           for kind, ext in (("predictions", "csv"), ("confusion", "json"), ("confusion", "png")))])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    bundle = load_bundle(trained["bundle_dir"])
    for split, n_clips in (("val", 3), ("test", 4)):
        m = metrics[split]
        assert m["n"] == n_clips * len(LABELS)  # clips, not segments
        assert {"accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
                "per_class", "confusion_matrix"} <= set(m)
        assert 0.5 < m["accuracy"] <= 1.0
        assert np.asarray(m["confusion_matrix"]).sum() == m["n"]
        preds = pd.read_csv(out / f"predictions_{split}.csv")
        rows = table[table["split"] == split].reset_index(drop=True)
        assert len(preds) == rows["clip_id"].nunique()
        # Each clip's probabilities are the mean of its segments' probabilities.
        seg = pd.DataFrame(predict_rows(bundle, rows), columns=[f"p_{lab}" for lab in LABELS])
        expected = seg.groupby(rows["clip_id"]).mean().loc[preds["clip_id"]]
        np.testing.assert_allclose(preds[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-6)
        assert (preds["label"] == preds["clip_id"].str.split("/").str[0]).all()
        records = json.loads((out / f"confusion_{split}.json").read_text())
        assert records == [{"actual": a, "predicted": p} for a, p in zip(preds["label"], preds["predicted"])]
        assert (out / f"confusion_{split}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_logs_into_the_training_run(trained):
    import mlflow

    tmp = trained["tmp"]
    metrics = evaluate(bundle_dir=trained["bundle_dir"], table_path=tmp / "table.parquet",
                       out_dir=tmp / "reports" / "logged")
    run_id = load_bundle(trained["bundle_dir"]).meta["mlflow"]["run_id"]
    client = mlflow.MlflowClient(tracking_uri=trained["uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    logged = run.data.metrics
    for split in ("val", "test"):
        for key in ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1"):
            assert logged[f"{split}_{key}"] == pytest.approx(metrics[split][key])
        for label in LABELS:
            assert logged[f"{split}_f1_{label}"] == pytest.approx(metrics[split]["per_class"][label]["f1-score"])
    artifacts = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/confusion_test.png", "evaluation/confusion_val.json", "evaluation/metrics.json",
            "evaluation/predictions_test.csv"} <= artifacts


def test_evaluate_empty_split_and_summary(trained, tmp_path):
    table = make_table(clips_per_split={"train": 2, "test": 2}, segments=1, seed=1)  # no val split
    table.to_parquet(tmp_path / "table.parquet")
    out = tmp_path / "reports"
    metrics = evaluate(bundle_dir=trained["bundle_dir"], table_path=tmp_path / "table.parquet", out_dir=out,
                       log_to_mlflow=False)
    assert metrics["val"] == {"n": 0}
    assert metrics["test"]["n"] == 2 * len(LABELS)
    assert json.loads((out / "confusion_val.json").read_text()) == []
    assert pd.read_csv(out / "predictions_val.csv").empty
    assert (out / "confusion_val.png").is_file()

    summary = combine_metrics(metrics_files=[out / "metrics.json"])
    assert summary == {"random_forest": {"val": {}, "test": {k: metrics["test"][k] for k in
                                                             ("accuracy", "balanced_accuracy", "macro_f1")}}}
    text = format_table(summary)
    assert "random_forest" in text and "n/a" in text and f"{metrics['test']['accuracy']:.3f}" in text
