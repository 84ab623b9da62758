"""Tests for soundstage.evaluate: clip-level aggregation of segments, metrics and their bootstrap
intervals, report files and MLflow logging (temporary SQLite store), on a small synthetic features
table, scored by its own split column or by a fold of a folds table. (The reports of several folds
put together: tests/test_aggregate.py.)"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from soundstage import split as split_module
from soundstage.bundle import Bundle, load_bundle, save_bundle
from soundstage.cache import key_of
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
from soundstage.tracking import start_run
from soundstage.train import fit

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


def folds_of(table: pd.DataFrame) -> pd.DataFrame:
    """A folds table (``data/split/folds.csv``) of two folds over ``table``'s rows: fold ``"0"`` is the
    table's own split, fold ``"1"`` the same with val and test swapped."""
    base = table[["id", "clip_id", "label", "group", "split"]]
    swapped = base.assign(split=base["split"].replace({"val": "test", "test": "val"}))
    return pd.concat([base.assign(fold="0"), swapped.assign(fold="1")], ignore_index=True)[
        ["id", "clip_id", "label", "group", "fold", "split"]]


def contract_read_folds(path) -> pd.DataFrame:
    """:func:`soundstage.split.read_folds` as its contract says (for a split module without it yet)."""
    return pd.read_csv(path, dtype={"id": str, "clip_id": str, "group": str, "fold": str}, keep_default_na=False)


def contract_rows_of_fold(table: pd.DataFrame, folds: pd.DataFrame, fold: str) -> pd.DataFrame:
    """:func:`soundstage.split.rows_of_fold` as its contract says: ``table``'s rows assigned in ``fold``,
    in table order, with their ``split``."""
    chosen = folds[folds["fold"].astype(str) == str(fold)]
    if chosen.empty:
        raise ValueError(f"split: no fold {fold!r} in the folds table")
    return table.merge(chosen[["id", "split"]].astype(str), on="id", how="inner")


@pytest.fixture(scope="module", autouse=True)
def fold_functions():
    """The split module's fold functions, or their contract where the module has none yet."""
    with pytest.MonkeyPatch.context() as mp:
        for name, contract in (("read_folds", contract_read_folds), ("rows_of_fold", contract_rows_of_fold)):
            if not hasattr(split_module, name):
                mp.setattr(split_module, name, contract, raising=False)
        yield


def make_bundle(table: pd.DataFrame, out_dir, *, uri: str, split_hash: str):
    """An RF bundle fitted on ``table``'s train rows, with the metadata and MLflow run ``train`` gives
    one (run tagged ``split.hash``; bundle ``training.split_hash``, ``params_hash``, ``mlflow``)."""
    fitted, meta, _ = fit(model="random_forest", table=table, params=RF_PARAMS, seed=0)
    with start_run(experiment="toy", run_name="random_forest", uri=uri,
                   tags={"model": "random_forest", "split.hash": split_hash}) as run:
        meta["training"]["split_hash"] = split_hash
        meta.update({"params": RF_PARAMS, "seed": 0, "process": {}, "features": {},
                     "mlflow": {"tracking_uri": uri, "experiment": "toy", "run_id": run.info.run_id},
                     "tags": {"git.commit": "0" * 40, "git.dirty": "false"},
                     "params_hash": key_of({"random_forest.n_estimators": 25})})
        return save_bundle(out_dir, model=fitted, meta=meta)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An RF bundle trained on a segmented table, logged to a temporary MLflow store; the same model
    trained on fold 0 of a folds table (``folds.csv``; the features table then has no split column)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    table = make_table(clips_per_split={"train": 6, "val": 3, "test": 4})
    table.to_parquet(tmp / "table.parquet")
    table.drop(columns="split").to_parquet(tmp / "features.parquet")
    folds = folds_of(table)
    folds.to_csv(tmp / "folds.csv", index=False)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    bundle = make_bundle(table, tmp / "models" / "random_forest", uri=uri, split_hash=assignment_hash(table))
    fold0 = make_bundle(table, tmp / "models" / "random_forest_fold0", uri=uri, split_hash=assignment_hash(folds))
    return {"tmp": tmp, "table": table, "folds": folds, "uri": uri, "bundle_dir": bundle.directory,
            "fold_bundle_dir": fold0.directory}


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


