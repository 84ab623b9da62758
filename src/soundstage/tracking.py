"""MLflow plumbing: where runs go, the code and data versions every run is tagged with, and how a run
ends.

The tracking URI defaults to a SQLite database at the repository root, as an absolute path, so that
DVC experiments running in temporary copies (``.dvc/tmp/exps/...``) log to the same database;
``MLFLOW_TRACKING_URI`` overrides it, then ``params.yaml: mlflow.tracking_uri``.

A run opened by :func:`start_run` ends FINISHED, or FAILED with its error recorded. A process that
dies without ending its run (SIGKILL, out of memory, a disk too full for MLflow itself) leaves it
RUNNING; runs are tagged with their process (``soundstage.pid``, ``soundstage.host``) so that the next
training in the experiment ends such runs as FAILED (:func:`end_orphaned_runs`).

A cross-validated model has one run per fold (tag ``soundstage.fold``) and, once its folds are
evaluated, a parent run holding their means and standard deviations, under which the UI nests them
(:func:`log_parent_run`).

An experiment is tagged as model training (:data:`EXPERIMENT_KIND_TAG`), what MLflow 3 reads to show it
with its runs, not GenAI traces (the 3.17 UI lets a per-browser switch override it); a training run
logs its dataset as an input (:func:`log_dataset`), which fills the run table's Dataset column.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import pandas as pd

_EXP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep

#: Run tags naming the training process, and what went wrong when a run ended FAILED.
PID_TAG = "soundstage.pid"
HOST_TAG = "soundstage.host"
PID_NAMESPACE_TAG = "soundstage.pid_namespace"
ERROR_TAG = "soundstage.error"
#: The run description shown by the MLflow UI.
NOTE_TAG = "mlflow.note.content"
#: The clip -> split assignment a run trained on (:func:`soundstage.split.assignment_hash`): runs with
#: different values were scored on different test sets.
SPLIT_HASH_TAG = "split.hash"
#: The fold a training run fitted (``"0"`` .. ``"K-1"``, ``"all"`` for the refit model).
FOLD_TAG = "soundstage.fold"
#: Tags of a cross-validation parent run (:func:`log_parent_run`): the number of folds it summarizes,
#: and the split's mode (``ratio``, ``kfold``...).
FOLDS_TAG = "soundstage.folds"
SPLIT_MODE_TAG = "split.mode"
#: MLflow's tag naming a run's parent: the UI nests the run under it, ``compare`` hides it by default.
PARENT_TAG = "mlflow.parentRunId"
#: Tags of a fold's run that describe that run alone (its process, error, fold): not the parent's.
RUN_SPECIFIC_TAGS = frozenset({PID_TAG, HOST_TAG, PID_NAMESPACE_TAG, ERROR_TAG, FOLD_TAG})
#: Longest error text recorded on a run (MLflow caps tag values at 8000 characters).
MAX_ERROR_CHARS = 4000
#: The experiment tag the MLflow 3 UI reads for an experiment's kind (the values of its ``ExperimentKind``
#: enum), and the kind it shows as "Machine learning" and opens on the runs table. Without the tag the UI
#: guesses, or asks.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: The run tags versioning the data, in the order :func:`dataset_digest` prefers them: the raw data's DVC
#: hash, its file-listing fingerprint, the features table's MD5 (see :func:`run_tags`).
DATA_VERSION_TAGS = ("data.raw", "data.raw_fingerprint", "data.table")
#: Longest dataset digest MLflow stores.
MAX_DIGEST_CHARS = 36


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


def run_tags(params: dict[str, Any], inputs: dict[str, str | Path]) -> dict[str, str]:
    """The tags of a training run: git commit and state, the version of each input (``data.<name>``),
    the raw data's DVC hash (``data.raw``, while DVC runs the pipeline) and file-listing fingerprint
    (``data.raw_fingerprint``) and the dataset's name (``data.name``)."""
    from soundstage.ingest import fingerprint_tree

    tags = {**git_info(), **data_versions(inputs)}
    # dvc.lock's raw hash is current only while DVC itself runs the pipeline (a plain Snakemake run
    # commits dvc.lock after training); the file-listing fingerprint always is.
    raw = dvc_raw_version() if os.environ.get("SOUNDSTAGE_UNDER_DVC") == "1" else None
    if raw:
        tags["data.raw"] = raw
    tags["data.raw_fingerprint"] = fingerprint_tree(params["data"]["root"], params["data"]["extensions"])
    tags["data.name"] = params["data"]["name"]
    return tags


