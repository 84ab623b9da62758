"""Tests for soundstage.evaluate.aggregate_folds (the model's report from its folds' reports) and the
MLflow parent run over the folds' runs (soundstage.tracking.log_parent_run), on fold reports written
here from generated predictions, so that every expected number is computed independently (numpy on the
fold files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from soundstage.evaluate import (
    CI_METRICS,
    aggregate_folds,
    bootstrap_ci,
    combine_metrics,
    format_table,
    score,
    with_intervals,
)

LABELS = ["bird", "car", "rain"]
PARAMS_HASH = "a" * 40
SPLIT_HASH = "b" * 12
SPLITS = ("val", "test")


def clips(n: int, accuracy: float, *, seed: int, labels: list[str] = LABELS, prefix: str = "c") -> pd.DataFrame:
    """``n`` clip predictions as ``evaluate`` writes them: ``clip_id, label, predicted, p_<label>...``,
    a share ``accuracy`` right."""
    r = np.random.default_rng(seed)
    truth = r.integers(0, len(labels), n)
    predicted = np.where(r.random(n) < accuracy, truth, (truth + r.integers(1, len(labels), n)) % len(labels))
    probs = np.full((n, len(labels)), 0.1 / max(1, len(labels) - 1))
    probs[np.arange(n), predicted] = 0.9
    frame = pd.DataFrame({"clip_id": [f"{prefix}{seed}_{i:03d}" for i in range(n)],
                          "label": np.asarray(labels, dtype=object)[truth],
                          "predicted": np.asarray(labels, dtype=object)[predicted]})
    return pd.concat([frame, pd.DataFrame(probs, columns=[f"p_{lab}" for lab in labels])], axis=1)


def write_fold(root: Path, fold: str, *, val: pd.DataFrame, test: pd.DataFrame, labels: list[str] = LABELS,
               params_hash: str = PARAMS_HASH, split_hash: str = SPLIT_HASH, run_id: str | None = None,
               model: str = "random_forest", bootstrap: int = 200) -> Path:
    """A fold's report folder as :func:`soundstage.evaluate.evaluate` writes it (metrics, predictions)."""
    out = root / "folds" / fold
    out.mkdir(parents=True)
    metrics = {"model": model, "labels": labels,
               "provenance": {"params_hash": params_hash, "bundle": run_id, "split_hash": split_hash, "fold": fold}}
    for split, frame in (("val", val), ("test", test)):
        metrics[split] = score(frame["label"].to_numpy(), frame["predicted"].to_numpy(), labels)
        if bootstrap:
            metrics[split] = with_intervals(metrics[split], bootstrap_ci(frame["label"], frame["predicted"], labels,
                                                                         resamples=bootstrap, seed=0))
        frame.to_csv(out / f"predictions_{split}.csv", index=False, float_format="%.6f")
    (out / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return out


def three_folds(root: Path, **kwargs) -> list[Path]:
    return [write_fold(root, str(k), val=clips(20 + k, 0.5 + 0.1 * k, seed=10 + k, prefix="v"),
                       test=clips(30 + k, 0.6 + 0.1 * k, seed=k, prefix="t"), **kwargs) for k in range(3)]


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_aggregate_is_the_mean_and_std_of_the_folds(tmp_path):
    dirs = three_folds(tmp_path)
    out = tmp_path / "model"
    agg = aggregate_folds(fold_dirs=dirs, out_dir=out, split_info={"mode": "kfold", "k": 3}, log_to_mlflow=False)
    assert read(out / "metrics.json") == json.loads(json.dumps(agg))
    folds = [read(d / "metrics.json") for d in dirs]
    assert agg["model"] == "random_forest" and agg["labels"] == LABELS
    assert agg["n_folds"] == 3 and agg["folds"] == ["0", "1", "2"] and agg["split"] == {"mode": "kfold", "k": 3}
    assert agg["provenance"] == {"params_hash": PARAMS_HASH, "split_hash": SPLIT_HASH, "bundles": [None] * 3}
    for split in SPLITS:
        m = agg[split]
        assert m["n"] == sum(f[split]["n"] for f in folds)
        for key in CI_METRICS:
            values = np.array([f[split][key] for f in folds])
            assert m[key] == pytest.approx(values.mean())
            assert m[f"{key}_std"] == pytest.approx(values.std(ddof=1))
            assert m[f"{key}_folds"] == values.tolist()
            assert f"{key}_ci95" not in m  # the spread over the folds is the measure
        assert "bootstrap" not in m
        for label in LABELS:
            f1 = np.array([f[split]["per_class"][label]["f1-score"] for f in folds])
            assert m["per_class"][label]["f1-score"] == pytest.approx(f1.mean())
            assert m["per_class"][label]["f1-score_std"] == pytest.approx(f1.std(ddof=1))
            assert m["per_class"][label]["f1-score_folds"] == f1.tolist()
            assert m["per_class"][label]["support"] == sum(f[split]["per_class"][label]["support"] for f in folds)
        assert m["confusion_matrix"] == np.sum([f[split]["confusion_matrix"] for f in folds], axis=0).tolist()

        # All folds' predictions, a fold column first; the plot records are those predictions.
        preds = pd.read_csv(out / f"predictions_{split}.csv", dtype={"fold": str})
        expected = pd.concat([pd.read_csv(d / f"predictions_{split}.csv").assign(fold=d.name) for d in dirs],
                             ignore_index=True)
        assert list(preds.columns) == ["fold", *expected.columns[:-1]]
        pd.testing.assert_frame_equal(preds, expected[preds.columns])
        records = read(out / f"confusion_{split}.json")
        assert records == [{"actual": a, "predicted": p} for a, p in zip(preds["label"], preds["predicted"])]
        counted = pd.crosstab(pd.Categorical([r["actual"] for r in records], LABELS),
                              pd.Categorical([r["predicted"] for r in records], LABELS), dropna=False)
        assert counted.to_numpy().tolist() == m["confusion_matrix"]  # the DVC plot is the summed matrix
        assert (out / f"confusion_{split}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = pd.read_csv(out / "folds.csv", dtype={"fold": str})
    assert list(table.columns) == ["fold", *(f"{s}_{k}" for s in SPLITS for k in (*CI_METRICS, "n"))]
    assert table["fold"].tolist() == ["0", "1", "2"]
    for split in SPLITS:
        for key in (*CI_METRICS, "n"):
            assert table[f"{split}_{key}"].tolist() == pytest.approx([f[split][key] for f in folds])


def test_one_fold_is_reported_as_before_the_folds(tmp_path):
    """K = 1: the fold's numbers, bootstrap intervals included; no deviation to speak of (0.0); the
    summary table of ``make run`` unchanged."""
    fold = write_fold(tmp_path, "0", val=clips(24, 0.7, seed=1), test=clips(40, 0.8, seed=2), bootstrap=300)
    agg = aggregate_folds(fold_dirs=[fold], out_dir=tmp_path / "model", log_to_mlflow=False)
    single = read(fold / "metrics.json")
    assert agg["n_folds"] == 1 and agg["folds"] == ["0"] and agg["split"] is None
    for split in SPLITS:
        m, f = agg[split], single[split]
        for key in CI_METRICS:
            assert m[key] == f[key]  # exactly
            assert m[f"{key}_std"] == 0.0 and m[f"{key}_folds"] == [f[key]]
            assert m[f"{key}_ci95"] == f[f"{key}_ci95"]
        assert m["bootstrap"] == f["bootstrap"]
        assert m["n"] == f["n"] and m["confusion_matrix"] == f["confusion_matrix"]
        assert {lab: m["per_class"][lab]["f1-score"] for lab in LABELS} == {
            lab: f["per_class"][lab]["f1-score"] for lab in LABELS}
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "model" / f"predictions_{split}.csv").drop(columns="fold"),
                                      pd.read_csv(fold / f"predictions_{split}.csv"))
        assert read(tmp_path / "model" / f"confusion_{split}.json") == [
            {"actual": a, "predicted": p} for a, p in zip(*pd.read_csv(fold / f"predictions_{split}.csv")[
                ["label", "predicted"]].to_numpy().T)]
    summary = combine_metrics(metrics_files=[tmp_path / "model" / "metrics.json"], params_hashes={
        "random_forest": PARAMS_HASH})
    assert summary["random_forest"]["n_folds"] == 1
    assert not [k for s in SPLITS for k in summary["random_forest"][s] if k.endswith("_std")]
    before = combine_metrics(metrics_files=[fold / "metrics.json"])
    assert format_table(summary) == format_table(before)
    assert "95 % bootstrap interval" in format_table(summary).splitlines()[-1]


