"""``soundstage promote``: the MLflow Model Registry side of training, and model references.

Every training run registers its ``pipeline`` model (:mod:`soundstage.pyfunc`) as a new version of the
registered model named after the experiment (``data.name``). :func:`promote` points the alias
``champion`` at the version whose run scored best (``val_macro_f1`` by default, as ``evaluate`` logs
it), so that ``models:/<name>@champion`` always names the model to use.

:func:`resolve_bundle` turns what a user may pass for a model into a local bundle folder: the folder
itself, ``runs:/<run_id>/pipeline`` (or ``runs:/<run_id>/bundle``, the bundle logged beside it),
``models:/<name>@<alias>`` or ``models:/<name>/<version>``. The bundle is the ``bundle`` artifact of the
pipeline model, downloaded with ``mlflow.artifacts.download_artifacts``.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The alias :func:`promote` sets.
CHAMPION = "champion"
#: The reference schemes :func:`resolve_bundle` downloads.
URI_SCHEMES = ("runs:/", "models:/")


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did: ``alias`` of registered model ``name`` now points at ``version``, whose
    run ``run_id`` scored ``value`` on ``metric``; ``previous`` is the version it pointed at before
    (``None``: the alias is new)."""

    name: str
    alias: str
    version: int
    run_id: str
    metric: str
    value: float
    model: str | None
    previous: int | None


def promote(name: str, *, metric: str = "val_macro_f1", tracking_uri: str | None = None, alias: str = CHAMPION,
            higher_is_better: bool = True) -> Promotion:
    """Set ``alias`` of registered model ``name`` on the version whose run has the best ``metric``.

    Versions whose run is gone (deleted) or lacks ``metric`` (not evaluated yet, a refit model that is
    never scored) or logs it as NaN are passed over. Ties go to the newest version (the highest number).

    Parameters
    ----------
    name : str
        The registered model: the experiment's name (``data.name``), under which ``train`` registers.
    metric : str
        A run metric, e.g. ``val_macro_f1`` or ``val_accuracy``; the test split is there to be reported,
        not to choose with.
    tracking_uri : str, optional
        The MLflow store (tracking and registry); default :func:`soundstage.tracking.tracking_uri`.
    higher_is_better : bool
        ``False`` for a loss.

    Raises
    ------
    ValueError
        No registered model ``name``, or none of its versions has a run with ``metric``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from soundstage import tracking

    uri = tracking_uri or tracking.tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        raise ValueError(f"promote: {exc.message} (in {uri})") from None
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{_quoted(name)}'", max_results=1000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    candidates = []
    for mv in versions:
        if not mv.run_id:
            continue
        try:
            run = client.get_run(mv.run_id)
        except MlflowException:  # the run was deleted for good
            continue
        value = run.data.metrics.get(metric)
        if run.info.lifecycle_stage != "active" or value is None or math.isnan(value):
            continue
        candidates.append((value if higher_is_better else -value, int(mv.version), mv, run))
    if not candidates:
        raise ValueError(f"promote: no version of registered model {name!r} has a run with metric {metric!r} "
                         f"({len(versions)} version(s); run `soundstage evaluate` on the models first)")
    _, version, mv, run = max(candidates, key=lambda c: (c[0], c[1]))
    previous = registered.aliases.get(alias) if isinstance(registered.aliases, dict) else None
    client.set_registered_model_alias(name, alias, str(version))
    return Promotion(name=name, alias=alias, version=version, run_id=mv.run_id, metric=metric,
                     value=float(run.data.metrics[metric]), model=run.data.tags.get("model"),
                     previous=None if previous is None else int(previous))


def _quoted(value: str) -> str:
    """``value`` inside a single-quoted MLflow filter string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def is_model_uri(ref: str | Path) -> bool:
    """Whether ``ref`` is an MLflow reference (``runs:/...``, ``models:/...``) rather than a folder."""
    return isinstance(ref, str) and ref.startswith(URI_SCHEMES)