def dataset_digest(tags: Mapping[str, str]) -> str | None:
    """The data version among run ``tags``: the first of :data:`DATA_VERSION_TAGS` present, cut to
    :data:`MAX_DIGEST_CHARS` characters (a fingerprint is a 40-character SHA-1), or ``None``."""
    for key in DATA_VERSION_TAGS:
        if tags.get(key):
            return str(tags[key])[:MAX_DIGEST_CHARS]
    return None


def dataset_profile(table: pd.DataFrame, *, manifest_path: str | Path | None = None) -> dict[str, int | float]:
    """``{"clips", "classes"[, "hours"]}`` of a features table (``clip_id``, ``label``; one row per clip
    or segment).

    ``hours`` is the audio of those clips in hours, from the ``duration`` (seconds) of the ingest
    manifest's rows with their ``id``; it is left out without a manifest or when the manifest lacks
    one of the clips (a partial sum would understate it).
    """
    clip_ids = table["clip_id"].astype(str).unique()
    profile: dict[str, int | float] = {"clips": len(clip_ids), "classes": int(table["label"].astype(str).nunique())}
    if manifest_path is not None and Path(manifest_path).is_file():
        from soundstage.io import read_csv

        durations = read_csv(manifest_path).set_index("id")["duration"].reindex(clip_ids)
        if durations.notna().all():
            profile["hours"] = round(float(durations.sum()) / 3600.0, 4)
    return profile


def log_dataset(*, name: str, tags: Mapping[str, str], source: str | Path, profile: Mapping[str, int | float],
                context: str = "training") -> Any:
    """Log the data of the active run as an MLflow dataset input, without uploading it.

    The dataset is ``name`` at version :func:`dataset_digest` of ``tags`` (its digest), read from the local
    path ``source`` (made absolute; inside a DVC temporary experiment workspace, the same path in the
    original repository), with ``profile`` (:func:`dataset_profile`) shown by the UI. MLflow keeps
    one dataset per experiment, name and digest: the profile is the one logged first with them, so it
    should describe the whole versioned data, not a part that changes between runs (a fold). Returns the
    logged ``mlflow.data.Dataset``, or ``None`` when ``tags`` hold no data version.
    """
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    digest = dataset_digest(tags)
    if digest is None:
        return None

    # A MetaDataset logs name, digest and source but no data; this subclass adds the profile it lacks.
    class ProfiledDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, int | float]:
            return dict(profile)

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    path = str(Path(source).resolve())
    if _EXP_MARKER in path:  # the workspace is deleted after the experiment
        repo, rest = path.split(_EXP_MARKER, 1)
        path = str(Path(repo, *Path(rest).parts[1:]))
    dataset = ProfiledDataset(LocalArtifactDatasetSource(path), name=name, digest=digest)
    mlflow.log_input(dataset, context=context)
    return dataset


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