def test_evaluate_scores_the_rows_of_a_fold(trained, tmp_path):
    """With the folds table, the scored clips are those its fold assigns to val and test (the features
    table has no split column); provenance names the fold and the whole folds table's hash."""
    import warnings

    tmp, folds = trained["tmp"], trained["folds"]
    split_hash = assignment_hash(folds)
    results = {}
    for fold in ("0", "1"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[fold] = evaluate(bundle_dir=trained["fold_bundle_dir"], table_path=tmp / "features.parquet",
                                     out_dir=tmp_path / fold, folds_path=tmp / "folds.csv", fold=fold,
                                     log_to_mlflow=False, bootstrap=0)
        assert not [w for w in caught if "split" in str(w.message)]  # the hash the bundle was trained on
        assert results[fold]["provenance"]["fold"] == fold
        assert results[fold]["provenance"]["split_hash"] == split_hash
        for split in ("val", "test"):
            preds = pd.read_csv(tmp_path / fold / f"predictions_{split}.csv")
            chosen = folds[(folds["fold"] == fold) & (folds["split"] == split)]
            assert preds["clip_id"].tolist() == chosen["clip_id"].drop_duplicates().tolist()  # table order
    # Fold 1 swaps val and test: the same clips, the same model, so the same scores the other way round.
    for a, b in (("val", "test"), ("test", "val")):
        assert results["1"][a] == results["0"][b]
    # Scored by its own split column, the table gives fold 0's numbers.
    legacy = evaluate(bundle_dir=trained["fold_bundle_dir"], table_path=tmp / "table.parquet",
                      out_dir=tmp_path / "legacy", log_to_mlflow=False, bootstrap=0)
    assert legacy["provenance"]["fold"] is None
    assert {s: legacy[s] for s in ("val", "test")} == {s: results["0"][s] for s in ("val", "test")}


def test_evaluate_warns_about_folds_of_another_split(trained, tmp_path):
    tmp, folds = trained["tmp"], trained["folds"]
    moved = folds.copy()
    moved.loc[(moved["clip_id"] == "bird/train00") & (moved["fold"] == "0"), "split"] = "test"
    moved.to_csv(tmp_path / "folds.csv", index=False)
    trained_on = assignment_hash(folds)
    with pytest.warns(UserWarning, match=rf"folds\.csv assigns clips to splits differently \(split\.hash "
                                         rf"{assignment_hash(moved)}\) from the table random_forest was trained on "
                                         rf"\({trained_on}\)"):
        metrics = evaluate(bundle_dir=trained["fold_bundle_dir"], table_path=tmp / "features.parquet",
                           out_dir=tmp_path / "out", folds_path=tmp_path / "folds.csv", fold="0",
                           log_to_mlflow=False, bootstrap=0)
    assert metrics["provenance"]["split_hash"] == assignment_hash(moved) != trained_on
    assert metrics["test"]["n"] == 4 * len(LABELS) + 1  # the moved clip is scored


def test_evaluate_fold_comes_from_the_bundle(trained, tmp_path, monkeypatch):
    """Without ``fold``, the one the bundle was trained on; another one is refused (its test clips were
    training clips), as are a fold without folds table, an unknown fold and a table without splits."""
    import soundstage.evaluate as evaluate_module

    def with_fold(directory):
        bundle = load_bundle(directory)
        return Bundle(bundle.directory, {**bundle.meta, "training": {**bundle.meta["training"], "fold": "1"}})

    tmp = trained["tmp"]
    args = {"bundle_dir": trained["fold_bundle_dir"], "table_path": tmp / "features.parquet",
            "log_to_mlflow": False, "bootstrap": 0}
    with pytest.raises(ValueError, match="records no fold"):
        evaluate(**args, out_dir=tmp_path / "none", folds_path=tmp / "folds.csv")
    with pytest.raises(ValueError, match="7"):  # rows_of_fold: no such fold
        evaluate(**args, out_dir=tmp_path / "seven", folds_path=tmp / "folds.csv", fold="7")
    with pytest.raises(ValueError, match="without the folds table"):
        evaluate(**args, out_dir=tmp_path / "nofolds", fold="0")
    with pytest.raises(ValueError, match="has no split column"):
        evaluate(**args, out_dir=tmp_path / "nosplit")
    monkeypatch.setattr(evaluate_module, "load_bundle", with_fold)
    metrics = evaluate(**args, out_dir=tmp_path / "own", folds_path=tmp / "folds.csv")
    assert metrics["provenance"]["fold"] == "1"
    preds = pd.read_csv(tmp_path / "own" / "predictions_test.csv")
    assert preds["clip_id"].str.contains("/val").all()  # fold 1 tests on the table's val clips
    with pytest.raises(ValueError, match="trained on fold 1, not 0"):
        evaluate(**args, out_dir=tmp_path / "other", folds_path=tmp / "folds.csv", fold="0")


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