def resolve_bundle(ref: str | Path, *, tracking_uri: str | None = None, dst_path: str | Path | None = None) -> Path:
    """A local bundle folder for ``ref``.

    Parameters
    ----------
    ref : str or path-like
        A bundle folder (returned as it is, checked by whoever loads it), ``runs:/<run_id>/pipeline``
        (or ``runs:/<run_id>/bundle``), ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
    tracking_uri : str, optional
        The MLflow store (tracking and registry); default :func:`soundstage.tracking.tracking_uri`.
    dst_path : path-like, optional
        Where to download (default: a new temporary folder, left to the caller; see
        :func:`local_bundle`, which removes it).

    Raises
    ------
    ValueError
        Naming ``ref``: an unknown run, registered model, version or alias, a path the run does not
        hold, or a model that is not a soundstage pipeline (no ``bundle`` artifact).
    """
    if not is_model_uri(ref):
        return Path(ref)
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from soundstage import tracking

    ref = str(ref)
    uri = tracking_uri or tracking.tracking_uri()
    dst = Path(dst_path) if dst_path is not None else Path(tempfile.mkdtemp(prefix="soundstage-bundle-"))
    # Resolved with our client down to a storage location: MLflow's runs:/ and models:/ repositories ask
    # the process-wide tracking and registry URIs for the logged models behind them.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        location = _model_version_uri(client, ref) if ref.startswith("models:/") else _run_artifact_uri(client, ref)
        with _no_progress_bar():  # a few hundred kB: stderr is kept for errors
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst),
                                                             tracking_uri=uri, registry_uri=uri))
    except MlflowException as exc:
        raise ValueError(f"{ref}: {exc.message} (in {uri})") from None
    except OSError as exc:  # a local artifact store without that path
        raise ValueError(f"{ref}: no such artifact ({exc.strerror or exc}) (in {uri})") from None
    return _bundle_in(local, ref)


@contextlib.contextmanager
def local_bundle(ref: str | Path, *, tracking_uri: str | None = None) -> Iterator[Path]:
    """:func:`resolve_bundle` as a context manager: a downloaded bundle is removed on exit; a folder is
    given as it is (and ``tracking_uri`` never read)."""
    if not is_model_uri(ref):
        yield Path(ref)
        return
    with tempfile.TemporaryDirectory(prefix="soundstage-bundle-") as tmp:
        yield resolve_bundle(ref, tracking_uri=tracking_uri, dst_path=tmp)


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow's download progress bars off for the block (its own switch, an environment variable)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _model_version_uri(client: Any, ref: str) -> str:
    """Where the registered model version (or logged model) that ``models:/...`` names is stored."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    name_and_version = get_model_name_and_version(client, ref)
    if len(name_and_version) == 1:  # models:/<model_id>, a logged model
        return client.get_logged_model(name_and_version[0]).artifact_location
    return client.get_model_version_download_uri(*name_and_version)


def _run_artifact_uri(client: Any, ref: str) -> str:
    """Where ``runs:/<run_id>/<path>`` is stored: the run's logged model named by the first part of
    ``path`` (``pipeline``), else the run's own artifact ``path`` (``bundle``)."""
    run_id, _, path = ref[len("runs:/"):].partition("/")
    path = path.strip("/")
    run = client.get_run(run_id)  # "Run with id=... not found"
    name, _, rest = path.partition("/")
    token = None
    while name:
        page = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           filter_string=f"name = '{_quoted(name)}'", page_token=token)
        for model in page:
            if model.source_run_id == run_id:
                return model.artifact_location.rstrip("/") + (f"/{rest}" if rest else "")
        token = page.token
        if not token:
            break
    parent = path.rpartition("/")[0]
    if path and path not in {f.path for f in client.list_artifacts(run_id, parent or None)}:
        raise ValueError(f"{ref}: run {run_id} has no model or artifact {path!r}")
    return run.info.artifact_uri.rstrip("/") + (f"/{path}" if path else "")


def _bundle_in(local: Path, ref: str) -> Path:
    """The bundle folder of a download: the folder itself (``runs:/<id>/bundle``) or the ``bundle`` artifact
    of a pipeline model (its path read from the model's ``MLmodel``)."""
    from soundstage.pyfunc import BUNDLE_ARTIFACT, MODEL_NAME

    if (local / "bundle.json").is_file():
        return local
    hint = f"a soundstage pipeline model (runs:/<run_id>/{MODEL_NAME}, models:/<name>@{CHAMPION}) or bundle"
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise ValueError(f"{ref}: not {hint}: no MLmodel or bundle.json")
    try:
        flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {})["python_function"]
        relative = flavor["artifacts"][BUNDLE_ARTIFACT]["path"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise ValueError(f"{ref}: not {hint}: the model has no '{BUNDLE_ARTIFACT}' artifact") from None
    bundle = (local / relative).resolve()
    if not (bundle.is_relative_to(local.resolve()) and (bundle / "bundle.json").is_file()):
        raise ValueError(f"{ref}: the model's '{BUNDLE_ARTIFACT}' artifact ({relative}) holds no bundle.json")
    return bundle
