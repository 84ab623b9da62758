"""MLflow location and version tags."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from soundstage import tracking

pytestmark = pytest.mark.integration  # real MLflow stores

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


# ------------------------------------------------------------------ how runs end


def test_a_failing_training_ends_its_run_failed_with_the_error(tmp_path: Path):
    import errno
    import os
    import socket

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(OSError, match="No space left on device"):
        with tracking.start_run(experiment="e", run_name="rf", uri=uri, tags={"model": "rf"}) as run:
            run_id = run.info.run_id
            raise OSError(errno.ENOSPC, "No space left on device", "/srv/models/rf/model.skops")
    assert mlflow.active_run() is None
    done = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert done.info.status == "FAILED"
    error = "OSError: [Errno 28] No space left on device: '/srv/models/rf/model.skops'"
    assert done.data.tags["soundstage.error"] == error
    assert error in done.data.tags["mlflow.note.content"]  # the run description in the UI
    assert done.data.tags["soundstage.pid"] == str(os.getpid())
    assert done.data.tags["soundstage.host"] == socket.gethostname()
    assert done.data.tags["model"] == "rf"


def test_the_training_error_propagates_when_mlflow_cannot_record_it(tmp_path: Path, monkeypatch):
    """A disk so full that MLflow cannot write either: the training's error, not MLflow's, reaches the user."""
    import errno

    import mlflow

    def database_full(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database or disk is full")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.warns(UserWarning, match="could not") as warned, pytest.raises(OSError, match="No space left"):
        with tracking.start_run(experiment="e", run_name="rf", uri=uri, tags={}) as run:
            run_id = run.info.run_id
            monkeypatch.setattr(mlflow.MlflowClient, "set_tag", database_full)
            monkeypatch.setattr(mlflow.MlflowClient, "set_terminated", database_full)
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.undo()
    assert any("database or disk is full" in str(w.message) for w in warned)
    assert mlflow.active_run() is None  # the next run of this process can start
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "RUNNING"


def test_runs_left_running_by_dead_trainings_of_this_host_are_ended_as_failed(tmp_path: Path):
    import shutil
    import signal
    import sys

    import mlflow

    if not Path("/proc/self/cmdline").is_file():
        pytest.skip("needs /proc")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A real training process killed with SIGKILL inside its run.
    code = ("import os, signal, sys\nfrom soundstage import tracking\n"
            "with tracking.start_run(experiment='e', run_name='killed', uri=sys.argv[1], tags={}) as run:\n"
            "    print(run.info.run_id, flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    killed_run = killed.stdout.split()[0]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(killed_run).info.status == "RUNNING"

    # Other runs, by process: a live training, a live process that is no training (its pid reused), a
    # dead one on another host, a dead one in another PID namespace (a container), an untagged one.
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "soundstage-train"]),
                subprocess.Popen([shutil.which("sleep") or "sleep", "300"])]
    try:
        me = tracking.process_tags()
        exp = client.get_experiment_by_name("e").experiment_id
        dead = str(_dead_pid())
        runs = {name: client.create_run(exp, tags=tags, run_name=name).info.run_id for name, tags in {
            "live_training": {**me, "soundstage.pid": str(sleepers[0].pid)},
            "live_other_program": {**me, "soundstage.pid": str(sleepers[1].pid)},
            "other_host": {**me, "soundstage.pid": dead, "soundstage.host": "elsewhere.invalid"},
            "other_namespace": {**me, "soundstage.pid": dead, "soundstage.pid_namespace": "pid:[1]"},
            "untagged": {},
        }.items()}
        with tracking.start_run(experiment="e", run_name="next", uri=uri, tags={}):
            pass
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"live_training": "RUNNING", "live_other_program": "FAILED", "other_host": "RUNNING",
                      "other_namespace": "RUNNING", "untagged": "RUNNING"}
    ended = client.get_run(killed_run)
    assert ended.info.status == "FAILED"
    assert ended.data.tags["soundstage.error"].startswith("process ended without finishing")
    assert "process ended without finishing" in client.get_run(runs["live_other_program"]).data.tags["soundstage.error"]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


# ------------------------------------------------------------------ cross-validation parent runs


def test_log_parent_run_keeps_other_parents_and_refuses_mixed_experiments(tmp_path: Path):
    """A parent that still has children, or that is not a cross-validation parent, is never deleted;
    children of two experiments have no one parent."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e")
    runs = [client.create_run(exp, tags={"model": "rf", "soundstage.fold": str(k)}).info.run_id for k in range(3)]
    for run_id in runs:
        client.log_param(run_id, "seed", "1")
        client.set_terminated(run_id)
    client.log_param(runs[2], "only_here", "x")
    first = tracking.log_parent_run(uri=uri, child_run_ids=runs, run_name="rf", metrics={"test_accuracy": 0.5},
                                    tags={tracking.FOLDS_TAG: 3})
    parent = client.get_run(first)
    assert parent.data.params == {"seed": "1"}  # only the params every child shares
    assert parent.data.tags["model"] == "rf" and tracking.FOLD_TAG not in parent.data.tags
    # Two of the three nested under a new parent: the first keeps a child, so it stays.
    second = tracking.log_parent_run(uri=uri, child_run_ids=runs[:2], run_name="rf", metrics={},
                                     tags={tracking.FOLDS_TAG: 2})
    assert client.get_run(first).info.lifecycle_stage == "active"
    assert client.get_run(runs[2]).data.tags[tracking.PARENT_TAG] == first
    # A parent of someone else's making (no soundstage.folds tag) is left alone, childless or not.
    other = client.create_run(exp).info.run_id
    client.set_terminated(other)
    client.set_tag(runs[0], tracking.PARENT_TAG, other)
    tracking.log_parent_run(uri=uri, child_run_ids=runs[:1], run_name="rf", metrics={}, tags={tracking.FOLDS_TAG: 1})
    assert client.get_run(other).info.lifecycle_stage == "active"
    assert client.get_run(second).info.lifecycle_stage == "active"  # still runs[1]'s parent

    elsewhere = client.create_run(client.create_experiment("f")).info.run_id
    with pytest.raises(ValueError, match="2 experiments"):
        tracking.log_parent_run(uri=uri, child_run_ids=[runs[0], elsewhere], run_name="rf", metrics={})
    with pytest.raises(ValueError, match="no child run"):
        tracking.log_parent_run(uri=uri, child_run_ids=[], run_name="rf", metrics={})