@contextlib.contextmanager
def start_run(*, experiment: str, run_name: str, uri: str, tags: dict[str, Any]) -> Iterator[Any]:
    """Open an MLflow run in ``experiment`` at ``uri``; a context manager yielding the ``ActiveRun``.

    The run is tagged with ``tags`` and :func:`process_tags`. It ends FINISHED when the block completes.
    When the block raises, the run ends FAILED with ``<type>: <message>`` of the exception in tag
    ``soundstage.error`` and in the run description, and the exception propagates unchanged, even if
    MLflow cannot record it (a full disk): it is then only warned about, and the run stays RUNNING until
    :func:`end_orphaned_runs` ends it. Before the run starts, that function ends the runs left RUNNING
    in ``experiment`` by dead trainings of this host.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        _ensure_experiment(mlflow, experiment, uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    try:
        end_orphaned_runs(uri=uri, experiment_id=experiment_id)
    except mlflow.exceptions.MlflowException as exc:  # housekeeping must not stop a training
        warnings.warn(f"could not end the orphaned runs of experiment {experiment!r}: {exc}", stacklevel=3)
    run = mlflow.start_run(run_name=run_name, tags={**{k: str(v) for k, v in tags.items()}, **process_tags()})
    try:
        yield run
    except BaseException as exc:
        _end_failed(mlflow, run.info.run_id, exc)
        raise
    mlflow.end_run()


def _end_failed(mlflow: Any, run_id: str, exc: BaseException) -> None:
    """End the active run ``run_id`` FAILED with ``exc`` recorded, warning (not raising) when MLflow cannot."""
    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    try:
        client = mlflow.MlflowClient()
        client.set_tag(run_id, ERROR_TAG, error)
        client.set_tag(run_id, NOTE_TAG, f"Training failed: {error}")
    except Exception as log_exc:  # noqa: BLE001 - whatever MLflow raises, the training's error goes first
        warnings.warn(f"MLflow could not record the error of run {run_id}: {log_exc}", stacklevel=4)
    try:
        mlflow.end_run("FAILED")
    except Exception as log_exc:  # noqa: BLE001
        warnings.warn(f"MLflow could not end run {run_id} as FAILED (the next training will): {log_exc}",
                      stacklevel=4)


def process_tags() -> dict[str, str]:
    """Tags naming this process: pid, host name and (on Linux) PID namespace, so that a container sharing
    the host name but not the process table is told apart."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    namespace = _pid_namespace()
    if namespace is not None:
        tags[PID_NAMESPACE_TAG] = namespace
    return tags


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_training_process(pid: int) -> bool:
    """Whether process ``pid`` (of this host) is alive and, where ``/proc`` tells, a soundstage process.

    A process whose command line does not mention ``soundstage`` (its pid reused by another program) or a
    zombie (empty command line) counts as gone. Without ``/proc`` an alive pid counts as a training.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    if not os.path.isdir("/proc/self"):
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except FileNotFoundError:
        return False  # exited since
    except OSError:
        return True
    return b"soundstage" in cmdline


def end_orphaned_runs(*, uri: str, experiment_id: str) -> list[str]:
    """End as FAILED the runs of ``experiment_id`` still RUNNING whose training process is gone.

    Only runs tagged with this host (and PID namespace, when tagged) are judged, by
    :func:`is_training_process` on their ``soundstage.pid``; runs of other hosts or without the tags are
    left alone. An ended run gets tag ``soundstage.error`` saying why. Returns the ended run ids.
    """
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(tracking_uri=uri)
    me = process_tags()
    running, token = [], None
    while True:  # collect first: ending runs while paging over RUNNING ones would shift the pages
        page = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        running.extend(page)
        token = page.token
        if not token:
            break
    ended = []
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) != me[HOST_TAG] or tags.get(PID_NAMESPACE_TAG) != me.get(PID_NAMESPACE_TAG):
            continue
        try:
            pid = int(tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if pid <= 0 or is_training_process(pid):  # kill(0) or kill(-n) would address process groups
            continue
        client.set_tag(run.info.run_id, ERROR_TAG,
                       f"process ended without finishing (pid {pid} on {me[HOST_TAG]} is gone)")
        client.set_terminated(run.info.run_id, "FAILED")
        ended.append(run.info.run_id)
    return ended


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
    """Create ``experiment`` as a model-training experiment (:data:`EXPERIMENT_KIND_TAG`), or give an
    existing one without a kind that tag; a kind already set (by a user, in the UI) is kept."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        # Artifacts next to the database, by absolute path: a run inside a DVC temporary workspace
        # must not leave its model in a folder that is deleted afterwards.
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        try:
            mlflow.create_experiment(experiment, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
            return
        except mlflow.exceptions.MlflowException:
            found = mlflow.get_experiment_by_name(experiment)  # created concurrently by another training job
    if found is None or found.lifecycle_stage != "active" or found.tags.get(EXPERIMENT_KIND_TAG):
        return
    try:
        mlflow.MlflowClient(tracking_uri=uri).set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                                                 MODEL_TRAINING_KIND)
    except mlflow.exceptions.MlflowException as exc:  # the UI's view must not stop a training
        warnings.warn(f"could not tag experiment {experiment!r} as model training: {exc}", stacklevel=4)


