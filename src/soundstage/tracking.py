"""MLflow plumbing: where runs go, and the code and data versions every run is tagged with.

The tracking URI defaults to a SQLite database at the repository root, as an absolute path, so that
DVC experiments running in temporary copies (``.dvc/tmp/exps/...``) log to the same database;
``MLFLOW_TRACKING_URI`` overrides it, then ``params.yaml: mlflow.tracking_uri``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

_EXP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def repo_root(start: str | Path | None = None) -> Path:
    """The project root: the nearest folder holding ``params.yaml`` and ``.git`` or ``.dvc``.

    Inside a DVC temporary experiment workspace the *original* repository is returned.
    """
    here = Path(start or os.getcwd()).resolve()
    text = str(here) + os.sep
    if _EXP_MARKER in text:
        return Path(text.split(_EXP_MARKER, 1)[0])
    for cand in (here, *here.parents):
        if (cand / "params.yaml").is_file() and ((cand / ".git").exists() or (cand / ".dvc").is_dir()):
            return cand
    return here


def tracking_uri(configured: str | None = None, *, root: str | Path | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if configured:
        return configured
    return f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def git_info(root: str | Path | None = None) -> dict[str, str]:
    """``{"git.commit": sha or "unknown", "git.dirty": "true"/"false"}`` for the working copy."""
    cwd = str(Path(root or os.getcwd()))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=20).stdout.strip()
        # dvc.lock records pipeline state (rewritten by every run), not code: it does not make a run dirty.
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 ":(exclude)dvc.lock"], cwd=cwd,
                                capture_output=True, text=True, check=True, timeout=60).stdout
        return {"git.commit": sha, "git.dirty": str(bool(status.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file's bytes: the hash DVC records for a file output."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_versions(inputs: dict[str, str | Path], *, root: str | Path | None = None) -> dict[str, str]:
    """Tags naming the version of each input: its DVC hash from ``dvc.lock`` when recorded there and
    still valid, else the file's MD5 (for a file) — the same value DVC would record."""
    root = Path(root or os.getcwd())
    locked: dict[str, str] = {}
    lock = root / "dvc.lock"
    if lock.is_file():
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
            for stage in stages.values():
                for entry in [*stage.get("deps", []), *stage.get("outs", [])]:
                    if "md5" in entry:
                        locked[os.path.normpath(entry["path"])] = entry["md5"]
        except (OSError, yaml.YAMLError):
            pass
    tags = {}
    for name, path in inputs.items():
        p = Path(path)
        if p.is_file():
            tags[f"data.{name}"] = md5_file(p)
        elif os.path.normpath(str(path)) in locked:
            tags[f"data.{name}"] = locked[os.path.normpath(str(path))]
    return tags


def dvc_raw_version(root: str | Path | None = None) -> str | None:
    """The DVC hash of the raw dataset folder as recorded by the last ``dvc repro`` (if any)."""
    lock = Path(root or os.getcwd()) / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("ingest", {})
    except (OSError, yaml.YAMLError):
        return None
    for dep in stage.get("deps", []):
        if dep.get("md5", "").endswith(".dir"):
            return dep["md5"]
    return None


def start_run(*, experiment: str, run_name: str, uri: str, tags: dict[str, Any]):
    """Open an MLflow run (context manager) in ``experiment`` at ``uri``."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        _ensure_experiment(mlflow, experiment, uri)
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=run_name, tags={k: str(v) for k, v in tags.items()})


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialize first access to a SQLite store: parallel training jobs would otherwise race to
    create its tables (MLflow migrates a new database on first use)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure_experiment(mlflow: Any, experiment: str, uri: str) -> None:
    if mlflow.get_experiment_by_name(experiment) is None:
        # Artifacts next to the database, by absolute path: a run inside a DVC temporary workspace
        # must not leave its model in a folder that is deleted afterwards.
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        try:
            mlflow.create_experiment(experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            pass  # created concurrently by another training job