# ------------------------------------------------------------------ how the UI shows experiments and data


def test_a_new_experiment_is_a_model_training_experiment(tmp_path: Path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.start_run(experiment="fresh", run_name="rf", uri=uri, tags={}):
        pass
    exp = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("fresh")
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND == "custom_model_development"


def test_an_older_experiment_gets_the_kind_and_a_users_kind_is_kept(tmp_path: Path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    untagged = client.create_experiment("older")  # as created before the kind existed
    chosen = client.create_experiment("chosen", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("older", "chosen"):
        with tracking.start_run(experiment=name, run_name="rf", uri=uri, tags={}):
            pass
    assert client.get_experiment(untagged).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment(chosen).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"


def test_dataset_digest_prefers_the_raw_data_version():
    raw, fingerprint, table = "0123456789abcdef0123456789abcdef.dir", "f" * 40, "9" * 32
    assert tracking.dataset_digest({"data.raw": raw, "data.raw_fingerprint": fingerprint, "data.table": table}) == raw
    assert tracking.dataset_digest({"data.raw_fingerprint": fingerprint, "data.table": table}) == "f" * 36  # capped
    assert tracking.dataset_digest({"data.table": table, "data.raw": ""}) == table
    assert tracking.dataset_digest({"git.commit": "c0ffee"}) is None


def test_dataset_profile_counts_clips_classes_and_hours(tmp_path: Path):
    import pandas as pd

    table = pd.DataFrame({"id": ["a__s0", "a__s1", "b", "c"], "clip_id": ["a", "a", "b", "c"],
                          "label": ["dog", "dog", "cat", "dog"]})  # clip a in two segments
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"id": ["a", "b", "c", "d"], "duration": [1800.0, 900.0, 900.0, 3600.0]}).to_csv(manifest, index=False)
    assert tracking.dataset_profile(table, manifest_path=manifest) == {"clips": 3, "classes": 2, "hours": 1.0}
    assert tracking.dataset_profile(table) == {"clips": 3, "classes": 2}
    # A manifest missing a clip gives no hours rather than too few.
    pd.DataFrame({"id": ["a", "b"], "duration": [1.0, 2.0]}).to_csv(manifest, index=False)
    assert tracking.dataset_profile(table, manifest_path=manifest) == {"clips": 3, "classes": 2}


def test_log_dataset_names_the_original_repo_from_a_dvc_workspace(tmp_path: Path):
    import json

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workspace = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    with tracking.start_run(experiment="e", run_name="rf", uri=uri, tags={}) as run:
        assert tracking.log_dataset(name="e", tags={}, source=workspace / "data", profile={}) is None  # no version
        tracking.log_dataset(name="e", tags={"data.table": "abc"}, source=workspace / "data" / "raw",
                             profile={"clips": 2})
    (logged,) = mlflow.MlflowClient(tracking_uri=uri).get_run(run.info.run_id).inputs.dataset_inputs
    assert json.loads(logged.dataset.source) == {"uri": str(tmp_path / "proj" / "data" / "raw")}
    assert logged.dataset.source_type == "local"
