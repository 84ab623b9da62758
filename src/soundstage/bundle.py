"""Self-contained model bundles: everything ``predict`` needs to reproduce evaluation.

A bundle folder (``models/<model>/``) holds ``bundle.json`` — model name and kind, label list,
feature columns, the processing and feature parameters used in training, standardization statistics
(the summary features' mean and scale for the dense net, the train log-mel mean/std for the CNN), the
hash of the training parameters — and the model file (``model.skops`` for scikit-learn, never a pickle;
``model.keras`` for Keras).

A bundle may come from anyone (``soundstage predict`` on a downloaded folder), so it is data and is
checked as such: :func:`load_bundle` validates every field of ``bundle.json`` (types, lengths, sizes;
the ``process`` and ``features`` parameters as ``params.yaml`` is validated) and refuses unknown ones;
the model file's name is fixed by the kind, never read from ``bundle.json``, so a bundle names no
file (``mlflow.tracking_uri`` is the one location it records, for ``evaluate``);
:func:`soundstage.models.load_model` refuses model files that could run code.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundstage import models
from soundstage.io import write_json

FORMAT = "soundstage-bundle/1"

#: Metadata every bundle carries, what each kind adds, and what a bundle may carry besides.
REQUIRED = ("model", "kind", "labels", "feature_columns", "process", "features")
REQUIRED_BY_KIND = {"random_forest": (), "keras_mlp": ("standardizer",), "keras_cnn": ("logmel_stats", "cnn")}
OPTIONAL = ("format", "training", "params", "seed", "mlflow", "tags", "params_hash")

#: Sizes beyond which a bundle is broken or hostile, not big: ``bundle.json`` in bytes (a real one is
#: kilobytes, a few megabytes with the standardizer of very many features), list lengths, name lengths,
#: CNN crop and hop in frames.
MAX_META_BYTES = 64 << 20
MAX_LABELS = 100_000
MAX_FEATURE_COLUMNS = 100_000
MAX_NAME_CHARS = 1_000
MAX_CROP_FRAMES = 1 << 16

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_PARAMS_HASH = re.compile(r"[0-9a-f]{40}")
_SPLIT_HASH = re.compile(r"[0-9a-f]{12}")
_FOLD = re.compile(r"\d{1,6}|all")


class BundleError(ValueError):
    """A bundle whose ``bundle.json`` is malformed, inconsistent with its model, or absurdly large."""


@dataclass
class Bundle:
    directory: Path
    meta: dict[str, Any]
    _model: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def model(self) -> Any:
        """The model, loaded (and audited, see :func:`soundstage.models.load_model`) on first use.

        Raises :class:`BundleError` when its inputs or outputs do not match ``bundle.json``.
        """
        if self._model is None:
            model = models.load_model(self.directory, kind=self.kind)
            _check_model_shape(model, self.meta, self.directory / models.MODEL_FILENAMES[self.kind])
            self._model = model
        return self._model

    @property
    def process_config(self) -> Any:
        """The training-time :class:`soundstage.dsp.ProcessConfig`."""
        from soundstage.dsp import ProcessConfig

        return ProcessConfig.from_dict(self.meta["process"])

    @property
    def feature_config(self) -> Any:
        """The training-time :class:`soundstage.features_core.FeatureConfig`."""
        from soundstage.features_core import FeatureConfig

        return FeatureConfig.from_dict(self.meta["features"])

    def predict(self, *, summary: np.ndarray | None = None, logmels: list[np.ndarray] | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_labels)`` from summary rows (RF, MLP) or log-mels (CNN).

        ``summary`` columns must be in ``meta["feature_columns"]`` order; ``logmels`` are raw
        (unstandardized) ``(n_mels, t)`` matrices: the bundle applies its own statistics.
        """
        n_classes = len(self.labels)
        if self.kind == "keras_cnn":
            if logmels is None:
                raise ValueError("a CNN bundle predicts from log-mels")
            stats = self.meta["logmel_stats"]
            specs = [models.standardize_logmel(s, mean=stats["mean"], std=stats["std"]) for s in logmels]
            cnn = self.meta["cnn"]
            return models.predict_cnn(self.model, specs, crop_frames=cnn["crop_frames"], hop_frames=cnn["hop_frames"])
        if summary is None:
            raise ValueError(f"a {self.kind} bundle predicts from summary features")
        X = np.asarray(summary, dtype=np.float32)
        n_cols = len(self.meta["feature_columns"])
        if X.ndim != 2 or X.shape[1] != n_cols:
            raise ValueError(f"summary must have shape (n, {n_cols}) (the bundle's feature_columns), got {X.shape}")
        if self.kind == "keras_mlp":  # in float64, as in training
            X = models.scaler_from_dict(self.meta["standardizer"]).transform(X.astype(np.float64))
        return models.predict_proba(self.model, X, kind=self.kind, n_classes=n_classes)