def log_parent_run(*, uri: str, child_run_ids: Sequence[str], run_name: str, metrics: Mapping[str, float],
                   params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                   artifacts: Sequence[str | Path] = (), artifact_path: str = "evaluation") -> str:
    """Log one run over finished runs (the folds of a cross-validation) and nest them under it.

    The parent run is opened with :func:`start_run` in the children's experiment. It gets the tags of
    the first child, except MLflow's own (``mlflow.*``) and :data:`RUN_SPECIFIC_TAGS`, then ``tags``;
    the params that every child has with one value, then ``params``; ``metrics``; and ``artifacts``
    under ``artifact_path``. Once it has ended, each child gets tag :data:`PARENT_TAG` naming it, one
    ``set_tag`` per child: the children's own jobs, running in parallel, may be writing to them, and
    setting a tag replaces no other field.

    A parent these children had before (their folds aggregated again) that is one of these runs (tag
    :data:`FOLDS_TAG`) and has no child left is deleted (MLflow's soft delete: restorable, gone from
    searches), so that one set of folds is listed once.

    Parameters
    ----------
    uri : str
        The MLflow store of the children.
    child_run_ids : sequence of str
        The runs to nest, all of one experiment.
    run_name : str
        The parent's name (the model).
    metrics : mapping of str to float
        The parent's metrics (means and deviations over the children).

    Returns
    -------
    str
        The parent's run id.

    Raises
    ------
    ValueError
        No child, or children of several experiments.
    """
    import mlflow

    if not child_run_ids:
        raise ValueError("log_parent_run: no child run")
    client = mlflow.MlflowClient(tracking_uri=uri)
    children = [client.get_run(run_id) for run_id in child_run_ids]
    experiment_ids = {c.info.experiment_id for c in children}
    if len(experiment_ids) > 1:
        raise ValueError(f"log_parent_run: runs {', '.join(child_run_ids)} are in {len(experiment_ids)} experiments")
    experiment_id = children[0].info.experiment_id
    experiment = client.get_experiment(experiment_id).name
    inherited = {k: v for k, v in children[0].data.tags.items()
                 if not k.startswith("mlflow.") and k not in RUN_SPECIFIC_TAGS}
    shared = {k: v for k, v in children[0].data.params.items() if all(c.data.params.get(k) == v for c in children)}
    before = {c.data.tags[PARENT_TAG] for c in children if c.data.tags.get(PARENT_TAG)}
    with start_run(experiment=experiment, run_name=run_name, uri=uri, tags={**inherited, **(tags or {})}) as run:
        parent = run.info.run_id
        all_params = {**shared, **{k: ("None" if v is None else str(v)) for k, v in (params or {}).items()}}
        if all_params:
            mlflow.log_params(all_params)
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
    for child in children:
        client.set_tag(child.info.run_id, PARENT_TAG, parent)
    for old in sorted(before - {parent}):
        _delete_if_childless(client, old, experiment_id)
    return parent


def _delete_if_childless(client: Any, run_id: str, experiment_id: str) -> None:
    """Soft-delete run ``run_id`` when it is a :func:`log_parent_run` parent that no run names any more."""
    import mlflow

    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return  # deleted for good meanwhile
    if FOLDS_TAG not in run.data.tags or run.info.lifecycle_stage != "active":
        return
    from mlflow.entities import ViewType

    left = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'",
                              run_view_type=ViewType.ALL, max_results=1)
    if not left:
        client.delete_run(run_id)
