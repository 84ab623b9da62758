"""Tests for soundstage.evaluate: clip-level aggregation of segments, metrics and their bootstrap
intervals, report files and MLflow logging (temporary SQLite store), on a small synthetic features
table."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from soundstage.bundle import load_bundle
from soundstage.evaluate import (
    CI_METRICS,
    bootstrap_ci,
    clip_groups,
    clip_predictions,
    combine_metrics,
    evaluate,
    format_table,
    predict_rows,
    score,
)
from soundstage.split import assignment_hash
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
    features are centred on k (noisy enough that some segments are misclassified); two clips of a
    class and split share a group."""
    r = np.random.default_rng(seed)
    rows = []
    for split, n in clips_per_split.items():
        for k, label in enumerate(LABELS):
            for i in range(n):
                clip = f"{label}/{split}{i:02d}"
                for s in range(segments):
                    feats = r.normal(loc=k, scale=0.9, size=N_FEATURES).astype(np.float32)
                    rows.append({"id": f"{clip}__s{s}", "clip_id": clip, "label": label,
                                 "group": f"{label}.{split}{i // 2}", "split": split,
                                 **{f"feat_mean_{j}": feats[j] for j in range(N_FEATURES)}})
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
        assert 0.5 < m["accuracy"] <= 1.0
        assert np.asarray(m["confusion_matrix"]).sum() == m["n"]
        preds = pd.read_csv(out / f"predictions_{split}.csv")
        # Every key score() writes, unchanged; each interval right after its metric, around it.
        plain = score(preds["label"].to_numpy(), preds["predicted"].to_numpy(), LABELS)
        assert {k: v for k, v in m.items() if k in plain} == plain
        assert set(m) == set(plain) | {f"{k}_ci95" for k in CI_METRICS} | {"bootstrap"}
        keys = list(m)
        for key in CI_METRICS:
            assert keys.index(f"{key}_ci95") == keys.index(key) + 1
            low, high = m[f"{key}_ci95"]
            assert 0.0 <= low <= m[key] <= high <= 1.0, (split, key)
        # Two clips of a class per group: the groups, not the clips, are resampled.
        assert m["bootstrap"] == {"resamples": 1000, "unit": "group", "n_units": len(LABELS) * ((n_clips + 1) // 2)}
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
        for key in CI_METRICS:
            assert [logged[f"{split}_{key}_ci95_low"], logged[f"{split}_{key}_ci95_high"]] == pytest.approx(
                metrics[split][f"{key}_ci95"])
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
    keys = ("accuracy", "accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "macro_f1", "macro_f1_ci95",
            "bootstrap")
    assert summary == {"random_forest": {"val": {}, "test": {k: metrics["test"][k] for k in keys}}}
    text = format_table(summary)
    assert "random_forest" in text and "n/a" in text and f"{metrics['test']['accuracy']:.3f}" in text
    # The test scores with their interval, and a line saying what the brackets are.
    for key in ("accuracy", "macro_f1"):
        low, high = metrics["test"][f"{key}_ci95"]
        assert f"{metrics['test'][key]:.3f} [{low:.2f}–{high:.2f}]" in text
    assert "95 % bootstrap interval over the 3 test groups (1000 resamples)" in text.splitlines()[-1]
    lines = text.splitlines()
    assert len({len(line) for line in lines[:3]}) == 1  # header, rule and row line up


def test_evaluate_records_the_split_and_warns_about_another(trained, tmp_path):
    """metrics.json names the split it scored; a table whose split is not the one trained on is warned about."""
    import warnings

    table = trained["table"]
    trained_on = load_bundle(trained["bundle_dir"]).meta["training"]["split_hash"]
    assert trained_on == assignment_hash(table)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate(bundle_dir=trained["bundle_dir"], table_path=trained["tmp"] / "table.parquet",
                           out_dir=tmp_path / "same", log_to_mlflow=False, bootstrap=0)
    assert not [w for w in caught if "split" in str(w.message)]
    assert metrics["provenance"]["split_hash"] == trained_on
    assert json.loads((tmp_path / "same" / "metrics.json").read_text())["provenance"]["split_hash"] == trained_on
    # One train clip moved to test: the model has seen a test clip.
    moved = table.assign(split=table["split"].where(table["clip_id"] != "bird/train00", "test"))
    moved.to_parquet(tmp_path / "moved.parquet")
    with pytest.warns(UserWarning, match=rf"split\.hash {assignment_hash(moved)}\) from the table random_forest "
                                         rf"was trained on \({trained_on}\)"):
        metrics = evaluate(bundle_dir=trained["bundle_dir"], table_path=tmp_path / "moved.parquet",
                           out_dir=tmp_path / "moved", log_to_mlflow=False, bootstrap=0)
    assert metrics["provenance"]["split_hash"] == assignment_hash(moved) != trained_on


def test_format_table_without_intervals():
    """Metrics written before the intervals (or with evaluate.bootstrap: 0) print as they always did."""
    summary = {"random_forest": {"val": {"accuracy": 0.5, "macro_f1": 0.25}, "test": {"accuracy": 0.8125,
                                                                                     "macro_f1": 0.75}},
               "keras_mlp": {"val": {}, "test": {}}}
    text = format_table(summary)
    assert text.splitlines() == [
        "model             val acc   val F1  test acc  test F1",
        "-----------------------------------------------------",
        "random_forest       0.500    0.250     0.812    0.750",
        "keras_mlp             n/a      n/a       n/a      n/a",
    ]


def test_evaluate_without_bootstrap_and_seeds(trained, tmp_path):
    """bootstrap 0: metrics.json as before the intervals; otherwise they are bootstrap_ci's over the
    table's groups with the given seed, the same bytes every time."""
    tmp, table = trained["tmp"], trained["table"]
    runs = {}
    for name, bootstrap, seed in (("off", 0, 7), ("a", 200, 7), ("b", 200, 7), ("c", 200, 8)):
        runs[name] = evaluate(bundle_dir=trained["bundle_dir"], table_path=tmp / "table.parquet",
                              out_dir=tmp_path / name, log_to_mlflow=False, bootstrap=bootstrap, seed=seed)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    group_of = table.groupby("clip_id")["group"].first()
    for split in ("val", "test"):
        off = runs["off"][split]
        assert not any(k.endswith("_ci95") for k in off) and "bootstrap" not in off
        assert off == {k: v for k, v in runs["a"][split].items() if k in off}  # same scores
        preds = pd.read_csv(tmp_path / "off" / f"predictions_{split}.csv")
        for name, seed in (("a", 7), ("c", 8)):
            expected = bootstrap_ci(preds["label"], preds["predicted"], LABELS, group_of.loc[preds["clip_id"]],
                                    resamples=200, seed=seed)
            assert {k: v for k, v in runs[name][split].items() if k in expected} == expected


# ------------------------------------------------------------------ bootstrap intervals


def predictions(n: int, accuracy: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips of balanced random truth; a share ``accuracy`` predicted right, the rest a wrong class."""
    r = np.random.default_rng(seed)
    truth = np.asarray(LABELS)[r.integers(0, len(LABELS), n)]
    wrong = np.asarray(LABELS)[(np.searchsorted(LABELS, truth) + r.integers(1, len(LABELS), n)) % len(LABELS)]
    return truth, np.where(r.random(n) < accuracy, truth, wrong)


def width(ci: dict, key: str = "accuracy") -> float:
    return ci[f"{key}_ci95"][1] - ci[f"{key}_ci95"][0]


def test_bootstrap_interval_brackets_the_score_and_shrinks_with_more_clips():
    widths = []
    for n in (60, 600):
        truth, pred = predictions(n, 0.8)
        point = score(truth, pred, LABELS)
        ci = bootstrap_ci(truth, pred, LABELS, resamples=1000, seed=0)
        assert set(ci) == {f"{k}_ci95" for k in CI_METRICS} | {"bootstrap"}
        assert ci["bootstrap"] == {"resamples": 1000, "unit": "clip", "n_units": n}
        for key in CI_METRICS:
            low, high = ci[f"{key}_ci95"]
            assert low < point[key] < high, (n, key)
        # About 1.96 standard errors either side of the accuracy p: sqrt(p (1 - p) / n).
        p = point["accuracy"]
        assert width(ci) == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.2)
        widths.append(width(ci))
    assert widths[1] < 0.45 * widths[0]  # 10 times the clips: about a third of the width


def test_group_bootstrap_is_wider_when_groups_are_correlated():
    """20 speakers of 10 clips, each speaker's clips all right or all wrong: 20 independent
    observations, not 200."""
    truth, _ = predictions(200, 1.0, seed=1)
    groups = np.repeat([f"spk{g:02d}" for g in range(20)], 10)
    right = np.isin(groups, [f"spk{g:02d}" for g in range(14)])  # 14 of 20 speakers right: accuracy 0.7
    pred = np.where(right, truth, np.asarray(LABELS)[(np.searchsorted(LABELS, truth) + 1) % len(LABELS)])
    assert score(truth, pred, LABELS)["accuracy"] == pytest.approx(0.7)
    by_clip = bootstrap_ci(truth, pred, LABELS, resamples=1000, seed=0)
    by_group = bootstrap_ci(truth, pred, LABELS, groups, resamples=1000, seed=0)
    assert by_group["bootstrap"] == {"resamples": 1000, "unit": "group", "n_units": 20}
    assert by_clip["bootstrap"]["unit"] == "clip"
    assert width(by_group) > 2 * width(by_clip)  # sqrt(10) in theory
    assert width(by_group) == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 20), rel=0.2)
    # One clip per group is the clip bootstrap, draw for draw.
    assert bootstrap_ci(truth, pred, LABELS, [f"c{i}" for i in range(200)], resamples=1000, seed=0) == by_clip


def test_bootstrap_is_seeded():
    truth, pred = predictions(100, 0.7)
    groups = np.arange(100) // 4
    first = bootstrap_ci(truth, pred, LABELS, groups, resamples=500, seed=3)
    assert bootstrap_ci(list(truth), list(pred), LABELS, list(groups), resamples=500, seed=3) == first
    other = bootstrap_ci(truth, pred, LABELS, groups, resamples=500, seed=4)
    assert other != first and other["bootstrap"] == first["bootstrap"]


def test_bootstrap_scores_each_resample_like_score():
    """With one group, every resample is the whole set: each interval shrinks to score()'s value,
    also for a class absent from the truth, one never predicted and a label the model does not know."""
    truth = ["bird", "bird", "bird", "car", "car", "drum", "bird"]
    pred = ["bird", "car", "bird", "car", "bird", "car", "car"]  # no rain anywhere; drum is unknown
    point = score(truth, pred, LABELS)
    ci = bootstrap_ci(truth, pred, LABELS, ["one"] * len(truth), resamples=50, seed=0)
    assert ci["bootstrap"] == {"resamples": 50, "unit": "group", "n_units": 1}
    for key in CI_METRICS:
        assert ci[f"{key}_ci95"] == pytest.approx([point[key], point[key]], abs=1e-12), key


def test_bootstrap_off_empty_and_bad_input():
    truth, pred = predictions(10, 0.5)
    assert bootstrap_ci(truth, pred, LABELS, resamples=0, seed=0) == {}
    assert bootstrap_ci([], [], LABELS, resamples=100, seed=0) == {}
    with pytest.raises(ValueError, match="resamples must be >= 0"):
        bootstrap_ci(truth, pred, LABELS, resamples=-1, seed=0)
    with pytest.raises(ValueError, match="one entry per clip"):
        bootstrap_ci(truth, pred[:-1], LABELS, resamples=10, seed=0)
    with pytest.raises(ValueError, match="one entry per clip"):
        bootstrap_ci(truth, pred, LABELS, ["g"] * 9, resamples=10, seed=0)


def test_clip_groups():
    rows = pd.DataFrame({"clip_id": ["a", "a", "b", "c", "d"], "group": ["s1", "s1", "s1", None, " "]})
    clips = pd.Series(["a", "b", "c", "d"])
    assert clip_groups(rows, clips).tolist() == ["s1", "s1", "c", "d"]  # no group: the clip is its own
    assert clip_groups(rows.drop(columns="group"), clips) is None


def test_bootstrap_does_not_count_a_class_a_resample_lacks() -> None:
    """Groups of one class each (artists of one genre): a perfect classifier scores 1 in every resample,
    though resamples drop whole classes; one group per class still gives a real interval."""
    from soundstage.evaluate import bootstrap_ci

    labels = ["a", "b", "c"]
    truth = [lab for lab in labels for _ in range(4)]  # two groups of two clips per class
    groups = [f"{lab}{i // 2}" for lab in labels for i in range(4)]
    out = bootstrap_ci(truth, truth, labels, groups, resamples=500, seed=0)
    for key in ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert out[f"{key}_ci95"] == [1.0, 1.0], key
    assert out["bootstrap"] == {"resamples": 500, "unit": "group", "n_units": 6}
    # One group per class, a wrong clip in one group: the interval is not a point (no false certainty).
    truth, predicted = ["a", "a", "b", "b", "c", "c"], ["a", "b", "b", "b", "c", "c"]
    out = bootstrap_ci(truth, predicted, labels, ["a0", "a0", "b0", "b0", "c0", "c0"], resamples=500, seed=0)
    low, high = out["accuracy_ci95"]
    assert low < high