def save_bundle(directory: str | Path, *, model: Any, meta: dict[str, Any]) -> Bundle:
    """Write ``model`` and ``bundle.json`` (``meta`` plus the format) to ``directory``.

    ``meta`` is validated as :func:`load_bundle` will validate it, before anything is written. An
    ``OSError`` (a full disk...) names the file being written.
    """
    directory = Path(directory)
    if meta.get("kind") not in models.MODEL_KINDS:
        raise ValueError(f"unknown model kind {meta.get('kind')!r}")
    full = {"format": FORMAT, **meta}
    validate_meta(full, source=directory / "bundle.json")
    directory.mkdir(parents=True, exist_ok=True)
    models.save_model(model, directory, kind=meta["kind"])
    try:
        write_json(directory / "bundle.json", full)
    except OSError as exc:
        if exc.filename is None:
            raise models.with_filename(exc, directory / "bundle.json") from exc
        raise
    return Bundle(directory, full, model)


def load_bundle(directory: str | Path) -> Bundle:
    """Read ``directory/bundle.json`` and validate it (the model file itself is loaded lazily).

    Raises
    ------
    FileNotFoundError
        No ``bundle.json`` or no model file (``model.skops`` / ``model.keras``, per kind).
    BundleError
        A ``bundle.json`` larger than ``MAX_META_BYTES``, not JSON, or failing :func:`validate_meta`;
        a model file larger than ``models.MAX_MODEL_BYTES``. The message names the file and the field.
    """
    directory = Path(directory)
    meta_file = directory / "bundle.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{directory}: not a soundstage model bundle (no bundle.json)")
    size = meta_file.stat().st_size
    if size > MAX_META_BYTES:
        raise BundleError(f"{meta_file}: {size} bytes, more than the {MAX_META_BYTES} a bundle.json may have")
    with open(meta_file, "rb") as fh:
        raw = fh.read(MAX_META_BYTES + 1)  # bounded even if the file grew since stat()
    if len(raw) > MAX_META_BYTES:
        raise BundleError(f"{meta_file}: more than the {MAX_META_BYTES} bytes a bundle.json may have")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{meta_file}: not valid JSON ({exc})") from None
    validate_meta(meta, source=meta_file)
    model_file = directory / models.MODEL_FILENAMES[meta["kind"]]
    if not model_file.is_file():
        raise FileNotFoundError(f"{directory}: bundle has no model file {model_file.name}")
    size = model_file.stat().st_size
    if size > models.MAX_MODEL_BYTES:
        raise BundleError(f"{model_file}: {size} bytes, more than the {models.MAX_MODEL_BYTES} a model file may have")
    return Bundle(directory, meta)


