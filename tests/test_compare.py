"""Tests for soundstage.compare and ``soundstage compare``, against a temporary SQLite MLflow store
holding a few fake runs."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import math
import re

import pandas as pd
import pytest

from soundstage import cli
from soundstage.compare import BASE_COLUMNS, METRICS, runs_table, split_note

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

COMMON = {"seed": "42", "features.n_mels": "128"}
RUNS = [  # experiment, model, params, metrics, tags, status
    ("demo", "random_forest", {"random_forest.n_estimators": "100", "random_forest.max_depth": "None"},
     {"val_accuracy": 0.50, "val_macro_f1": 0.48, "test_accuracy": 0.60, "test_macro_f1": 0.58, "fit_seconds": 1.0},
     {"git.commit": "abcdef0123456789", "git.dirty": "false"}, "FINISHED"),
    ("demo", "random_forest", {"random_forest.n_estimators": "300", "random_forest.max_depth": "None"},
     {"val_accuracy": 0.70, "val_macro_f1": 0.69, "test_accuracy": 0.65, "test_macro_f1": 0.64, "fit_seconds": 3.0},
     {"git.commit": "abcdef0123456789", "git.dirty": "true"}, "FINISHED"),
    ("demo", "keras_mlp", {"keras_mlp.hidden": "256,128,64"},
     {"val_accuracy": 0.60, "val_macro_f1": 0.59, "test_accuracy": 0.70, "test_macro_f1": 0.69,
      "test_balanced_accuracy": 0.71}, {"git.commit": "1234567890abcdef", "git.dirty": "false"}, "FINISHED"),
    ("demo", "keras_cnn", {"keras_cnn.filters": "16,32"}, {}, {"git.commit": "unknown"}, "FINISHED"),  # not evaluated
    ("demo", "keras_cnn", {"keras_cnn.filters": "8"}, {"val_macro_f1": 0.99}, {}, "FAILED"),  # crashed: hidden
    ("gtzan", "random_forest", {"random_forest.n_estimators": "300", "random_forest.max_depth": "None"},
     {"val_accuracy": 0.55, "val_macro_f1": 0.52, "test_accuracy": 0.50, "test_macro_f1": 0.49}, {}, "FINISHED"),
]


# Runs evaluated with bootstrap intervals (evaluate logs <metric>_ci95_low/_high), beside an older one.
CI_RUNS = [
    ("demo", "random_forest", {"random_forest.n_estimators": "100"},
     {"val_accuracy": 0.70, "val_accuracy_ci95_low": 0.55, "val_accuracy_ci95_high": 0.84,
      "val_macro_f1": 0.69, "val_macro_f1_ci95_low": 0.52, "val_macro_f1_ci95_high": 0.83,
      "test_accuracy": 0.812, "test_accuracy_ci95_low": 0.7412, "test_accuracy_ci95_high": 0.8731,
      "test_macro_f1": 0.80, "test_macro_f1_ci95_low": 0.72, "test_macro_f1_ci95_high": 0.866}, {}, "FINISHED"),
    ("demo", "random_forest", {"random_forest.n_estimators": "300"},
     {"val_accuracy": 0.75, "val_accuracy_ci95_low": 0.6, "val_accuracy_ci95_high": 0.9,
      "val_macro_f1": 0.74, "val_macro_f1_ci95_low": 0.58, "val_macro_f1_ci95_high": 0.88,
      "test_accuracy": 0.83, "test_accuracy_ci95_low": 0.76, "test_accuracy_ci95_high": 0.89,
      "test_macro_f1": 0.82, "test_macro_f1_ci95_low": 0.74, "test_macro_f1_ci95_high": 0.88}, {}, "FINISHED"),
    ("demo", "random_forest", {"random_forest.n_estimators": "50"},  # evaluated before the intervals
     {"val_accuracy": 0.60, "val_macro_f1": 0.58, "test_accuracy": 0.65, "test_macro_f1": 0.64}, {}, "FINISHED"),
]

# Runs trained on two different splits (tag split.hash), beside one trained before the tag existed.
SPLIT_A, SPLIT_B = "a1b2c3d4e5f6", "0f1e2d3c4b5a"
SPLIT_RUNS = [
    ("demo", "random_forest", {"random_forest.n_estimators": "100"}, {"val_macro_f1": 0.70, "test_macro_f1": 0.68},
     {"split.hash": SPLIT_A}, "FINISHED"),
    ("demo", "random_forest", {"random_forest.n_estimators": "300"}, {"val_macro_f1": 0.80, "test_macro_f1": 0.79},
     {"split.hash": SPLIT_A}, "FINISHED"),
    ("demo", "keras_mlp", {"keras_mlp.hidden": "64"}, {"val_macro_f1": 0.75, "test_macro_f1": 0.90},
     {"split.hash": SPLIT_B}, "FINISHED"),
    ("demo", "random_forest", {"random_forest.n_estimators": "50"}, {"val_macro_f1": 0.60, "test_macro_f1": 0.61},
     {}, "FINISHED"),  # trained before split.hash was recorded
]
NOTE = (f"note: these runs used 2 different splits (split.hash {SPLIT_A[:8]}, {SPLIT_B[:8]}): "
        "their scores are not comparable across splits")


def make_store(path, runs) -> str:
    import mlflow

    uri = f"sqlite:///{path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments: dict[str, str] = {}
    for i, (exp, model, params, metrics, tags, status) in enumerate(runs):
        if exp not in experiments:
            experiments[exp] = client.create_experiment(exp)
        run = client.create_run(experiments[exp], start_time=1_700_000_000_000 + 1000 * i,
                                tags={"model": model, **tags}, run_name=model)
        for k, v in {**COMMON, **params}.items():
            client.log_param(run.info.run_id, k, v)
        for k, v in metrics.items():
            client.log_metric(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id, status=status)
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("compare"), RUNS)


@pytest.fixture(scope="module")
def ci_store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("compare_ci"), CI_RUNS)


@pytest.fixture(scope="module")
def split_store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("compare_split"), SPLIT_RUNS)


def test_all_finished_runs_sorted_by_val_f1(store):
    t = runs_table(tracking_uri=store)
    assert len(t) == 5  # the failed run is not listed
    assert list(t.columns[:5]) == ["run_id", "experiment", "model", "start", "git"]
    assert list(t.columns[5:9]) == list(METRICS)
    assert t["val_macro_f1"].tolist()[:4] == [0.69, 0.59, 0.52, 0.48]
    assert math.isnan(t["val_macro_f1"].iloc[-1])  # runs without the metric come last
    assert t["model"].iloc[-1] == "keras_cnn"
    assert t["run_id"].str.len().eq(8).all()
    assert t["git"].tolist()[:2] == ["abcdef01*", "12345678"]
    assert t["git"].iloc[-1] == "?"
    assert t["start"].iloc[0].startswith("2023-11-14")


def test_filter_by_model_and_experiment(store):
    t = runs_table(tracking_uri=store, model="random_forest")
    assert set(t["model"]) == {"random_forest"} and len(t) == 3
    t = runs_table(tracking_uri=store, experiment="demo", model="random_forest")
    assert t["experiment"].tolist() == ["demo", "demo"]
    assert runs_table(tracking_uri=store, model="svm").empty
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        runs_table(tracking_uri=store, experiment="nope")


def test_param_differences(store):
    t = runs_table(tracking_uri=store, experiment="demo", model="random_forest")
    params = [c for c in t.columns if c not in ("run_id", "experiment", "model", "start", "git", *METRICS)]
    assert params == ["random_forest.n_estimators"]  # the only param that differs
    assert t["random_forest.n_estimators"].tolist() == ["300", "100"]
    full = runs_table(tracking_uri=store, experiment="demo", model="random_forest", diff_only=False)
    assert {"seed", "features.n_mels", "random_forest.max_depth", "random_forest.n_estimators"} <= set(full.columns)
    # Across models, a param only one model has is no difference by itself (the model column says it).
    mixed = runs_table(tracking_uri=store, experiment="demo")
    assert list(mixed.columns[9:]) == ["random_forest.n_estimators"]
    everything = runs_table(tracking_uri=store)  # + gtzan's forest: n_estimators 300 there too
    assert list(everything.columns[9:]) == ["random_forest.n_estimators"]


def test_sort_by_any_metric_ascending_and_limit(store):
    t = runs_table(tracking_uri=store, sort_by="test_accuracy", ascending=True, limit=2)
    assert t["test_accuracy"].tolist() == [0.50, 0.60]
    t = runs_table(tracking_uri=store, sort_by="fit_seconds")  # not a default column: added
    assert "fit_seconds" in t.columns and t["fit_seconds"].tolist()[:2] == [3.0, 1.0]
    t = runs_table(tracking_uri=store, sort_by="test_balanced_accuracy")
    assert t["model"].iloc[0] == "keras_mlp"
    with pytest.raises(ValueError, match="no run has this metric.*val_accuracy"):
        runs_table(tracking_uri=store, sort_by="speed")


def test_empty_store(tmp_path):
    t = runs_table(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    assert t.empty and list(t.columns) == ["run_id", "experiment", "model", "start", "git", *METRICS]


def test_compare_cli(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: compare still works
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert cli.main(["compare", "--model", "random_forest", "--sort", "test_accuracy"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["run_id", "experiment", "model", "start", "git"]
    assert "random_forest.n_estimators" in out[0]
    rows = [line.split() for line in out[1:]]
    assert [r[1] for r in rows] == ["demo", "demo", "gtzan"]
    assert "0.650" in out[1] and "0.500" in out[3]  # test accuracies, 3 decimals
    assert cli.main(["compare", "--sort", "speed"]) == 1
    assert "no run has this metric" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    assert cli.main(["compare"]) == 0
    assert "no runs recorded yet" in capsys.readouterr().out


def test_interval_columns_follow_their_metric(ci_store):
    t = runs_table(tracking_uri=ci_store)
    assert list(t.columns[5:13]) == ["val_accuracy", "val_accuracy_ci95", "val_macro_f1", "val_macro_f1_ci95",
                                     "test_accuracy", "test_accuracy_ci95", "test_macro_f1", "test_macro_f1_ci95"]
    assert t["test_accuracy"].tolist() == [0.83, 0.812, 0.65]  # still numbers, sorted by val macro-F1
    assert t["test_accuracy_ci95"].tolist() == ["[0.76–0.89]", "[0.74–0.87]", ""]  # blank: no interval logged
    assert t["val_macro_f1_ci95"].tolist() == ["[0.58–0.88]", "[0.52–0.83]", ""]
    assert list(t.columns[13:]) == ["random_forest.n_estimators"]  # the raw _low/_high metrics are not shown
    t = runs_table(tracking_uri=ci_store, sort_by="test_accuracy_ci95_low")  # sortable like any metric
    assert t["test_accuracy_ci95_low"].tolist()[:2] == [0.76, 0.7412]


def test_runs_without_intervals_show_no_interval_columns(store):
    """Runs logged before the intervals existed: the table is what it always was."""
    for kwargs in ({}, {"sort_by": "test_balanced_accuracy"}):
        t = runs_table(tracking_uri=store, **kwargs)
        assert not [c for c in t.columns if "ci95" in c]


def test_compare_cli_prints_intervals(ci_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ci_store)
    assert cli.main(["compare", "--sort", "test_accuracy"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[5:9] == ["val_accuracy", "val_accuracy_ci95", "val_macro_f1", "val_macro_f1_ci95"]
    assert re.search(r"0\.812 +\[0\.74–0\.87\] +0\.800 +\[0\.72–0\.87\]", out[2]) and "0.650" in out[3]
    assert "[" not in out[3]  # the old run: blank interval cells


def test_differing_params_rules():
    from soundstage.compare import _differing

    params = pd.DataFrame({
        "seed": ["1", "1", "2"],                 # differs across models: shown
        "features.n_mels": ["128", "128", "128"],  # same everywhere: hidden
        "random_forest.n_estimators": ["300", "300", None],  # only the forests have it, same value: hidden
        "keras_mlp.hidden": [None, None, "64"],  # one MLP run: hidden
        "augment.copies": ["1", None, None],     # set in one forest run, not in the other: shown
    })
    model = pd.Series(["random_forest", "random_forest", "keras_mlp"])
    assert _differing(params, model).to_dict() == {
        "seed": True, "features.n_mels": False, "random_forest.n_estimators": False, "keras_mlp.hidden": False,
        "augment.copies": True}


def test_split_column_and_note_for_runs_on_two_splits(split_store):
    t = runs_table(tracking_uri=split_store)
    assert list(t.columns[:7]) == [*BASE_COLUMNS, "split", METRICS[0]]
    # Sorted by val macro-F1; the run of before the tag: a blank cell.
    assert t["split"].tolist() == [SPLIT_A[:8], SPLIT_B[:8], SPLIT_A[:8], ""]
    assert split_note(t) == NOTE


def test_no_split_note_for_one_split_or_untagged_runs(split_store, store):
    t = runs_table(tracking_uri=split_store, model="random_forest")
    assert t["split"].tolist() == [SPLIT_A[:8], SPLIT_A[:8], ""]
    assert split_note(t) is None  # the untagged run is no split of its own
    old = runs_table(tracking_uri=store)  # no run has the tag: no column, as before
    assert "split" not in old.columns and split_note(old) is None
    assert split_note(runs_table(tracking_uri=split_store, limit=1)) is None  # the listed runs only


def test_split_note_counts_distinct_hashes_in_table_order():
    table = pd.DataFrame({"split": ["b2", "", "a1", "b2", None, "c3"]})
    assert split_note(table) == ("note: these runs used 3 different splits (split.hash b2, a1, c3): "
                                 "their scores are not comparable across splits")
    assert split_note(pd.DataFrame({"split": ["a1", "", "a1"]})) is None
    assert split_note(pd.DataFrame(columns=["run_id"])) is None


def test_compare_cli_prints_the_split_note(split_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", split_store)
    assert cli.main(["compare"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[5] == "split" and SPLIT_B[:8] in out[2]
    assert out[-1] == NOTE and len(out) == 6  # header, 4 runs, the note
    assert cli.main(["compare", "--model", "random_forest"]) == 0
    assert "note:" not in capsys.readouterr().out


# ------------------------------------------------------------------ cross-validated runs

# Runs of cross-validated models (evaluate --aggregate: a parent run with the mean and std over K folds,
# the folds' runs nested under it), beside a run of one test set and one never evaluated.
CV_PARENTS = [
    ("demo", "random_forest", {"random_forest.n_estimators": "100", "split.k": "5"},
     {"val_accuracy": 0.70, "val_accuracy_std": 0.04, "val_macro_f1": 0.68, "val_macro_f1_std": 0.031,
      "test_accuracy": 0.812, "test_accuracy_std": 0.031, "test_macro_f1": 0.80, "test_macro_f1_std": 0.05},
     {"soundstage.folds": "5", "split.hash": SPLIT_A}, "FINISHED"),
    ("demo", "keras_mlp", {"keras_mlp.hidden": "64", "split.k": "5"},
     {"val_accuracy": 0.76, "val_accuracy_std": 0.01, "val_macro_f1": 0.74, "val_macro_f1_std": 0.02,
      "test_accuracy": 0.79, "test_accuracy_std": 0.02, "test_macro_f1": 0.78, "test_macro_f1_std": 0.03},
     {"soundstage.folds": "5", "split.hash": SPLIT_A}, "FINISHED"),
    ("demo", "random_forest", {"random_forest.n_estimators": "300"},
     {"val_accuracy": 0.72, "val_macro_f1": 0.71, "test_accuracy": 0.75, "test_accuracy_ci95_low": 0.70,
      "test_accuracy_ci95_high": 0.80, "test_macro_f1": 0.74}, {"split.hash": SPLIT_A}, "FINISHED"),
    ("demo", "keras_cnn", {"keras_cnn.filters": "8"}, {}, {}, "FINISHED"),  # not evaluated
]
#: Folds of the first parent: better val scores than any parent, so hiding them is visible.
CV_FOLDS = [{"val_accuracy": 0.96, "val_macro_f1": 0.95, "test_accuracy": 0.80, "test_macro_f1": 0.79,
             "test_accuracy_ci95_low": 0.7, "test_accuracy_ci95_high": 0.9},
            {"val_accuracy": 0.94, "val_macro_f1": 0.93, "test_accuracy": 0.82, "test_macro_f1": 0.81,
             "test_accuracy_ci95_low": 0.72, "test_accuracy_ci95_high": 0.92}]


@pytest.fixture(scope="module")
def cv_store(tmp_path_factory) -> str:
    import mlflow

    uri = make_store(tmp_path_factory.mktemp("compare_cv"), CV_PARENTS)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("demo").experiment_id
    parent = next(r for r in client.search_runs([exp]) if r.data.tags.get("soundstage.folds")
                  and r.data.tags["model"] == "random_forest")
    for k, metrics in enumerate(CV_FOLDS):
        run = client.create_run(exp, start_time=1_700_000_100_000 + k, run_name=f"random_forest fold {k}",
                                tags={"model": "random_forest", "split.hash": SPLIT_A, "soundstage.fold": str(k),
                                      "mlflow.parentRunId": parent.info.run_id})
        for key, value in {**COMMON, "random_forest.n_estimators": "100"}.items():
            client.log_param(run.info.run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
    # The refit model (train.refit: every clip, never scored): not nested, hidden with the folds.
    refit = client.create_run(exp, start_time=1_700_000_200_000, run_name="random_forest fold all",
                              tags={"model": "random_forest", "split.hash": SPLIT_A, "soundstage.fold": "all"})
    client.set_terminated(refit.info.run_id, "FINISHED")
    return uri


def test_cross_validated_runs_show_mean_and_std_and_hide_their_folds(cv_store):
    t = runs_table(tracking_uri=cv_store)
    assert len(t) == 4  # the parents, the run of one test set, the unevaluated run; not the folds
    assert list(t.columns[:8]) == [*BASE_COLUMNS, "split", "folds", "val_accuracy"]
    assert t["model"].tolist() == ["keras_mlp", "random_forest", "random_forest", "keras_cnn"]
    assert t["folds"].tolist() == [5, 1, 5, 1]
    assert t["val_macro_f1"].tolist() == ["0.740 ± 0.020", "0.710", "0.680 ± 0.031", ""]
    assert t["test_accuracy"].tolist() == ["0.790 ± 0.020", "0.750", "0.812 ± 0.031", ""]
    assert t["test_accuracy_ci95"].tolist() == ["", "[0.70–0.80]", "", ""]
    assert "fold" not in t.columns
    assert split_note(t) is None  # the parents' split.hash is the folds table's: one split
    # Sorted by the numeric means, not the text: the run without the metric stays last either way.
    up = runs_table(tracking_uri=cv_store, ascending=True)
    assert up["val_macro_f1"].tolist() == ["0.680 ± 0.031", "0.710", "0.740 ± 0.020", ""]
    by_test = runs_table(tracking_uri=cv_store, sort_by="test_accuracy")
    assert by_test["test_accuracy"].tolist()[:3] == ["0.812 ± 0.031", "0.790 ± 0.020", "0.750"]
    by_std = runs_table(tracking_uri=cv_store, sort_by="test_accuracy_std", ascending=True)
    assert by_std["test_accuracy_std"].tolist()[:2] == [0.02, 0.031]  # a std is a metric like any other


def test_folds_on_request(cv_store):
    t = runs_table(tracking_uri=cv_store, folds=True)
    assert t["fold"].tolist() == ["0", "1", "", "", "", "all", ""]  # the folds' val F1 is the best
    assert t["folds"].tolist() == [1, 1, 5, 1, 5, 1, 1]
    assert t["val_macro_f1"].tolist()[:3] == ["0.950", "0.930", "0.740 ± 0.020"]
    assert t["test_accuracy_ci95"].tolist()[:2] == ["[0.70–0.90]", "[0.72–0.92]"]
    assert runs_table(tracking_uri=cv_store, model="random_forest", folds=True)["fold"].tolist() == [
        "0", "1", "", "", "all"]


def test_compare_cli_prints_mean_and_std(cv_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cv_store)
    assert cli.main(["compare"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[5:8] == ["split", "folds", "val_accuracy"]
    assert re.search(r"0\.760 ± 0\.010 +0\.740 ± 0\.020 +0\.790 ± 0\.020", out[1])
    assert len(out) == 5  # header and 4 runs: no fold, no note


def test_runs_table_leaves_the_process_tracking_uri_as_it_was(cv_store, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri("sqlite:////nonexistent/elsewhere.db")
    try:
        assert len(runs_table(tracking_uri=cv_store)) == 4
        assert mlflow.get_tracking_uri() == "sqlite:////nonexistent/elsewhere.db"
    finally:
        mlflow.set_tracking_uri(None)


def test_a_model_name_with_a_quote_is_refused(cv_store):
    with pytest.raises(ValueError, match="no quote"):
        runs_table(tracking_uri=cv_store, model="x' or '1'='1")