def test_a_fold_without_val_clips_is_left_out_of_the_val_means(tmp_path):
    dirs = [write_fold(tmp_path, "0", val=clips(20, 0.6, seed=1), test=clips(30, 0.7, seed=2)),
            write_fold(tmp_path, "1", val=clips(0, 0.6, seed=3), test=clips(30, 0.8, seed=4)),
            write_fold(tmp_path, "2", val=clips(25, 0.9, seed=5), test=clips(30, 0.5, seed=6))]
    agg = aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "model", log_to_mlflow=False)
    folds = [read(d / "metrics.json") for d in dirs]
    assert folds[1]["val"] == {"n": 0}
    val = np.array([folds[0]["val"]["accuracy"], folds[2]["val"]["accuracy"]])
    assert agg["val"]["accuracy"] == pytest.approx(val.mean())
    assert agg["val"]["accuracy_std"] == pytest.approx(val.std(ddof=1))
    assert agg["val"]["accuracy_folds"] == [val[0], None, val[1]]
    assert agg["val"]["n"] == 45
    assert agg["val"]["per_class"]["car"]["f1-score_folds"][1] is None
    assert len(agg["test"]["accuracy_folds"]) == 3 and agg["test"]["n"] == 90
    table = pd.read_csv(tmp_path / "model" / "folds.csv")
    assert table["val_n"].tolist() == [20, 0, 25] and np.isnan(table["val_accuracy"][1])
    assert len(pd.read_csv(tmp_path / "model" / "predictions_val.csv")) == 45


