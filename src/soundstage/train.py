"""Stage ``train``: fit one model on the train split, bundle it, and record the run in MLflow.

Models (``params.yaml: train.models``): ``random_forest`` and ``keras_mlp`` on the summary table,
``keras_cnn`` on log-mels standardized with the train statistics of the ``stats`` stage. Validation
data drives early stopping of the Keras models; the test split is never read here.

Waveform augmentation (``params.yaml: augment``, off by default) runs here, for training only: each
train clip's processed audio (the process stage's stores, ``data/process/audio``) gets ``copies`` perturbed versions
(noise at a random SNR, time stretch, pitch shift, gain; see :func:`soundstage.models.augment_waveform`),
whose features are computed with the same :class:`~soundstage.features_core.FeatureConfig` and
:func:`~soundstage.features.clip_features` as the real clips. The CNN gets their log-mels as extra
training clips, the forest and the dense net their summary rows. Each copy draws from
``np.random.default_rng([seed, crc32(id), k])``: the same params give the same copies, in any order.
Standardization statistics (log-mel mean/std, the dense net's scaler) stay those of the real train
clips.

Beside the bundle's own files, training writes its curves into the bundle folder (data, never named by
``bundle.json``, ignored by :func:`soundstage.bundle.load_bundle`): ``history.csv``
(:func:`history_table`: ``epoch`` then each curve; header only for the forest, which has no epochs) and,
for the Keras models, ``training_curves.png`` (:func:`plot_history`). They are written here, with the
model, because only training knows them: the report and ``dvc plots`` read them from there.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from soundstage import models
from soundstage.bundle import Bundle, save_bundle
from soundstage.cache import key_of
from soundstage.features import feature_columns, load_logmels
from soundstage.io import atomic_path, write_csv

#: Keys of ``params.yaml: augment`` passed to :func:`soundstage.models.augment_waveform`.
AUGMENT_TRANSFORMS = ("noise_snr_db", "time_stretch", "pitch_shift", "gain_db")
#: The training curves' table and figure, in the bundle folder.
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
#: The curves every ``history.csv`` has, after ``epoch`` (blank when a fit has no val clips, no rows for the
#: forest): a stable header for ``dvc plots``. Other curves Keras records (``learning_rate``) follow them.
HISTORY_CURVES = ("loss", "val_loss", "accuracy", "val_accuracy")


@dataclass
class Augmented:
    """Augmented copies of training clips.

    Attributes
    ----------
    rows : DataFrame
        ``id, clip_id, label, group, split`` (``"train"``) + the summary feature columns; a copy's
        id is ``<id>__aug<k>``.
    logmels : list of np.ndarray [shape=(n_mels, n_frames)], float32, dB
        Raw (unstandardized) log-mels in ``rows`` order; empty when not requested.
    """

    rows: pd.DataFrame
    logmels: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def augment_clips(*, rows: pd.DataFrame, process_dir: str | Path, index: pd.DataFrame, feature_config: Any, seed: int,
                  copies: int = 1,
                  noise_snr_db: tuple[float, float] | None = None, time_stretch: tuple[float, float] | None = None,
                  pitch_shift: tuple[float, float] | None = None, gain_db: tuple[float, float] | None = None,
                  logmels: bool = True) -> Augmented:
    """Features of ``copies`` randomly perturbed versions of each clip in ``rows``.

    Parameters
    ----------
    rows : DataFrame
        Rows of the features table (``id, clip_id, label, group``).
    process_dir, index : path, DataFrame
        The process stage's folder and its shard indexes (:func:`soundstage.process.read_index`):
        where each row's processed audio is (``sample_rate``, and ``store, offset, frames`` in the
        stores ``process_dir/audio``).
    feature_config : soundstage.features_core.FeatureConfig
        The training features' configuration (the bundle's ``features``).
    seed : int
        Copy ``k`` of clip ``id`` draws from ``np.random.default_rng([seed, crc32(id), k])``.
    noise_snr_db, time_stretch, pitch_shift, gain_db : (low, high) or None
        Ranges of :func:`soundstage.models.augment_waveform` (dB, rate, semitones, dB); ``None``
        disables a transform.
    logmels : bool
        Keep each copy's log-mel (the CNN trains on them).
    """
    from soundstage.features import clip_features
    from soundstage.process import read_segment
    from soundstage.store import Stores

    ranges = {"noise_snr_db": noise_snr_db, "time_stretch": time_stretch, "pitch_shift": pitch_shift,
              "gain_db": gain_db}
    ranges = {k: (None if v is None else tuple(float(x) for x in v)) for k, v in ranges.items()}
    out_rows: list[dict[str, Any]] = []
    specs: list[np.ndarray] = []
    stores = Stores(Path(process_dir) / "audio", stage="process")
    where = index.assign(id=index["id"].astype(str)).drop_duplicates("id", keep="last").set_index("id")
    for row in rows.to_dict("records"):
        clip = str(row["id"])
        if clip not in where.index:
            raise FileNotFoundError(f"augment: {clip!r} is in no process shard index under {process_dir}")
        place = where.loc[clip]
        y, sr = read_segment(stores, place), int(place["sample_rate"])  # mono, as the features stage reads it
        for k in range(copies):
            rng = np.random.default_rng([seed, zlib.crc32(clip.encode("utf-8")), k])
            y_aug = models.augment_waveform(y, sr=int(sr), rng=rng, **ranges)
            feats, summary = clip_features(y_aug, sr=int(sr), config=feature_config)
            out_rows.append({"id": f"{clip}__aug{k}", "clip_id": row["clip_id"], "label": row["label"],
                             "group": row["group"], "split": "train", **summary})
            if logmels:
                specs.append(np.ascontiguousarray(feats["logmel"], dtype=np.float32))
    table = pd.DataFrame(out_rows) if out_rows else pd.DataFrame(columns=["id", "clip_id", "label", "group", "split"])
    return Augmented(rows=table, logmels=specs)


def fit(*, model: str, table: pd.DataFrame, params: dict[str, Any], seed: int, n_jobs: int = 1,
        logmel_dir: str | Path | None = None, logmel_stats: dict[str, np.ndarray] | None = None,
        augmented: Augmented | None = None) -> tuple[Any, dict[str, Any], dict[str, list[float]]]:
    """Fit ``model`` on ``table`` rows with ``split == "train"`` (val for early stopping).

    Parameters
    ----------
    params : dict
        The model's section of ``params.yaml`` (keyword arguments of its ``models.fit_*``).
    augmented : Augmented, optional
        Extra training examples (:func:`augment_clips`); never used for validation or statistics.

    Returns
    -------
    fitted : the model object
    meta : dict
        Bundle metadata (kind, labels, feature columns, standardization statistics).
    history : dict
        Per-epoch training curves (empty for the forest).
    """
    labels = sorted(table["label"].astype(str).unique())
    index = {lab: i for i, lab in enumerate(labels)}
    train = table[table["split"] == "train"]
    val = table[table["split"] == "val"]
    if train.empty:
        raise ValueError("train: the train split is empty")
    if len(labels) < 2:
        raise ValueError(f"train: need at least 2 labels, got {labels}")
    extra = augmented.rows if augmented is not None and len(augmented) else None
    if extra is not None and not set(extra["label"].astype(str)) <= set(labels):
        raise ValueError("train: augmented rows carry labels that are not in the table")
    y_train = train["label"].astype(str).map(index).to_numpy(np.int64)
    y_val = val["label"].astype(str).map(index).to_numpy(np.int64)
    y_extra = extra["label"].astype(str).map(index).to_numpy(np.int64) if extra is not None else np.zeros(0, np.int64)
    cols = feature_columns(table)
    meta: dict[str, Any] = {"model": model, "kind": model, "labels": labels, "feature_columns": cols,
                            "training": {"n_train": int(len(train)), "n_val": int(len(val)),
                                         "n_augmented": int(len(y_extra))}}
    history: dict[str, list[float]] = {}

    def summary_x(rows: pd.DataFrame) -> np.ndarray:
        return rows[cols].to_numpy(np.float32)

    X_train = summary_x(train)
    X_all = np.concatenate([X_train, summary_x(extra)]) if extra is not None else X_train
    y_all = np.concatenate([y_train, y_extra])
    if model == "random_forest":
        fitted = models.fit_random_forest(X_all, y_all, seed=seed, n_jobs=n_jobs, **params)
    elif model == "keras_mlp":
        # Statistics of the real clips only: augmented copies must not move the reference.
        scaler = models.fit_scaler(X_train)
        meta["standardizer"] = models.scaler_to_dict(scaler)
        X_val = scaler.transform(summary_x(val).astype(np.float64)) if len(val) else None
        fitted, history = models.fit_keras_mlp(scaler.transform(X_all.astype(np.float64)), y_all, X_val,
                                               y_val if len(val) else None, n_classes=len(labels), seed=seed, **params)
    elif model == "keras_cnn":
        if logmel_dir is None or logmel_stats is None:
            raise ValueError("keras_cnn needs the log-mel folder and the train log-mel statistics")
        def standardize(spec: np.ndarray) -> np.ndarray:
            return models.standardize_logmel(spec, mean=logmel_stats["mean"], std=logmel_stats["std"])

        p = dict(params)
        spec_augment = p.pop("spec_augment", None)
        # Memory maps, cropped and standardized batch by batch: memory follows the batch, not the data set.
        train_specs = load_logmels(train, logmel_dir)
        if extra is not None:
            if len(augmented.logmels) != len(extra):
                raise ValueError("train: augmented rows come without their log-mels")
            train_specs += augmented.logmels
        val_specs = load_logmels(val, logmel_dir) if len(val) else None
        fitted, history = models.fit_keras_cnn(train_specs, y_all, val_specs, y_val if len(val) else None,
                                               n_classes=len(labels), seed=seed, spec_augment_params=spec_augment,
                                               standardize=standardize, **p)
        meta["logmel_stats"] = {"mean": np.asarray(logmel_stats["mean"]).tolist(),
                                "std": np.asarray(logmel_stats["std"]).tolist()}
        # The crop the network takes (crop_frames: auto resolves it from the train clips), as fit_keras_cnn used it.
        crop = int(fitted.input_shape[2])
        meta["cnn"] = {"crop_frames": crop, "hop_frames": min(int(p.get("hop_frames") or max(1, crop // 2)), crop)}
    else:
        raise ValueError(f"train.models: unknown model {model!r}")
    return fitted, meta, history


def train(*, model: str, table_path: str | Path, folds_path: str | Path, fold: str, out_dir: str | Path,
          params: dict[str, Any], seed: int,
          process_params: dict[str, Any], feature_params: dict[str, Any], experiment: str,
          tracking_uri: str, tags: dict[str, str], flat_params: dict[str, Any], n_jobs: int = 1,
          logmel_dir: str | Path | None = None, stats_path: str | Path | None = None,
          augment: dict[str, Any] | None = None, process_dir: str | Path | None = None,
          n_shards: int | None = None,
          data_root: str | Path | None = None, manifest_path: str | Path | None = None) -> Bundle:
    """Fit, bundle and log one model on one fold; the MLflow run id is stored in the bundle for ``evaluate``.

    The rows are those of ``table_path`` (the features table) that the split's ``folds_path``
    (``data/split/folds.csv``) assigns in ``fold`` (:func:`soundstage.split.rows_of_fold`): its
    train clips are fitted, its val clips stop the training early. ``augment`` (``copies`` + the
    ranges of :func:`augment_clips`), when given, adds augmented copies of the train clips, read
    from the process stage's ``process_dir`` (its first ``n_shards`` shards). The MLflow run gets
    ``flat_params`` as params,
    ``tags`` (git commit, data versions...), tag ``split.hash`` (:func:`soundstage.split.assignment_hash`
    of the whole folds table) and tag ``soundstage.fold``, the training curves, the bundle (as artifacts under
    ``bundle/``), the model with its MLflow flavor (``sklearn`` in skops format, or ``keras``) as
    ``model``, and the whole chain as the pyfunc model ``pipeline`` (:func:`soundstage.pyfunc.log_pipeline`:
    audio in, label and probabilities out), registered as a new version of the registered model named
    ``experiment``.
    The bundle records ``params_hash``, :func:`soundstage.cache.key_of` of ``flat_params``, the
    split hash as ``training.split_hash`` and the fold as ``training.fold``.

    The run's dataset input (context ``training``, :func:`soundstage.tracking.log_dataset`) is named
    after tag ``data.name`` (else ``experiment``), versioned by the data tags in ``tags``, sourced at
    ``data_root`` (else the features table) and profiled on the whole features table, with hours of
    audio from the ingest manifest ``manifest_path`` (:func:`soundstage.tracking.dataset_profile`).

    When training raises, the run ends FAILED with the error recorded on it and the exception propagates
    (see :func:`soundstage.tracking.start_run`); an ``OSError`` writing the bundle names the file.
    """
    import mlflow

    from soundstage.features_core import FeatureConfig
    from soundstage.pyfunc import log_pipeline
    from soundstage.split import assignment_hash, read_folds, rows_of_fold
    from soundstage.tracking import FOLD_TAG, SPLIT_HASH_TAG, dataset_profile, log_dataset, start_run

    folds = read_folds(folds_path)
    features = pd.read_parquet(table_path)
    # Of the whole table: MLflow keeps one profile per dataset version, which the folds share.
    profile = dataset_profile(features, manifest_path=manifest_path)
    table = rows_of_fold(features, folds, fold)
    del features
    # A tag, not a param: params_hash must stay what `evaluate --summary` recomputes from params.yaml alone.
    split_hash = assignment_hash(folds)
    stats = dict(np.load(stats_path)) if stats_path is not None else None
    single = folds["fold"].astype(str).nunique() == 1
    with start_run(experiment=experiment, run_name=model if single else f"{model} fold {fold}", uri=tracking_uri,
                   tags={"model": model, **tags, SPLIT_HASH_TAG: split_hash, FOLD_TAG: str(fold)}) as run:
        mlflow.log_params({k: ("None" if v is None else v) for k, v in flat_params.items()})
        log_dataset(name=tags.get("data.name", experiment), tags=tags, source=data_root or table_path,
                    profile=profile)
        augmented = None
        if augment:
            from soundstage.process import read_index

            if process_dir is None:
                raise ValueError("augment: needs the process stage's folder")
            t0 = time.perf_counter()
            augmented = augment_clips(rows=table[table["split"] == "train"], process_dir=process_dir,
                                      index=read_index(process_dir, n_shards),
                                      feature_config=FeatureConfig.from_dict(feature_params), seed=seed,
                                      copies=int(augment.get("copies", 1)), logmels=model == "keras_cnn",
                                      **{k: augment.get(k) for k in AUGMENT_TRANSFORMS})
            mlflow.log_metric("augment_seconds", time.perf_counter() - t0)
        t0 = time.perf_counter()
        fitted, meta, history = fit(model=model, table=table, params=params, seed=seed, n_jobs=n_jobs,
                                    logmel_dir=logmel_dir, logmel_stats=stats, augmented=augmented)
        mlflow.log_metric("fit_seconds", time.perf_counter() - t0)
        mlflow.log_metrics({f"{k}_clips": v for k, v in meta["training"].items()})
        for name, values in history.items():
            for step, value in enumerate(values):
                mlflow.log_metric(f"history_{name}", float(value), step=step)
        if history.get("loss"):
            mlflow.log_metric("epochs_trained", len(history["loss"]))
            if history.get("val_loss"):
                mlflow.log_metric("best_val_loss", float(np.min(history["val_loss"])))
        meta["training"]["augment"] = dict(augment) if augment else None
        meta["training"]["split_hash"] = split_hash
        meta["training"]["fold"] = str(fold)
        meta.update({"params": params, "seed": seed, "process": process_params, "features": feature_params,
                     "mlflow": {"tracking_uri": tracking_uri, "experiment": experiment, "run_id": run.info.run_id},
                     "tags": tags, "params_hash": key_of(flat_params)})
        bundle = save_bundle(out_dir, model=fitted, meta=meta)
        curves = history_table(history)
        write_csv(Path(out_dir) / HISTORY_FILE, curves)
        if len(curves):
            plot_history(curves, Path(out_dir) / CURVES_FILE, title=f"{model}, fold {fold}")
        # The whole bundle: `soundstage predict` works on a copy downloaded from MLflow.
        mlflow.log_artifacts(str(out_dir), artifact_path="bundle")
        _log_model(fitted, model, example=_example_input(fitted, model, table, meta))
        # The whole chain (audio in, label out), registered as a new version of the experiment's model.
        log_pipeline(out_dir, registered_model_name=experiment)
    return bundle


def history_table(history: dict[str, list[float]]) -> pd.DataFrame:
    """The per-epoch curves of :func:`fit` as a table: ``epoch`` (1 for the first pass over the data),
    then :data:`HISTORY_CURVES` (blank where the fit did not record one, e.g. without val clips), then
    any other curve in ``history`` order. No rows for an empty ``history`` (the forest).

    Raises
    ------
    ValueError
        The curves differ in length.
    """
    lengths = {len(v) for v in history.values()}
    if len(lengths) > 1:
        raise ValueError(f"training history: curves of different lengths ({sorted(lengths)} epochs)")
    n = lengths.pop() if lengths else 0
    columns = [*HISTORY_CURVES, *(k for k in history if k not in HISTORY_CURVES)]
    table = pd.DataFrame({"epoch": np.arange(1, n + 1, dtype=np.int64)})
    for name in columns:
        table[name] = np.asarray(history[name], dtype=np.float64) if name in history else np.full(n, np.nan)
    return table


def plot_history(curves: pd.DataFrame, path: str | Path, *, title: str) -> None:
    """Write the training curves (:func:`history_table`) as a PNG: loss and accuracy per epoch, train
    and val, with the epoch of the lowest val loss (the weights early stopping keeps) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, curve in zip(axes, ("loss", "accuracy"), strict=True):
        for name, style in ((curve, "-"), (f"val_{curve}", "--")):
            if name in curves and curves[name].notna().any():
                ax.plot(curves["epoch"], curves[name], style, label=name.replace("_", " "))
        if "val_loss" in curves and curves["val_loss"].notna().any():
            best = int(curves.loc[curves["val_loss"].idxmin(), "epoch"])
            ax.axvline(best, color="grey", linewidth=0.8, linestyle=":", label=f"best val loss (epoch {best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(curve)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _example_input(fitted: Any, model: str, table: pd.DataFrame, meta: dict[str, Any]) -> np.ndarray:
    """A two-row input in the layout the bare model takes (for the MLflow signature)."""
    if model == "keras_cnn":
        shape = tuple(int(d) for d in fitted.input_shape[1:])
        return np.zeros((2, *shape), dtype=np.float32)
    X = table[meta["feature_columns"]].head(2).to_numpy(np.float32)
    if model == "keras_mlp":
        X = models.scaler_from_dict(meta["standardizer"]).transform(X.astype(np.float64)).astype(np.float32)
    return X


def _log_model(fitted: Any, model: str, *, example: np.ndarray | None = None) -> Any:
    """Log the bare model with its MLflow flavor: ``sklearn`` (skops format, no pickle) or ``keras``.

    A forest is logged with ``skops_trusted_types=models.TRUSTED_SKOPS_TYPES``, the list the bundle
    loader trusts; one holding a type outside that list raises ``ValueError`` and nothing is logged.

    The signature maps the model's direct input (summary rows for the forest, *standardized* rows
    for the dense net, standardized ``(n_mels, crop_frames, 1)`` crops for the CNN) to class
    probabilities (the forest's pyfunc predicts with ``predict_proba``). Requirements are pinned
    from the installed versions instead of MLflow's slow inference in a subprocess. Returns the
    ``ModelInfo``.
    """
    import importlib.metadata as md

    import mlflow
    from mlflow.models import infer_signature

    def pins(*dists: str) -> list[str]:
        out = []
        for d in dists:
            try:
                out.append(f"{d}=={md.version(d)}")
            except md.PackageNotFoundError:
                out.append(d)
        return out

    if model == "random_forest":
        import skops.io as sio

        signature = None
        if example is not None:
            signature = infer_signature(example, fitted.predict_proba(example))
        untrusted = sio.get_untrusted_types(data=sio.dumps(fitted))
        rejected = sorted(set(untrusted) - set(models.TRUSTED_SKOPS_TYPES))
        if rejected:
            raise ValueError(f"random forest holds types outside models.TRUSTED_SKOPS_TYPES: {', '.join(rejected)}")
        return mlflow.sklearn.log_model(fitted, name="model", serialization_format="skops",
                                        skops_trusted_types=list(models.TRUSTED_SKOPS_TYPES), signature=signature,
                                        pyfunc_predict_fn="predict_proba",
                                        pip_requirements=pins("scikit-learn", "skops", "numpy"))
    signature = None
    if example is not None:
        signature = infer_signature(example, np.asarray(fitted.predict(example, verbose=0)))
    return mlflow.keras.log_model(fitted, name="model", signature=signature,
                                  pip_requirements=pins("keras", "jax", "jaxlib", "numpy"))
