"""MLflow location and version tags."""

from __future__ import annotations

import subprocess
from pathlib import Path

from soundstage import tracking


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text("seed: 1\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def test_repo_root_found_from_subfolder(tmp_path: Path):
    root = _repo(tmp_path)
    (root / "data" / "x").mkdir(parents=True)
    assert tracking.repo_root(root / "data" / "x") == root


def test_repo_root_of_a_dvc_temp_experiment_is_the_original_repo(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exports it
    root = _repo(tmp_path)
    exp = root / ".dvc" / "tmp" / "exps" / "tmpab12cd" / "sub"
    exp.mkdir(parents=True)
    assert tracking.repo_root(exp) == root
    assert tracking.tracking_uri(None, root=exp) == f"sqlite:///{root / 'mlflow.db'}"


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch):
    root = _repo(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(None, root=root).startswith("sqlite:////")  # absolute path
    assert tracking.tracking_uri("sqlite:///x.db", root=root) == "sqlite:///x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri("sqlite:///x.db", root=root) == "http://127.0.0.1:5000"


def test_git_info_reports_commit_and_dirty_flag(tmp_path: Path):
    root = _repo(tmp_path)
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *env, "commit", "-qm", "x"], cwd=root, check=True)
    info = tracking.git_info(root)
    assert len(info["git.commit"]) == 40 and info["git.dirty"] == "false"
    (root / "params.yaml").write_text("seed: 2\n")
    assert tracking.git_info(root)["git.dirty"] == "true"
    assert tracking.git_info(tmp_path / "nowhere")["git.commit"] == "unknown"


def test_data_versions_hash_files_like_dvc(tmp_path: Path):
    f = tmp_path / "table.parquet"
    f.write_bytes(b"abc")
    tags = tracking.data_versions({"table": f}, root=tmp_path)
    assert tags == {"data.table": "900150983cd24fb0d6963f7d28e17f72"}  # md5("abc")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  ingest:\n    cmd: x\n    deps:\n    - path: data/demo\n"
        "      md5: 0123456789abcdef0123456789abcdef.dir\n")
    assert tracking.dvc_raw_version(tmp_path) == "0123456789abcdef0123456789abcdef.dir"
    assert tracking.data_versions({"raw": "data/demo"}, root=tmp_path) == {
        "data.raw": "0123456789abcdef0123456789abcdef.dir"}


def _open_run(uri: str, name: str) -> str:
    with tracking.start_run(experiment="race", run_name=name, uri=uri, tags={"model": name}) as run:
        return run.info.run_id


def test_parallel_first_runs_share_a_new_sqlite_store(tmp_path: Path):
    """Two training jobs starting at once on a store that does not exist yet both get their run."""
    import multiprocessing as mp

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(2) as pool:
        ids = pool.starmap(_open_run, [(uri, "a"), (uri, "b")])
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("race")
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert {r.info.run_id for r in client.search_runs([exp.experiment_id])} == set(ids)


def test_a_rewritten_dvc_lock_does_not_make_the_run_dirty(tmp_path: Path):
    root = _repo(tmp_path)
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=root, check=True)
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert tracking.git_info(root)["git.dirty"] == "false"