def test_no_fold_with_val_clips(tmp_path):
    dirs = [write_fold(tmp_path, str(k), val=clips(0, 0.6, seed=k), test=clips(12, 0.7, seed=k)) for k in range(2)]
    agg = aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "model", log_to_mlflow=False)
    assert agg["val"] == {"n": 0}  # as evaluate writes an empty split
    assert read(tmp_path / "model" / "confusion_val.json") == []
    assert (tmp_path / "model" / "confusion_val.png").is_file()


def test_a_class_missing_from_a_fold(tmp_path):
    """Fold 1's model knows no rain (its labels differ): the matrices are summed label by label, and rain's
    per-class scores are those of the folds that have rain clips."""
    two = ["bird", "car"]
    dirs = [write_fold(tmp_path, "0", val=clips(20, 0.7, seed=1), test=clips(30, 0.7, seed=2)),
            write_fold(tmp_path, "1", labels=two, val=clips(20, 0.7, seed=3, labels=two),
                       test=clips(30, 0.6, seed=4, labels=two)),
            write_fold(tmp_path, "2", val=clips(20, 0.7, seed=5), test=clips(30, 0.8, seed=6))]
    agg = aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "model", log_to_mlflow=False)
    folds = [read(d / "metrics.json") for d in dirs]
    assert agg["labels"] == LABELS
    expected = np.zeros((3, 3), dtype=int)
    expected += np.asarray(folds[0]["test"]["confusion_matrix"]) + np.asarray(folds[2]["test"]["confusion_matrix"])
    expected[:2, :2] += np.asarray(folds[1]["test"]["confusion_matrix"])
    assert agg["test"]["confusion_matrix"] == expected.tolist()
    rain = agg["test"]["per_class"]["rain"]
    f1 = [folds[0]["test"]["per_class"]["rain"]["f1-score"], folds[2]["test"]["per_class"]["rain"]["f1-score"]]
    assert rain["f1-score"] == pytest.approx(np.mean(f1)) and rain["f1-score_folds"] == [f1[0], None, f1[1]]
    assert rain["support"] == expected[2].sum()
    preds = pd.read_csv(tmp_path / "model" / "predictions_test.csv")
    assert preds.loc[preds["fold"] == 1, "p_rain"].isna().all()  # fold 1 has no rain probability


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # 5 clips: a class may be missing
@pytest.mark.parametrize("field", ["params_hash", "split_hash", "model"])
def test_folds_of_other_parameters_splits_or_models_are_refused(tmp_path, field):
    other = {"params_hash": {"params_hash": "c" * 40}, "split_hash": {"split_hash": "d" * 12},
             "model": {"model": "keras_mlp"}}[field]
    dirs = [write_fold(tmp_path, "0", val=clips(5, 0.5, seed=0), test=clips(5, 0.5, seed=1), bootstrap=0),
            write_fold(tmp_path, "1", val=clips(5, 0.5, seed=2), test=clips(5, 0.5, seed=3), bootstrap=0, **other)]
    with pytest.raises(ValueError, match=f"{dirs[0] / 'metrics.json'} and {dirs[1] / 'metrics.json'}"):
        aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "model", log_to_mlflow=False)
    assert not (tmp_path / "model").exists()


