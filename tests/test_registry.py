"""Tests for soundstage.registry on a temporary SQLite store, without training: :func:`promote` chooses
among registered versions by their runs' metric (ties to the newest, runs without the metric or deleted
passed over), and :func:`resolve_bundle` / :func:`local_bundle` turn references into bundle folders or
clear errors. The real models are in tests/test_pyfunc.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from soundstage import cli
from soundstage.registry import is_model_uri, local_bundle, promote, resolve_bundle

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                                                  "ignore::FutureWarning", "ignore::UserWarning")]


@pytest.fixture
def store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("toys", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, experiment


def register(store, name: str, metrics: list[float | None], *, model: str = "random_forest") -> list[str]:
    """One run per entry (logging ``val_macro_f1`` unless None) and one version of ``name`` per run."""
    _, client, experiment = store
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    runs = []
    for value in metrics:
        run = client.create_run(experiment, tags={"model": model})
        if value is not None:
            client.log_metric(run.info.run_id, "val_macro_f1", value)
        client.set_terminated(run.info.run_id)
        client.create_model_version(name, f"runs:/{run.info.run_id}/pipeline", run_id=run.info.run_id)
        runs.append(run.info.run_id)
    return runs


def champion(store, name: str) -> int:
    return int(store[1].get_model_version_by_alias(name, "champion").version)


def test_promote_picks_the_best_metric_and_the_newest_of_ties(store):
    uri, client, _ = store
    runs = register(store, "toys", [0.5, 0.9, 0.9, None, 0.7, math.nan])
    done = promote("toys", tracking_uri=uri)
    assert (done.version, done.run_id, done.value, done.previous) == (3, runs[2], 0.9, None)
    assert done.model == "random_forest" and champion(store, "toys") == 3
    # Lower is better (a loss): the smallest value, NaN and missing ones still passed over.
    assert promote("toys", tracking_uri=uri, higher_is_better=False).version == 1
    assert champion(store, "toys") == 1
    # A better run registered later takes the alias over and says which version had it.
    register(store, "toys", [0.95])
    done = promote("toys", tracking_uri=uri)
    assert (done.version, done.previous) == (7, 1)
    # A deleted run no longer counts.
    client.delete_run(client.get_model_version("toys", "7").run_id)
    assert promote("toys", tracking_uri=uri).version == 3


def test_promote_another_alias_and_metric(store):
    uri, client, _ = store
    runs = register(store, "toys", [0.9, 0.5])
    client.log_metric(runs[1], "val_accuracy", 0.8)
    done = promote("toys", tracking_uri=uri, metric="val_accuracy", alias="staging")
    assert done.version == 2 and int(client.get_model_version_by_alias("toys", "staging").version) == 2
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("toys", "champion")


def test_promote_errors_name_the_model_and_the_metric(store):
    uri, _, _ = store
    with pytest.raises(ValueError, match="nosuch"):
        promote("nosuch", tracking_uri=uri)
    register(store, "toys", [None, None])
    with pytest.raises(ValueError, match=r"no version of registered model 'toys' has a run with metric 'val_macro_f1'"):
        promote("toys", tracking_uri=uri)


def test_promote_cli(store, tmp_path, monkeypatch, capsys):
    uri, _, _ = store
    register(store, "toys", [0.2, 0.6], model="keras_mlp")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["promote", "--name", "toys", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "toys version 2 (keras_mlp" in out and "val_macro_f1 0.6000" in out and "models:/toys@champion" in out
    assert champion(store, "toys") == 2
    # The registered model's name is the experiment's: data.name of params.yaml when there is one.
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["data"]["name"] = "toys"
    params["mlflow"]["tracking_uri"] = uri
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert cli.main(["promote", "--metric", "val_macro_f1", "--lower-is-better"]) == 0
    assert "toys version 1 " in capsys.readouterr().out and champion(store, "toys") == 1
    (tmp_path / "params.yaml").unlink()
    assert cli.main(["promote"]) == 1
    assert "--name is needed" in capsys.readouterr().err
    assert cli.main(["promote", "--name", "nosuch", "--tracking-uri", uri]) == 1
    assert "nosuch" in capsys.readouterr().err


def test_a_folder_is_its_own_bundle(tmp_path):
    assert not is_model_uri("models/random_forest/folds/0") and not is_model_uri(Path("runs:/x"))
    assert is_model_uri("runs:/abc/pipeline") and is_model_uri("models:/toys@champion")
    assert resolve_bundle("models/random_forest/folds/0") == Path("models/random_forest/folds/0")
    with local_bundle(tmp_path, tracking_uri="unused://") as bundle:
        assert bundle == tmp_path


def test_run_artifacts_resolve_to_a_bundle_and_downloads_are_removed(store, tmp_path, monkeypatch):
    uri, client, experiment = store
    # MLflow's default store would be ./mlflow.db: the references are resolved in `uri` alone.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = client.create_run(experiment).info.run_id
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text("{}")
    client.log_artifacts(run, str(folder), artifact_path="bundle")
    # A pyfunc model whose bundle artifact points outside its own folder is refused.
    fake = tmp_path / "fake"
    fake.mkdir()
    flavor = {"python_function": {"artifacts": {"bundle": {"path": "../bundle"}}}}
    (fake / "MLmodel").write_text(yaml.safe_dump({"flavors": flavor}))
    client.log_artifacts(run, str(fake), artifact_path="fake")
    (fake / "MLmodel").write_text(yaml.safe_dump({"flavors": {"sklearn": {}}}))
    client.log_artifacts(run, str(fake), artifact_path="sklearn")

    with local_bundle(f"runs:/{run}/bundle", tracking_uri=uri) as bundle:
        assert (bundle / "bundle.json").read_text() == "{}" and bundle.is_relative_to(Path(bundle).parents[1])
        downloaded = bundle
    assert not downloaded.exists()
    with pytest.raises(ValueError, match=r"holds no bundle.json"):
        resolve_bundle(f"runs:/{run}/fake", tracking_uri=uri, dst_path=tmp_path / "d1")
    with pytest.raises(ValueError, match=r"not a soundstage pipeline model .* no 'bundle' artifact"):
        resolve_bundle(f"runs:/{run}/sklearn", tracking_uri=uri, dst_path=tmp_path / "d2")
    with pytest.raises(ValueError, match=r"runs:/[0-9a-f]+/missing: run [0-9a-f]+ has no model or artifact .missing.$"):
        resolve_bundle(f"runs:/{run}/missing", tracking_uri=uri, dst_path=tmp_path / "d3")
    with pytest.raises(ValueError, match=r"Run with id=ffff not found"):
        resolve_bundle("runs:/ffff/pipeline", tracking_uri=uri, dst_path=tmp_path / "d4")
    with pytest.raises(ValueError, match=r"models:/toys@champion: .*toys"):
        resolve_bundle("models:/toys@champion", tracking_uri=uri, dst_path=tmp_path / "d5")
    assert list((tmp_path / "cwd").iterdir()) == []
