"""End to end: K-fold cross-validation through Snakemake and DVC, in a fresh copy of the project.

Features are computed once whatever K; statistics, training and evaluation run per fold; each
model's aggregate is the mean/std of its folds; MLflow nests the fold runs under a parent run; a
change to one model's parameter re-runs only that model's folds, in Snakemake and in DVC; a
change of K re-runs what depends on the split, not the features.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_project, run, tiny_params

from soundstage.store import load_matrices

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("folds")]

SNAKEMAKE = ["snakemake", "--workflow-profile", "workflow/profiles/default", "--cores", "2"]
K = 3
MODELS = ["random_forest", "keras_mlp"]
METRICS = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1")


def planned(output: str) -> Counter:
    """Rules of the jobs a Snakemake run lists."""
    return Counter(m.group(2) for m in re.finditer(r"^(local)?(?:rule|checkpoint) (\w+):", output, re.M))


def set_params(root: Path, **changes: object) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in changes.items():
        section, name = key.split(".")
        params[section][name] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, str]:
    params = tiny_params()
    params["split"].update(mode="kfold", k=K)
    params["train"]["refit"] = True
    params["keras_mlp"].update(epochs=15, patience=4)
    root = make_project(tmp_path_factory.mktemp("folds") / "soundstage", params)
    proc = run(SNAKEMAKE, root)
    return root, proc.stdout + proc.stderr


def test_features_once_and_every_fold_trained(project):
    root, log = project
    jobs = planned(log)
    folds = [str(k) for k in range(K)]
    assert jobs["features"] == 2 and jobs["features_table"] == 1, jobs  # one job per shard, not per fold
    assert jobs["stats"] == K + 1 and jobs["train"] == len(MODELS) * (K + 1), jobs  # + the refit ("all")
    assert jobs["evaluate"] == len(MODELS) * K and jobs["aggregate"] == len(MODELS), jobs
    table = pd.read_parquet(root / "data/features/table.parquet")
    # One log-mel store per shard, holding every clip once.
    stores = sorted((root / "data/features/logmel").rglob("*.npy"))
    assert [p.name for p in stores] == ["000.npy", "001.npy"] and len(table) == 36
    assert sum(np.load(p, mmap_mode="r").shape[0] for p in stores) == table["frames"].sum()
    for model in MODELS:
        for fold in [*folds, "all"]:
            assert (root / f"models/{model}/folds/{fold}/bundle.json").is_file(), (model, fold)
        for fold in folds:
            assert (root / f"reports/evaluate/{model}/folds/{fold}/metrics.json").is_file()
        assert not (root / f"reports/evaluate/{model}/folds/all").exists()  # the refit model has no test clips


def test_folds_cover_every_clip_once_and_keep_groups_apart(project):
    root, _ = project
    folds = pd.read_csv(root / "data/split/folds.csv", dtype=str)
    info = json.loads((root / "data/split/folds.json").read_text())
    assert info["k"] == K and [f["fold"] for f in info["folds"]] == [str(k) for k in range(K)]
    test = folds[folds["split"] == "test"]
    assert Counter(test["id"]) == Counter(pd.read_parquet(root / "data/features/table.parquet")["id"])
    assert test.groupby("group")["fold"].nunique().max() == 1  # an artist is tested in one fold only
    for fold, rows in folds[folds["fold"] != "all"].groupby("fold"):
        assert rows.groupby("group")["split"].nunique().max() == 1, fold  # nor straddles train/val/test
        assert set(rows["split"]) == {"train", "val", "test"}, fold
    refit = folds[folds["fold"] == "all"]
    assert set(refit["split"]) == {"train", "val"} and set(refit["id"]) == set(test["id"])


def test_fold_statistics_equal_the_in_memory_computation(project):
    root, _ = project
    folds = pd.read_csv(root / "data/split/folds.csv", dtype=str)
    for fold in [*(str(k) for k in range(K)), "all"]:
        ids = folds.loc[(folds["fold"] == fold) & (folds["split"] == "train"), "id"]
        table = pd.read_parquet(root / "data/features/table.parquet")
        rows = table[table["id"].isin(ids)]
        assert len(rows) == len(ids)
        frames = np.concatenate(load_matrices(rows, root / "data/features/logmel"), axis=1)
        stats = np.load(root / f"data/stats/{fold}/logmel.npz")
        assert int(stats["count"]) == frames.shape[1], fold
        np.testing.assert_allclose(stats["mean"], frames.astype(np.float64).mean(axis=1), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats["std"], frames.astype(np.float64).std(axis=1), rtol=1e-7, atol=1e-7)


def test_aggregate_is_the_mean_and_std_of_the_fold_files(project):
    root, _ = project
    summary = json.loads((root / "reports/metrics.json").read_text())
    for model in MODELS:
        agg = json.loads((root / f"reports/evaluate/{model}/metrics.json").read_text())
        per_fold = [json.loads((root / f"reports/evaluate/{model}/folds/{k}/metrics.json").read_text())
                    for k in range(K)]
        assert agg["n_folds"] == K
        for split in ("val", "test"):
            for metric in METRICS:
                values = np.array([m[split][metric] for m in per_fold])
                assert agg[split][metric] == pytest.approx(values.mean()), (model, split, metric)
                assert agg[split][f"{metric}_std"] == pytest.approx(values.std(ddof=1)), (model, split, metric)
                assert agg[split][f"{metric}_folds"] == pytest.approx(values.tolist())
        summed = np.sum([np.asarray(m["test"]["confusion_matrix"]) for m in per_fold], axis=0)
        assert np.array_equal(np.asarray(agg["test"]["confusion_matrix"]), summed)
        assert summed.sum() == 36  # every clip tested once
        assert summary[model]["test"]["accuracy"] == pytest.approx(agg["test"]["accuracy"])


def test_mlflow_nests_the_fold_runs_under_a_parent(project):
    import mlflow

    root, _ = project
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    for model in MODELS:
        mine = [r for r in runs if r.data.tags.get("model") == model]
        parents = [r for r in mine if r.data.tags.get("soundstage.folds") == str(K)]
        assert len(parents) == 1, model
        parent = parents[0]
        children = [r for r in mine if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["soundstage.fold"] for r in children) == [str(k) for k in range(K)]
        agg = json.loads((root / f"reports/evaluate/{model}/metrics.json").read_text())
        assert parent.data.metrics["test_accuracy"] == pytest.approx(agg["test"]["accuracy"])
        assert parent.data.metrics["test_accuracy_std"] == pytest.approx(agg["test"]["accuracy_std"])
        for child in children:
            fold = json.loads((root / f"reports/evaluate/{model}/folds/{child.data.tags['soundstage.fold']}"
                                      "/metrics.json").read_text())
            assert child.data.metrics["test_accuracy"] == pytest.approx(fold["test"]["accuracy"])
    shown = run(["soundstage", "compare", "--experiment", "demo"], root).stdout
    assert "±" in shown and shown.count("random_forest") == 1, shown  # the parent, not its folds


def test_snakemake_reruns_only_the_changed_models_folds(project):
    root, _ = project
    assert "up to date" in run(["dvc", "status"], root).stdout
    set_params(root, **{"random_forest.n_estimators": 30})
    dry = run([*SNAKEMAKE, "-n"], root)
    jobs = planned(dry.stdout + dry.stderr)
    assert set(jobs) == {"train", "evaluate", "aggregate", "metrics", "all"}, jobs
    assert (jobs["train"], jobs["evaluate"], jobs["aggregate"]) == (K + 1, K, 1), jobs
    run(SNAKEMAKE, root)
    assert "up to date" in run(["dvc", "status"], root).stdout


def test_dvc_reruns_only_the_changed_models_folds(project):
    root, _ = project
    mlp = {p: p.stat().st_mtime_ns for p in (root / "models/keras_mlp").rglob("bundle.json")}
    rf = {p: p.stat().st_mtime_ns for p in (root / "models/random_forest").rglob("bundle.json")}
    set_params(root, **{"random_forest.n_estimators": 40})
    out = run(["dvc", "repro"], root).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {"train@random_forest", "evaluate@random_forest", "metrics"}, out
    assert all(p.stat().st_mtime_ns == t for p, t in mlp.items())
    assert all(p.stat().st_mtime_ns != t for p, t in rf.items()) and len(rf) == K + 1
    assert json.loads((root / "models/random_forest/folds/1/bundle.json").read_text())["params"]["n_estimators"] == 40
    dry = run([*SNAKEMAKE, "-n"], root)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_changing_k_reuses_the_features(project):
    root, _ = project
    features = sorted((root / "data/features/shards").glob("*.parquet"))
    before = [p.stat().st_mtime_ns for p in features]
    set_params(root, **{"split.k": 2, "train.models": ["random_forest"]})
    proc = run(SNAKEMAKE, root)
    jobs = planned(proc.stdout + proc.stderr)
    assert not {"ingest", "process", "features", "features_table"} & set(jobs), jobs
    assert jobs["split"] == 1 and jobs["train"] == 3 and jobs["evaluate"] == 2, jobs
    assert [p.stat().st_mtime_ns for p in features] == before
    agg = json.loads((root / "reports/evaluate/random_forest/metrics.json").read_text())
    assert agg["n_folds"] == 2 and len(agg["test"]["accuracy_folds"]) == 2
    assert "up to date" in run(["dvc", "status"], root).stdout