def test_bad_fold_lists(tmp_path):
    with pytest.raises(ValueError, match="no fold"):
        aggregate_folds(fold_dirs=[], out_dir=tmp_path / "model", log_to_mlflow=False)
    refit = write_fold(tmp_path, "all", val=clips(5, 0.5, seed=0), test=clips(0, 0.5, seed=1), bootstrap=0)
    zero = write_fold(tmp_path, "0", val=clips(5, 0.5, seed=0), test=clips(5, 0.5, seed=1), bootstrap=0)
    with pytest.raises(ValueError, match="refit model"):
        aggregate_folds(fold_dirs=[zero, refit], out_dir=tmp_path / "model", log_to_mlflow=False)
    with pytest.raises(ValueError, match="fold ids repeat"):
        aggregate_folds(fold_dirs=[zero, zero], out_dir=tmp_path / "model", log_to_mlflow=False)


def test_summary_table_of_cross_validated_models(tmp_path):
    """``make run``'s table: ``mean ± std`` for a model over K > 1 folds, a line saying so; a model of
    one test set keeps its bootstrap interval."""
    cv = aggregate_folds(fold_dirs=three_folds(tmp_path / "cv"), out_dir=tmp_path / "cv" / "model",
                         log_to_mlflow=False)
    one = write_fold(tmp_path / "one", "0", val=clips(20, 0.7, seed=1), test=clips(40, 0.8, seed=2),
                     model="keras_mlp")
    aggregate_folds(fold_dirs=[one], out_dir=tmp_path / "one" / "model", log_to_mlflow=False)
    with pytest.raises(Exception, match="other parameters"):
        combine_metrics(metrics_files=[tmp_path / "cv" / "model" / "metrics.json"],
                        params_hashes={"random_forest": "e" * 40})
    summary = combine_metrics(metrics_files=[tmp_path / "cv" / "model" / "metrics.json",
                                             tmp_path / "one" / "model" / "metrics.json"])
    rf = summary["random_forest"]
    assert rf["n_folds"] == 3
    assert rf["test"]["accuracy_std"] == cv["test"]["accuracy_std"] and "accuracy_ci95" not in rf["test"]
    text = format_table(summary)
    lines = text.splitlines()
    for split, key in (("val", "accuracy"), ("val", "macro_f1"), ("test", "accuracy"), ("test", "macro_f1")):
        assert f"{cv[split][key]:.3f} ± {cv[split][key + '_std']:.3f}" in lines[2]
    assert "[" in lines[3]  # keras_mlp: one test set, its bootstrap interval
    assert len({len(line) for line in lines[:4]}) == 1  # header, rule and rows line up
    assert lines[4].startswith("a ± s: mean ± sample standard deviation over the 3 cross-validation folds")
    assert lines[5].startswith("[low–high]: 95 % bootstrap interval")


# ------------------------------------------------------------------ MLflow parent run


