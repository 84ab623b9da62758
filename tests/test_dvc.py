"""DVC runs the same pipeline: fresh-clone repro, no-op second repro, Snakemake agrees afterwards,
and `dvc exp run -S` re-runs only the stages that read the changed parameter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import make_project, run, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("dvc") / "soundstage", tiny_params())


@pytest.fixture(scope="module")
def first_repro(project: Path) -> str:
    return run(["dvc", "repro"], project).stdout


def test_fresh_clone_repro_runs_everything(first_repro: str):
    assert ran_stages(first_repro) == {
        "demo", "ingest", "process", "split", "features", "stats", "train@random_forest", "train@keras_mlp",
        "evaluate@random_forest", "evaluate@keras_mlp", "metrics", "report"}


def test_second_repro_runs_nothing(project: Path, first_repro: str):
    out = run(["dvc", "repro"], project).stdout
    assert ran_stages(out) == set(), out
    dry = run(["snakemake", "--workflow-profile", "workflow/profiles/default", "-n"], project)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_exp_run_reruns_only_the_changed_model(project: Path, first_repro: str):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    out = run(["dvc", "exp", "run", "-S", "random_forest.n_estimators=20"], project).stdout
    assert ran_stages(out) == {"train@random_forest", "evaluate@random_forest", "metrics"}, out
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    values = json.dumps(shown)
    assert '"n_estimators": 20' in values
    assert "reports/metrics.json" in values


def experiment_rows(shown: object) -> dict[str | None, dict]:
    """``dvc exp show --json``'s rows by name (``None`` for the workspace): each its ``data``."""
    rows: dict[str | None, dict] = {}
    if isinstance(shown, dict):
        if "rev" in shown and "data" in shown and shown["data"]:
            rows.setdefault(shown.get("name"), shown["data"])
        for value in shown.values():
            rows.update({k: v for k, v in experiment_rows(value).items() if k not in rows})
    elif isinstance(shown, list):
        for value in shown:
            rows.update({k: v for k, v in experiment_rows(value).items() if k not in rows})
    return rows


def test_plots_diff_and_exp_show_between_experiments(project: Path, first_repro: str):
    """For the experiment of the test above: `dvc exp show` reads its headline metrics (git keeps the
    uncached metrics files, so an experiment's commit holds them) and `dvc plots diff` draws the baseline's
    and the experiment's per-class F1, training curves and confusion matrices."""
    names = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
    assert len(names) == 1, names
    rows = experiment_rows(json.loads(run(["dvc", "exp", "show", "--json"], project).stdout))
    metrics = rows[names[0]]["metrics"]
    assert set(metrics) == {"reports/metrics.json"}, set(metrics)  # the headline, not every per-class score
    headline = metrics["reports/metrics.json"]["data"]
    assert isinstance(headline["random_forest"]["test"]["macro_f1"], float), headline
    assert rows[names[0]]["params"]["params.yaml"]["data"]["random_forest"]["n_estimators"] == 20
    shown = json.loads(run(["dvc", "plots", "diff", "HEAD", names[0], "--json"], project).stdout)
    for plot, content in shown["data"].items():
        assert len(content) == 1, plot
        revs = {v["rev"] for v in content[0]["content"]["data"]["values"]}
        assert revs == {"HEAD", names[0]}, (plot, revs)
    assert {"per_class_f1", "training_curves", "reports/evaluate/random_forest/confusion_test.json"} <= set(
        shown["data"])
    # only the model train.models leaves out is missing
    assert all("keras_cnn" in e["source"] for e in shown.get("errors", [])), shown.get("errors")


def test_queued_experiment_logs_into_the_repository_database(project: Path, first_repro: str):
    """`dvc exp run --queue` runs in a temporary copy under .dvc/tmp/exps; its MLflow run must still
    land in <repo>/mlflow.db, with artifacts beside it."""
    import time

    import mlflow

    run(["dvc", "exp", "run", "--queue", "-S", "random_forest.n_estimators=15"], project)
    run(["dvc", "queue", "start", "-j", "1"], project)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    assert "Success" in status, status
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.params.get("random_forest.n_estimators") == "15"]
    assert len(runs) == 1 and "test_accuracy" in runs[0].data.metrics
    assert runs[0].info.artifact_uri.startswith((project / "mlartifacts").as_uri())