def validate_meta(meta: Any, *, source: str | Path) -> None:
    """Check the bundle metadata ``meta`` (read from ``source``, named in errors) field by field.

    Fields: ``format`` (``FORMAT``), ``model`` (a name, not a path), ``kind``, ``labels`` (2 to
    ``MAX_LABELS`` distinct strings), ``feature_columns`` (distinct strings, at least one for summary
    models), ``process`` and ``features`` (valid ``params.yaml`` sections, see
    :func:`soundstage.config.validate_params`), per kind ``standardizer`` (``mean`` and ``scale``, or
    ``std`` in bundles written before: finite, one per feature column, ``scale > 0``, ``std >= 0``),
    ``logmel_stats`` (``mean``, ``std``, one per mel bin) and
    ``cnn`` (``crop_frames``, ``hop_frames``: ints in ``1 .. MAX_CROP_FRAMES``); optionally
    ``training`` (``n_train``, ``n_val``, ``n_augmented``: counts; ``augment``; ``split_hash``: 12 hex
    digits; ``fold``: the fold id, digits or ``all``), ``params``, ``seed``, ``mlflow``, ``tags``,
    ``params_hash``. Any other field is refused.

    Raises
    ------
    BundleError
    """
    def bad(name: str, problem: str) -> BundleError:
        return BundleError(f"{source}: field {name!r} {problem}")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise BundleError(f"{source}: unsupported bundle format {found!r}")
    kind = meta.get("kind")
    if kind not in models.MODEL_KINDS:
        raise bad("kind", f"names an unknown model kind {str(kind)[:100]!r}")
    missing = [k for k in (*REQUIRED, *REQUIRED_BY_KIND[kind]) if k not in meta]
    if missing:
        raise BundleError(f"{source}: incomplete bundle, missing {', '.join(missing)}")
    unknown = sorted(set(meta) - {*REQUIRED, *REQUIRED_BY_KIND[kind], *OPTIONAL}, key=str)
    if unknown:
        raise BundleError(f"{source}: unexpected field(s) {', '.join(repr(str(k)[:100]) for k in unknown)} "
                          f"(a {kind} bundle names no files: its model is always "
                          f"{models.MODEL_FILENAMES[kind]})")

    if not (isinstance(meta["model"], str) and _MODEL_NAME.fullmatch(meta["model"])):
        raise bad("model", f"must be a model name (letters, digits, '_', '-', '.'), got {str(meta['model'])[:100]!r}")
    _check_names(meta["labels"], "labels", bad, min_len=2, max_len=MAX_LABELS)
    _check_names(meta["feature_columns"], "feature_columns", bad, min_len=0 if kind == "keras_cnn" else 1,
                 max_len=MAX_FEATURE_COLUMNS)
    params = _check_params(meta, bad)

    if kind == "keras_mlp":
        scaler = meta["standardizer"]
        spread = "std" if isinstance(scaler, dict) and "std" in scaler else "scale"  # std: bundles of before
        _check_stats(scaler, "standardizer", len(meta["feature_columns"]), bad, spread=spread)
    if kind == "keras_cnn":
        _check_stats(meta["logmel_stats"], "logmel_stats", params["features"]["n_mels"], bad)
        cnn = meta["cnn"]
        _check_keys(cnn, "cnn", required={"crop_frames", "hop_frames"}, bad=bad)
        for key in ("crop_frames", "hop_frames"):
            if not (_is_int(cnn[key]) and 1 <= cnn[key] <= MAX_CROP_FRAMES):
                raise bad(f"cnn.{key}", f"must be an integer in 1..{MAX_CROP_FRAMES}, got {str(cnn[key])[:100]!r}")

    if "training" in meta:
        training = meta["training"]
        _check_keys(training, "training", required=set(),
                    optional={"n_train", "n_val", "n_augmented", "augment", "split_hash", "fold"}, bad=bad)
        for key in ("n_train", "n_val", "n_augmented"):
            if key in training and not (_is_int(training[key]) and training[key] >= 0):
                raise bad(f"training.{key}", f"must be a count, got {str(training[key])[:100]!r}")
        if training.get("augment") is not None and not isinstance(training["augment"], dict):
            raise bad("training.augment", "must be a mapping or null")
        if "split_hash" in training and not (isinstance(training["split_hash"], str)
                                             and _SPLIT_HASH.fullmatch(training["split_hash"])):
            raise bad("training.split_hash", f"must be 12 hex digits, got {str(training['split_hash'])[:100]!r}")
        if "fold" in training and not (isinstance(training["fold"], str) and _FOLD.fullmatch(training["fold"])):
            raise bad("training.fold", f"must be a fold id (digits or 'all'), got {str(training['fold'])[:100]!r}")
    if "params" in meta and not isinstance(meta["params"], dict):
        raise bad("params", f"must be a mapping, got {type(meta['params']).__name__}")
    if "seed" in meta and not _is_int(meta["seed"]):
        raise bad("seed", f"must be an integer, got {str(meta['seed'])[:100]!r}")
    if "mlflow" in meta:
        _check_keys(meta["mlflow"], "mlflow", required=set(), optional={"tracking_uri", "experiment", "run_id"},
                    bad=bad)
        for key, value in meta["mlflow"].items():
            if not (isinstance(value, str) and len(value) <= MAX_NAME_CHARS):
                raise bad(f"mlflow.{key}", f"must be a string of at most {MAX_NAME_CHARS} characters")
    if "tags" in meta:
        tags = meta["tags"]
        if not (isinstance(tags, dict) and all(isinstance(v, str) and len(v) <= MAX_NAME_CHARS for v in tags.values())
                and all(len(k) <= MAX_NAME_CHARS for k in tags)):
            raise bad("tags", f"must map names to strings of at most {MAX_NAME_CHARS} characters")
    if "params_hash" in meta and not (isinstance(meta["params_hash"], str)
                                      and _PARAMS_HASH.fullmatch(meta["params_hash"])):
        raise bad("params_hash", f"must be 40 hex digits, got {str(meta['params_hash'])[:100]!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_keys(value: Any, name: str, *, required: set[str], bad: Any, optional: set[str] | None = None) -> None:
    """``value`` is a mapping with every key of ``required`` and no key outside ``required | optional``."""
    if not isinstance(value, dict):
        raise bad(name, f"must be a mapping, got {type(value).__name__}")
    allowed = required | (optional or set())
    missing = sorted(required - set(value))
    unknown = sorted(str(k)[:100] for k in set(value) - allowed)
    if missing or unknown:
        raise bad(name, f"must hold {sorted(allowed)}; missing {missing}, unexpected {unknown}")


def _check_names(value: Any, name: str, bad: Any, *, min_len: int, max_len: int) -> None:
    """A list of ``min_len`` to ``max_len`` distinct strings of at most ``MAX_NAME_CHARS`` characters."""
    if not isinstance(value, list):
        raise bad(name, f"must be a list of strings, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise bad(name, f"must hold {min_len} to {max_len} entries, got {len(value)}")
    wrong = [v for v in value if not isinstance(v, str) or len(v) > MAX_NAME_CHARS]
    if wrong:
        raise bad(name, f"must hold strings of at most {MAX_NAME_CHARS} characters, got {str(wrong[0])[:100]!r}")
    if len(set(value)) != len(value):
        raise bad(name, "holds duplicates")


def _check_stats(value: Any, name: str, n: int, bad: Any, *, spread: str = "std") -> None:
    """``{"mean": [...], spread: [...]}``: ``n`` finite numbers each, a ``std >= 0``, a ``scale > 0`` (a divisor)."""
    _check_keys(value, name, required={"mean", spread}, bad=bad)
    for key in ("mean", spread):
        numbers_ = value[key]
        if not isinstance(numbers_, list) or len(numbers_) != n:
            length = len(numbers_) if isinstance(numbers_, list) else type(numbers_).__name__
            raise bad(f"{name}.{key}", f"must be a list of {n} numbers, got {length}")
        if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in numbers_):
            raise bad(f"{name}.{key}", "must hold finite numbers only")
    if any(x < 0 or (x == 0 and spread == "scale") for x in value[spread]):
        raise bad(f"{name}.{spread}", "must be positive" if spread == "scale" else "must not be negative")


def _check_params(meta: dict[str, Any], bad: Any) -> dict[str, Any]:
    """The bundle's ``process`` and ``features``, validated (and default-filled) as ``params.yaml`` is."""
    from soundstage.config import ParamsError, validate_params

    for name in ("process", "features"):
        if not isinstance(meta[name], dict):
            raise bad(name, f"must be a mapping, got {type(meta[name]).__name__}")
    try:
        return validate_params({"process": meta["process"], "features": meta["features"]})
    except ParamsError as exc:
        section = exc.key.partition(".")[0] or "process"
        raise bad(section, f"is not a valid configuration: {exc.key}: {exc.problem}"[:300]) from None


def _check_model_shape(model: Any, meta: dict[str, Any], path: Path) -> None:
    """The model takes the inputs ``meta`` describes and gives at most one probability per label."""
    n_labels, kind = len(meta["labels"]), meta["kind"]
    if kind == "random_forest":
        got = (int(model.n_features_in_), [int(c) for c in np.asarray(model.classes_).reshape(-1)])
        fits = got[0] == len(meta["feature_columns"]) and all(0 <= c < n_labels for c in got[1])
        expected = f"{len(meta['feature_columns'])} features and classes in 0..{n_labels - 1}"
    else:
        if kind == "keras_mlp":
            want: tuple[Any, ...] = (None, len(meta["feature_columns"]))
        else:
            from soundstage.features_core import FeatureConfig

            want = (None, FeatureConfig.from_dict(meta["features"]).n_mels, meta["cnn"]["crop_frames"], 1)
        got = (tuple(model.input_shape), tuple(model.output_shape))
        fits = got == (want, (None, n_labels))
        expected = f"input {want} and output {(None, n_labels)}"
    if not fits:
        raise BundleError(f"{path}: the model does not match bundle.json: expected {expected}, got {got}")