def fold_runs(uri: str, n: int) -> list[str]:
    """``n`` finished runs of one model, as ``train`` logs each fold's (tags, params, metrics)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("toy")
    ids = []
    for k in range(n):
        run = client.create_run(exp, run_name=f"random_forest fold {k}", tags={
            "model": "random_forest", "git.commit": "0" * 40, "git.dirty": "false", "split.hash": SPLIT_HASH,
            "soundstage.fold": str(k), "soundstage.pid": "12345", "soundstage.host": "elsewhere.invalid",
            "data.name": "toy"})
        client.log_param(run.info.run_id, "random_forest.n_estimators", "25")
        client.log_param(run.info.run_id, "seed", "0")
        client.log_metric(run.info.run_id, "fit_seconds", 1.0 + k)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    return ids


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_parent_run_over_the_fold_runs(tmp_path):
    import mlflow

    from soundstage.compare import runs_table

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = fold_runs(uri, 3)
    dirs = [write_fold(tmp_path / "reports", str(k), val=clips(20, 0.5 + 0.1 * k, seed=10 + k),
                       test=clips(30, 0.6 + 0.1 * k, seed=k), run_id=ids[k]) for k in range(3)]
    info = {"mode": "kfold", "k": 3, "refit": False, "hash": SPLIT_HASH}
    agg = aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "model", split_info=info, tracking_uri=uri)
    assert agg["provenance"]["bundles"] == ids
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("toy").experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if r.info.run_id not in ids]
    assert len(runs) == 4 and len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "random_forest"
    for run_id in ids:  # nested under it in the UI
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    logged = parent.data.metrics
    for split in SPLITS:
        for key in CI_METRICS:
            values = np.array([read(d / "metrics.json")[split][key] for d in dirs])
            assert logged[f"{split}_{key}"] == pytest.approx(values.mean())
            assert logged[f"{split}_{key}_std"] == pytest.approx(values.std(ddof=1))
        for label in LABELS:
            assert logged[f"{split}_f1_{label}"] == pytest.approx(agg[split]["per_class"][label]["f1-score"])
    assert not [k for k in logged if "ci95" in k]
    tags = parent.data.tags
    assert {k: tags[k] for k in ("model", "git.commit", "data.name", "split.hash", "split.mode", "soundstage.folds")} \
        == {"model": "random_forest", "git.commit": "0" * 40, "data.name": "toy", "split.hash": SPLIT_HASH,
            "split.mode": "kfold", "soundstage.folds": "3"}
    assert "soundstage.fold" not in tags and "mlflow.parentRunId" not in tags
    assert tags["soundstage.pid"] == str(os.getpid())  # its own process, not a fold's
    assert parent.data.params == {"random_forest.n_estimators": "25", "seed": "0", "split.mode": "kfold",
                                  "split.k": "3"}
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/folds.csv", "evaluation/confusion_test.json",
            "evaluation/confusion_test.png"} <= artifacts

    # compare: the parent stands for its folds, its scores as mean ± std; the folds on request.
    table = runs_table(tracking_uri=uri)
    assert len(table) == 1 and table["folds"].tolist() == [3]
    m = agg["test"]
    assert table["test_accuracy"].tolist() == [f"{m['accuracy']:.3f} ± {m['accuracy_std']:.3f}"]
    everything = runs_table(tracking_uri=uri, folds=True, sort_by="fit_seconds")
    assert len(everything) == 4
    assert everything["fold"].tolist() == ["2", "1", "0", ""]  # the parent has no fit time: last
    assert everything["folds"].tolist() == [1, 1, 1, 3]

    # Aggregated again: a new parent; the old one, now childless, is deleted (no duplicate row).
    aggregate_folds(fold_dirs=dirs, out_dir=tmp_path / "model", split_info=info, tracking_uri=uri)
    again = [r for r in client.search_runs([exp]) if r.info.run_id not in ids]
    assert len(again) == 1 and again[0].info.run_id != parent.info.run_id
    assert client.get_run(parent.info.run_id).info.lifecycle_stage == "deleted"
    assert {client.get_run(i).data.tags["mlflow.parentRunId"] for i in ids} == {again[0].info.run_id}
    assert len(runs_table(tracking_uri=uri)) == 1


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_no_parent_run_for_one_fold_or_folds_without_runs(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run_id,) = fold_runs(uri, 1)
    fold = write_fold(tmp_path / "one", "0", val=clips(10, 0.5, seed=0), test=clips(10, 0.5, seed=1), run_id=run_id)
    aggregate_folds(fold_dirs=[fold], out_dir=tmp_path / "one" / "model", tracking_uri=uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the fold's run is the model's run
    assert "mlflow.parentRunId" not in runs[0].data.tags
    # ... and it holds the model's figures
    logged = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert logged == {"evaluation/per_class_f1.csv", "evaluation/per_class_f1.png",
                      "evaluation/confusion_test_normalized.png"}, logged
    with pytest.warns(UserWarning, match=r"no MLflow parent run for random_forest: fold\(s\) 0, 1 have no run"):
        aggregate_folds(fold_dirs=three_folds(tmp_path / "none")[:2], out_dir=tmp_path / "none" / "model",
                        tracking_uri=uri)
