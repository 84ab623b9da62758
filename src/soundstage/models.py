"""Model cores: random forest, dense net (MLP) and log-mel CNN, augmentation and persistence.

Everything here is pure: arrays in, fitted models and arrays out. Reading tables, writing
bundles and logging to MLflow belong to the ``train`` and ``evaluate`` stages, which call these
functions with keyword arguments taken from ``params.yaml``.

Conventions
-----------
- Labels ``y`` are integer class indices ``0 .. n_classes - 1``.
- Summary-feature matrices are ``X [shape=(n_samples, n_features)]``.
- Spectrograms are standardized log-mels ``[shape=(n_mels, n_frames)]`` (zero mean, unit variance
  per mel bin on the train split), so ``0`` is the neutral fill value for padding and masking.
- Randomness is explicit: a ``seed`` (training) or a ``numpy.random.Generator`` (augmentation).
  Keras training never relies on the global NumPy/Python RNG for data order: each epoch's
  permutation and crops come from ``np.random.default_rng([seed, epoch])``, the CNN's masks of
  batch ``i`` from ``np.random.default_rng([seed, epoch, i])``.
- Keras data are ``PyDataset`` objects built batch by batch: memory follows the batch, not the data set.
- Keras fits print one line per epoch to stderr (Keras' progress bar on a terminal).

Keras (JAX backend) is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler

ModelKind = Literal["random_forest", "keras_mlp", "keras_cnn"]
MODEL_KINDS: tuple[str, ...] = ("random_forest", "keras_mlp", "keras_cnn")
MODEL_FILENAMES: dict[str, str] = {
    "random_forest": "model.skops",
    "keras_mlp": "model.keras",
    "keras_cnn": "model.keras",
}
#: Exact names of the types a ``model.skops`` may hold beyond those skops trusts by default: the one
#: list that :func:`load_model` and the MLflow logging of ``train`` trust. It is what
#: ``skops.io.get_untrusted_types`` reports for forests of :func:`fit_random_forest` over the params
#: ``params.yaml`` allows (every ``class_weight``, ``max_depth``, ``max_features``, 2 to 11 classes,
#: float32/float64 features): nothing with skops 0.13 and scikit-learn 1.8, which trust the forest,
#: its trees, ``sklearn.tree._tree.Tree``, arrays and dtypes by default. tests/test_bundle_safety.py
#: refits those forests and fails when this list misses a type they need or holds one they do not.
TRUSTED_SKOPS_TYPES: tuple[str, ...] = ()
#: Top-level packages a ``model.skops`` may name: skops imports the module of some nodes (losses)
#: while auditing, so a file naming any other module is refused before the audit.
SKOPS_PACKAGES: tuple[str, ...] = ("builtins", "numpy", "scipy", "sklearn")
#: Exact Keras objects (``module.class_name``, see :func:`keras_objects`) a ``model.keras`` config may
#: hold: those of :func:`build_mlp` and :func:`build_cnn` networks trained by ``fit_keras_*`` (the
#: optimizer is in the compile config). Anything else (``Lambda``, custom or registered objects, other
#: modules) is refused before Keras reads the file; ``safe_mode`` stays on behind this list.
TRUSTED_KERAS_OBJECTS: tuple[str, ...] = (
    "__keras_tensor__",
    "keras.DTypePolicy",
    "keras.initializers.GlorotUniform",
    "keras.initializers.Ones",
    "keras.initializers.Zeros",
    "keras.layers.BatchNormalization",
    "keras.layers.Conv2D",
    "keras.layers.Dense",
    "keras.layers.Dropout",
    "keras.layers.GlobalAveragePooling2D",
    "keras.layers.InputLayer",
    "keras.layers.MaxPooling2D",
    "keras.layers.ReLU",
    "keras.optimizers.Adam",
    "keras.regularizers.L2",
    "keras.src.models.functional.Functional",
)
#: Largest model file :func:`load_model` opens, on disk and once its archive is decompressed (bytes):
#: far beyond any model of this project, so only a broken or hostile file reaches it.
MAX_MODEL_BYTES = 2 << 30
STD_FLOOR = 1e-8
#: ``keras_cnn.crop_frames: auto`` (:func:`auto_crop_frames`): the crop is this percentile of the training
#: clips' log-mel lengths (frames: the least length 95 % of the clips do not exceed), kept within
#: ``AUTO_CROP_MIN_FRAMES`` (the schema's least ``crop_frames``) .. ``AUTO_CROP_MAX_FRAMES`` (~3 s at 22050 Hz,
#: hop 512).
AUTO_CROP_PERCENTILE = 95.0
AUTO_CROP_MIN_FRAMES = 8
AUTO_CROP_MAX_FRAMES = 128
#: SpecAugment time masks are at most this share of the crop (``time_width`` 16 of 128 frames), so a short
#: crop is not masked whole.
TIME_MASK_SHARE = 1 / 8


def _keras() -> Any:
    """Import Keras with the JAX backend unless the caller chose another one."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def _check_xy(X: np.ndarray, y: np.ndarray, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be 1-D with {len(X)} entries, got shape {y.shape}")
    if len(X) == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or inf")
    return X, y.astype(np.int64)


def _check_labels(y: np.ndarray, n_classes: int) -> None:
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes - 1}], got [{y.min()}, {y.max()}]")


# --------------------------------------------------------------------------------------------
# Random forest
# --------------------------------------------------------------------------------------------


def fit_random_forest(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_estimators: int = 300,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    max_features: str | int | float | None = "sqrt",
    class_weight: Literal["balanced"] | None = "balanced",
    n_jobs: int = 1,
    seed: int,
) -> RandomForestClassifier:
    """Fit a random forest on summary features.

    Parameters
    ----------
    X : np.ndarray [shape=(n_samples, n_features)]
    y : np.ndarray [shape=(n_samples,)], integer class indices
    seed : int
        ``random_state`` of the forest; with a fixed seed (and any ``n_jobs``) the fit is
        reproducible.

    Returns
    -------
    sklearn.ensemble.RandomForestClassifier
        ``classes_`` are the labels present in ``y``; use :func:`predict_proba` with
        ``n_classes`` to get one column per class even if a class was absent.
    """
    from sklearn.ensemble import RandomForestClassifier

    X, y = _check_xy(X, y)
    model = RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        class_weight=class_weight,
        n_jobs=n_jobs,
        random_state=seed,
    )
    model.fit(X, y)
    return model


# --------------------------------------------------------------------------------------------
# Standardization of summary features
# --------------------------------------------------------------------------------------------


def fit_scaler(X: np.ndarray) -> StandardScaler:
    """``sklearn.preprocessing.StandardScaler`` fitted on ``X [shape=(n_samples, n_features)]`` (the
    train split's summary rows), in float64.

    Columns whose standard deviation is below ``STD_FLOOR`` (constant on the train split up to noise)
    get scale 1 rather than ~0, so unseen values there stay moderate instead of growing by 1e8.
    Transform float64 rows (``scaler.transform(X.astype(np.float64))``) to get the numbers
    the dense net was trained on.
    """
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils import assert_all_finite

    X = np.asarray(X, dtype=np.float64)
    assert_all_finite(X)  # StandardScaler would silently skip NaN
    scaler = StandardScaler().fit(X)
    scaler.scale_[scaler.scale_ < STD_FLOOR] = 1.0
    return scaler


def scaler_to_dict(scaler: StandardScaler) -> dict[str, list[float]]:
    """``{"mean": [...], "scale": [...]}``, one float per feature: what a bundle stores (float64
    round-trips exactly through JSON)."""
    return {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}


def scaler_from_dict(d: dict[str, Any]) -> StandardScaler:
    """The scaler a bundle stored with :func:`scaler_to_dict`; a bundle written before the scaler was
    scikit-learn's stores ``std`` instead of ``scale``, floored here as :func:`fit_scaler` floors it."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_ = np.asarray(d["mean"], dtype=np.float64)
    scale = np.asarray(d["scale"] if "scale" in d else d["std"], dtype=np.float64)
    scaler.scale_ = np.where(scale < STD_FLOOR, 1.0, scale)
    scaler.n_features_in_ = len(scaler.mean_)
    return scaler


# --------------------------------------------------------------------------------------------
# Keras plumbing
# --------------------------------------------------------------------------------------------


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _n_train_batches(n: int, batch_size: int) -> int:
    """Full batches only (the remainder changes every epoch anyway): a ragged last batch would
    make JAX compile the train step a second time for its shape."""
    return max(1, n // batch_size)


def _make_shuffled_dataset(
    X: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int
) -> Any:
    """A ``keras.utils.PyDataset`` re-permuting ``(X, y)`` at every epoch from its own RNG."""
    keras = _keras()

    class ShuffledArrays(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self._epoch = 0
            self._order = _epoch_rng(seed, 0).permutation(len(X))

        @property
        def num_batches(self) -> int:
            return _n_train_batches(len(X), batch_size)

        def __len__(self) -> int:
            return self.num_batches

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self._order[i * batch_size : (i + 1) * batch_size]
            return X[idx], y[idx]

        def on_epoch_begin(self) -> None:
            self._epoch += 1
            self._order = _epoch_rng(seed, self._epoch).permutation(len(X))

    return ShuffledArrays()


def _callbacks(
    *, monitor: str, patience: int, lr_factor: float = 0.5, lr_patience: int | None = None
) -> list[Any]:
    """Early stopping (best weights restored) and learning-rate reduction on a plateau of
    ``monitor``; ``lr_patience`` defaults to ``max(2, patience // 3)``."""
    keras = _keras()
    if lr_patience is None:
        lr_patience = max(2, patience // 3)
    return [
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=lr_factor, patience=lr_patience),
    ]


def _history_dict(history: Any) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def _compile(model: Any, learning_rate: float) -> None:
    keras = _keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def epoch_log(name: str, *, epochs: int, stream: Any = None) -> Any:
    """A Keras callback printing one line per epoch to ``stream`` (default: ``sys.stderr`` at print time,
    the job log): ``<name> epoch 3/40: loss 0.81, accuracy 0.71, val_loss 0.65, ..., 12.3 s``."""
    keras = _keras()

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            first = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
            values = ", ".join(f"{k} {float(logs[k]):.4g}" for k in [*first, *(k for k in logs if k not in first)])
            print(f"{name} epoch {epoch + 1}/{epochs}: {values}, {time.perf_counter() - self._t0:.1f} s",
                  file=stream or sys.stderr, flush=True)

    return EpochLog()


def _progress(name: str, *, epochs: int, verbose: int | None) -> tuple[int, list[Any]]:
    """Keras ``verbose`` and extra callbacks. ``verbose=None``: Keras' progress bar when stderr is a
    terminal, else one :func:`epoch_log` line per epoch (a job log has no use for a bar); any other value
    is Keras' own (0: silent)."""
    if verbose is not None:
        return verbose, []
    if sys.stderr.isatty():
        return 1, []
    return 0, [epoch_log(name, epochs=epochs)]


# --------------------------------------------------------------------------------------------
# Dense net on summary features
# --------------------------------------------------------------------------------------------


def build_mlp(
    *,
    n_features: int,
    n_classes: int,
    hidden: Sequence[int] = (256, 128, 64),
    dropout: float = 0.3,
    l2: float = 0.0,
) -> keras.Model:
    """``Input(n_features) -> [Dense(h) + ReLU (+ Dropout)] * len(hidden) -> Dense softmax``.

    The model outputs class probabilities ``[shape=(batch, n_classes)]``. It is not compiled.
    """
    keras = _keras()
    if n_features < 1 or n_classes < 2:
        raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), kernel_regularizer=reg, name=f"dense_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mlp")


def fit_keras_mlp(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    n_classes: int,
    hidden: Sequence[int] = (256, 128, 64),
    dropout: float = 0.3,
    l2: float = 0.0,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    epochs: int = 100,
    patience: int = 10,
    lr_factor: float = 0.5,
    lr_patience: int | None = None,
    seed: int,
    verbose: int | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train :func:`build_mlp` with Adam and sparse categorical cross-entropy.

    ``X_*`` should already be standardized (see :func:`fit_scaler`). Early stopping
    (``patience`` epochs, best weights restored) and learning-rate reduction (times
    ``lr_factor`` after ``lr_patience`` epochs without improvement) watch ``val_loss``
    (``loss`` when no validation set is given).

    Determinism: ``keras.utils.set_random_seed(seed)`` fixes initial weights and dropout
    masks; the per-epoch order comes from ``np.random.default_rng([seed, epoch])`` rather than
    Keras' own shuffle, which draws from the global NumPy RNG on the JAX backend. Each epoch
    uses ``len(X_train) // batch_size`` full batches (the left-over samples differ per epoch).

    Progress: ``verbose=None`` shows Keras' bar when stderr is a terminal, else prints one line per
    epoch to stderr (:func:`epoch_log`); an explicit ``verbose`` is Keras' (0 prints nothing).

    Returns
    -------
    model : keras.Model
    history : dict[str, list[float]]
        Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``learning_rate``.
    """
    keras = _keras()
    X_train, y_train = _check_xy(X_train, y_train, "X_train")
    _check_labels(y_train, n_classes)
    validation = None
    if X_val is not None and y_val is not None and len(X_val):
        X_val, y_val = _check_xy(X_val, y_val, "X_val")
        _check_labels(y_val, n_classes)
        validation = (X_val.astype(np.float32), y_val)

    keras.utils.set_random_seed(seed)
    model = build_mlp(
        n_features=X_train.shape[1], n_classes=n_classes, hidden=hidden, dropout=dropout, l2=l2
    )
    _compile(model, learning_rate)
    data = _make_shuffled_dataset(
        X_train.astype(np.float32), y_train, batch_size=batch_size, seed=seed
    )
    verbose, progress = _progress("keras_mlp", epochs=epochs, verbose=verbose)
    history = model.fit(
        data,
        validation_data=validation,
        epochs=epochs,
        shuffle=False,  # order is handled by the dataset; Keras would use global `random`
        callbacks=_callbacks(monitor="val_loss" if validation else "loss", patience=patience,
                             lr_factor=lr_factor, lr_patience=lr_patience) + progress,
        verbose=verbose,
    )
    return model, _history_dict(history)


# --------------------------------------------------------------------------------------------
# CNN on standardized log-mels
# --------------------------------------------------------------------------------------------


def build_cnn(
    *,
    n_mels: int,
    crop_frames: int,
    n_classes: int,
    filters: Sequence[int] = (16, 32, 64),
    dropout: float = 0.3,
    first_stride: int = 1,
) -> keras.Model:
    """Small 2-D CNN: ``[Conv3x3 - BatchNorm - ReLU - MaxPool2x2] * len(filters)``, global
    average pooling, dropout, dense softmax.

    ``first_stride`` is the stride of the first convolution on both axes: 2 computes every
    later block on a quarter of the positions (about 4x less work on CPU for 128-bin log-mels)
    at a small cost in resolution.

    Input ``[shape=(batch, n_mels, crop_frames, 1)]`` (channels last), output class
    probabilities ``[shape=(batch, n_classes)]``. Not compiled.
    """
    keras = _keras()
    if n_mels < 1 or crop_frames < 1 or n_classes < 2:
        raise ValueError("need n_mels >= 1, crop_frames >= 1 and n_classes >= 2")
    layers = keras.layers
    inputs = keras.Input(shape=(n_mels, crop_frames, 1), name="logmel")
    x = inputs
    for i, f in enumerate(filters):
        # BatchNorm follows, so the conv bias would be redundant.
        x = layers.Conv2D(
            int(f), 3, strides=first_stride if i == 0 else 1, padding="same", use_bias=False,
            data_format="channels_last", name=f"conv_{i}",
        )(x)
        # momentum 0.9 (Keras default 0.99): on a few hundred crops there are only tens of
        # steps per epoch, and slow moving statistics make inference lag far behind training.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn_{i}")(x)
        x = layers.ReLU(name=f"relu_{i}")(x)
        # "same" padding keeps tiny inputs (few mel bins) from collapsing to zero size.
        x = layers.MaxPooling2D(2, padding="same", data_format="channels_last", name=f"pool_{i}")(x)
    x = layers.GlobalAveragePooling2D(data_format="channels_last", name="gap")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="cnn")


def spec_augment(
    x: np.ndarray,
    *,
    rng: np.random.Generator,
    freq_masks: int = 2,
    freq_width: int = 8,
    time_masks: int = 2,
    time_width: int = 16,
) -> np.ndarray:
    """SpecAugment-style masking of a standardized spectrogram (training only).

    Each mask has a width drawn uniformly from ``0 .. width`` (clipped to the axis length) and
    a start drawn uniformly so that it lies within the array; masked cells are set to 0, the
    per-bin mean after standardization.

    Parameters
    ----------
    x : np.ndarray [shape=(n_mels, n_frames)]
        Not modified.
    rng : np.random.Generator

    Returns
    -------
    np.ndarray [shape=(n_mels, n_frames)], same dtype as ``x``
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (n_mels, n_frames) array, got shape {x.shape}")
    out = x.copy()
    for axis, n_masks, width in ((0, freq_masks, freq_width), (1, time_masks, time_width)):
        size = out.shape[axis]
        for _ in range(max(0, int(n_masks))):
            w = int(rng.integers(0, min(int(width), size) + 1))
            start = int(rng.integers(0, size - w + 1))
            if axis == 0:
                out[start : start + w, :] = 0
            else:
                out[:, start : start + w] = 0
    return out


def standardize_logmel(spec: np.ndarray, *, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-bin z-scoring of a log-mel with train statistics (the CNN's input).

    Parameters
    ----------
    spec : np.ndarray [shape=(n_mels, n_frames)], dB
    mean, std : np.ndarray [shape=(n_mels,)]
        Train-split statistics per mel bin; ``std`` below ``STD_FLOOR`` counts as ``STD_FLOOR``.

    Returns
    -------
    np.ndarray [shape=(n_mels, n_frames)], float32 (computed in float64)
    """
    spec = _check_spec(spec)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1)
    std = np.maximum(np.asarray(std, dtype=np.float64).reshape(-1, 1), STD_FLOOR)
    if mean.shape[0] != spec.shape[0] or std.shape[0] != spec.shape[0]:
        raise ValueError(f"statistics for {mean.shape[0]} mel bins, spectrogram has {spec.shape[0]}")
    return ((np.asarray(spec, dtype=np.float64) - mean) / std).astype(np.float32)



def _pad_frames(spec: np.ndarray, crop_frames: int) -> np.ndarray:
    """Right-pad ``spec [n_mels, T]`` with zeros to at least ``crop_frames`` frames."""
    if spec.shape[1] >= crop_frames:
        return spec
    return np.pad(spec, ((0, 0), (0, crop_frames - spec.shape[1])))


def _check_spec(spec: np.ndarray) -> np.ndarray:
    spec = np.asarray(spec)
    if spec.ndim != 2 or spec.shape[0] == 0:
        raise ValueError(f"expected a 2-D (n_mels, n_frames) spectrogram, got shape {spec.shape}")
    return spec


def random_crops(
    spec: np.ndarray, *, crop_frames: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``n`` random time crops of ``crop_frames`` frames.

    Parameters
    ----------
    spec : np.ndarray [shape=(n_mels, T)]
        Clips shorter than ``crop_frames`` are right-padded with 0 (the standardized mean).

    Returns
    -------
    np.ndarray [shape=(n, n_mels, crop_frames)], dtype of ``spec``
    """
    if crop_frames < 1 or n < 0:
        raise ValueError(f"need crop_frames >= 1 and n >= 0, got {crop_frames}, {n}")
    spec = _pad_frames(_check_spec(spec), crop_frames)
    starts = rng.integers(0, spec.shape[1] - crop_frames + 1, size=n)
    return np.stack([spec[:, s : s + crop_frames] for s in starts]) if n else np.empty(
        (0, spec.shape[0], crop_frames), dtype=spec.dtype
    )


def sliding_starts(n_frames: int, *, crop_frames: int, hop_frames: int | None = None) -> list[int]:
    """Start frames of :func:`sliding_crops`: ``0, hop, 2*hop, ...`` plus one flush with the end of a
    clip of ``n_frames`` frames (one start, 0, for a clip shorter than ``crop_frames``)."""
    hop = hop_frames or max(1, crop_frames // 2)
    if crop_frames < 1 or hop < 1:
        raise ValueError(f"need crop_frames >= 1 and hop_frames >= 1, got {crop_frames}, {hop}")
    last = max(int(n_frames), crop_frames) - crop_frames
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:  # cover the tail of the clip too
        starts.append(last)
    return starts


def sliding_crops(spec: np.ndarray, *, crop_frames: int, hop_frames: int | None = None) -> np.ndarray:
    """All crops at :func:`sliding_starts`.

    Returns ``np.ndarray [shape=(n_crops, n_mels, crop_frames)]``; a clip shorter than
    ``crop_frames`` gives one zero-padded crop. ``hop_frames`` defaults to ``crop_frames // 2``.
    """
    starts = sliding_starts(_check_spec(spec).shape[1], crop_frames=crop_frames, hop_frames=hop_frames)
    spec = _pad_frames(np.asarray(spec), crop_frames)
    return np.stack([spec[:, s : s + crop_frames] for s in starts])


def auto_crop_frames(
    n_frames: Sequence[int] | np.ndarray,
    *,
    percentile: float = AUTO_CROP_PERCENTILE,
    min_frames: int = AUTO_CROP_MIN_FRAMES,
    max_frames: int = AUTO_CROP_MAX_FRAMES,
) -> int:
    """The crop length of ``keras_cnn.crop_frames: auto``, from the training clips' lengths.

    The ``percentile``-th percentile of ``n_frames`` (``np.percentile`` method ``inverted_cdf``: the
    least clip length that ``percentile`` % of the clips do not exceed), clipped to
    ``min_frames .. max_frames``. So 95 % of the clips (by default) fit whole in one crop, which is then
    hardly padding, and long clips are still seen through crops of at most ``max_frames`` frames (random
    at training, sliding at inference).

    Parameters
    ----------
    n_frames : sequence of int [shape=(n_clips,)]
        Log-mel frames of each training clip (``spec.shape[1]``).

    Returns
    -------
    int, frames
    """
    lengths = np.asarray(n_frames)
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"need the frame count of at least one clip, got shape {lengths.shape}")
    if not np.issubdtype(lengths.dtype, np.integer) or (lengths < 1).any():
        raise ValueError("frame counts must be positive integers")
    if not 1 <= min_frames <= max_frames:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    q = np.percentile(lengths, percentile, method="inverted_cdf")
    return int(np.clip(q, min_frames, max_frames))


def resolve_crop_frames(crop_frames: int | str, n_frames: Sequence[int] | np.ndarray) -> int:
    """``keras_cnn.crop_frames`` as frames: an integer >= 1 as is, ``"auto"`` by :func:`auto_crop_frames`.

    Raises
    ------
    ValueError
        Naming ``keras_cnn.crop_frames``, for anything else (0, negative, other text, a boolean).
    """
    if isinstance(crop_frames, str) and crop_frames == "auto":
        return auto_crop_frames(n_frames)
    if isinstance(crop_frames, bool) or not isinstance(crop_frames, (int, np.integer)) or crop_frames < 1:
        raise ValueError(f"keras_cnn.crop_frames must be 'auto' or an integer >= 1, got {crop_frames!r}")
    return int(crop_frames)


Standardizer = Callable[[np.ndarray], np.ndarray]


def _read_crops(
    specs: Sequence[Any], clips: np.ndarray, starts: np.ndarray, crop_frames: int, standardize: Standardizer | None
) -> np.ndarray:
    """Frames ``s .. s + crop_frames`` of ``specs[c]`` for each ``(c, s)`` (a memory map reads only those),
    standardized (per bin, so cropping first changes nothing; one call for the whole batch) and
    zero-padded: ``np.ndarray [shape=(len(clips), n_mels, crop_frames)]``, float32."""
    raw = [np.asarray(specs[c][:, s : s + crop_frames]) for c, s in zip(clips, starts, strict=True)]
    if standardize is not None:
        widths = np.cumsum([r.shape[1] for r in raw])[:-1]
        raw = np.split(standardize(np.concatenate(raw, axis=1)), widths, axis=1)
    out = np.zeros((len(raw), raw[0].shape[0] if raw else 0, crop_frames), dtype=np.float32)
    for k, r in enumerate(raw):
        out[k, :, : r.shape[1]] = r
    return out


def _time_mask_cap(augment: dict[str, int] | None, crop_frames: int) -> dict[str, int] | None:
    """``augment`` with ``time_width`` at most ``TIME_MASK_SHARE`` of the crop (at least 1)."""
    if augment is None:
        return None
    cap = max(1, int(crop_frames * TIME_MASK_SHARE))
    return {**augment, "time_width": min(int(augment.get("time_width", 16)), cap)}


def _make_crop_dataset(
    specs: Sequence[Any],
    y: np.ndarray,
    *,
    crop_frames: int,
    crops_per_clip: int,
    batch_size: int,
    augment: dict[str, int] | None,
    seed: int,
    standardize: Standardizer | None = None,
) -> Any:
    """A ``keras.utils.PyDataset`` of random (augmented) crops, read batch by batch.

    ``specs[i]`` is a ``(n_mels, T_i)`` array or memory map; only the crops of the batch asked for are
    read and standardized, so memory follows ``batch_size``, not the data set. Each epoch's crop plan
    (which clip, which start, in which order) comes from ``np.random.default_rng([seed, epoch])``,
    batch ``i``'s masks from ``np.random.default_rng([seed, epoch, i])``: the same batches whatever order
    Keras asks for them in.
    """
    keras = _keras()
    lengths = np.array([int(s.shape[1]) for s in specs], dtype=np.int64)
    clip_of = np.repeat(np.arange(len(specs)), crops_per_clip)
    labels = np.asarray(y, dtype=np.int64)

    class RandomCrops(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self._epoch = 0
            self._plan()

        def _plan(self) -> None:
            rng = _epoch_rng(seed, self._epoch)
            highs = np.maximum(lengths[clip_of], crop_frames) - crop_frames + 1
            starts = rng.integers(0, highs)
            order = rng.permutation(len(clip_of))
            self._clips, self._starts = clip_of[order], starts[order]

        @property
        def num_batches(self) -> int:
            return _n_train_batches(len(clip_of), batch_size)

        def __len__(self) -> int:
            return self.num_batches

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            sl = slice(i * batch_size, (i + 1) * batch_size)
            crops = _read_crops(specs, self._clips[sl], self._starts[sl], crop_frames, standardize)
            if augment is not None:
                rng = np.random.default_rng([seed, self._epoch, i])
                crops = np.stack([spec_augment(c, rng=rng, **augment) for c in crops])
            return crops[..., None], labels[self._clips[sl]]

        def on_epoch_begin(self) -> None:
            self._epoch += 1
            self._plan()

    return RandomCrops()


def _make_sliding_dataset(
    specs: Sequence[Any],
    y: np.ndarray,
    *,
    crop_frames: int,
    hop_frames: int | None,
    batch_size: int,
    standardize: Standardizer | None = None,
) -> Any:
    """A ``keras.utils.PyDataset`` of every clip's :func:`sliding_crops`, each labelled with its clip's
    class, ``batch_size`` crops at a time (the last batch may be short), read batch by batch."""
    keras = _keras()
    pairs = [(c, s) for c, spec in enumerate(specs)
             for s in sliding_starts(int(spec.shape[1]), crop_frames=crop_frames, hop_frames=hop_frames)]
    index = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(y, dtype=np.int64)

    class SlidingCrops(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)

        @property
        def num_batches(self) -> int:
            return -(-len(index) // batch_size)

        def __len__(self) -> int:
            return self.num_batches

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            rows = index[i * batch_size : (i + 1) * batch_size]
            return _read_crops(specs, rows[:, 0], rows[:, 1], crop_frames, standardize)[..., None], labels[rows[:, 0]]

    return SlidingCrops()


def _stack_sliding(
    specs: Sequence[np.ndarray], *, crop_frames: int, hop_frames: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding crops of every clip as ``(crops [N, n_mels, crop_frames, 1], owner [N])``."""
    crops = [sliding_crops(s, crop_frames=crop_frames, hop_frames=hop_frames) for s in specs]
    owner = np.repeat(np.arange(len(crops)), [len(c) for c in crops])
    return np.concatenate(crops)[..., None].astype(np.float32), owner


def fit_keras_cnn(
    train_specs: Sequence[np.ndarray],
    y_train: np.ndarray,
    val_specs: Sequence[np.ndarray] | None,
    y_val: np.ndarray | None,
    *,
    n_classes: int,
    crop_frames: int | str = "auto",
    crops_per_clip: int = 4,
    filters: Sequence[int] = (16, 32, 64),
    dropout: float = 0.3,
    first_stride: int = 1,
    batch_size: int = 32,
    epochs: int = 30,
    patience: int = 5,
    learning_rate: float = 1e-3,
    lr_factor: float = 0.5,
    lr_patience: int | None = None,
    hop_frames: int | None = None,
    spec_augment_params: dict[str, int] | None = None,
    standardize: Standardizer | None = None,
    seed: int,
    verbose: int | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train :func:`build_cnn` on random crops of standardized log-mels.

    The crop length is ``crop_frames``, or with ``"auto"`` :func:`auto_crop_frames` of the training
    clips' lengths; the model's input width (``model.input_shape[2]``) tells which. Every epoch draws
    ``crops_per_clip`` new random crops per training clip (from ``np.random.default_rng([seed, epoch])``)
    and, when ``spec_augment_params`` is given, masks each with :func:`spec_augment` (keys
    ``freq_masks``, ``freq_width``, ``time_masks``, ``time_width``; time masks at most
    ``TIME_MASK_SHARE`` of the crop); only full batches are used. Validation uses the deterministic
    :func:`sliding_crops` of each clip (hop ``hop_frames``, default ``crop_frames // 2``, at most
    ``crop_frames``: the crops :func:`predict_cnn` averages), each labelled with its clip's class.
    Early stopping (``patience`` epochs, best weights restored) and ``ReduceLROnPlateau`` (times
    ``lr_factor`` after ``lr_patience`` epochs) watch ``val_loss`` (``loss`` without a validation set).

    Both crop streams are read batch by batch (:func:`_make_crop_dataset`): pass memory maps
    (:func:`soundstage.features.load_logmels`) and ``standardize``, and memory follows ``batch_size``.
    Progress as in :func:`fit_keras_mlp`.

    Parameters
    ----------
    train_specs, val_specs : sequence of np.ndarray [shape=(n_mels, T_i)]
        ``T_i`` may differ between clips; short clips are zero-padded. Already standardized, or raw dB
        with ``standardize``.
    y_train, y_val : np.ndarray [shape=(n_clips,)], integer class indices
    standardize : callable, optional
        Applied to each crop as it is read (e.g. :func:`standardize_logmel` with the train statistics).

    Returns
    -------
    model : keras.Model
    history : dict[str, list[float]]
    """
    keras = _keras()
    if len(train_specs) == 0:
        raise ValueError("train_specs is empty")
    y_train = np.asarray(y_train)
    if len(y_train) != len(train_specs) or not np.issubdtype(y_train.dtype, np.integer):
        raise ValueError("y_train must hold one integer class index per training clip")
    _check_labels(y_train, n_classes)
    n_mels = _check_spec(train_specs[0]).shape[0]
    for s in (*train_specs, *(val_specs or ())):
        if _check_spec(s).shape[0] != n_mels:
            raise ValueError(f"all spectrograms must have {n_mels} mel bins, got {s.shape}")
    crop_frames = resolve_crop_frames(crop_frames, [int(s.shape[1]) for s in train_specs])
    hop_frames = min(hop_frames or max(1, crop_frames // 2), crop_frames)  # a longer hop would skip frames
    validation = None
    if val_specs is not None and y_val is not None and len(val_specs):
        y_val = np.asarray(y_val)
        if len(y_val) != len(val_specs) or not np.issubdtype(y_val.dtype, np.integer):
            raise ValueError("y_val must hold one integer class index per validation clip")
        _check_labels(y_val, n_classes)
        validation = _make_sliding_dataset(val_specs, y_val, crop_frames=crop_frames, hop_frames=hop_frames,
                                           batch_size=batch_size, standardize=standardize)

    keras.utils.set_random_seed(seed)
    model = build_cnn(
        n_mels=n_mels, crop_frames=crop_frames, n_classes=n_classes, filters=filters,
        dropout=dropout, first_stride=first_stride,
    )
    _compile(model, learning_rate)
    data = _make_crop_dataset(
        train_specs, y_train.astype(np.int64), crop_frames=crop_frames,
        crops_per_clip=crops_per_clip, batch_size=batch_size,
        augment=_time_mask_cap(spec_augment_params, crop_frames), seed=seed, standardize=standardize,
    )
    verbose, progress = _progress("keras_cnn", epochs=epochs, verbose=verbose)
    history = model.fit(
        data,
        validation_data=validation,
        epochs=epochs,
        shuffle=False,
        callbacks=_callbacks(monitor="val_loss" if validation else "loss", patience=patience,
                             lr_factor=lr_factor, lr_patience=lr_patience) + progress,
        verbose=verbose,
    )
    return model, _history_dict(history)


def predict_cnn(
    model: keras.Model,
    specs: Sequence[np.ndarray],
    *,
    crop_frames: int,
    hop_frames: int | None = None,
    batch_size: int = 64,
    max_crops_per_call: int = 4096,
) -> np.ndarray:
    """Whole-clip class probabilities: the mean softmax over all sliding crops of each clip.

    Parameters
    ----------
    specs : sequence of np.ndarray [shape=(n_mels, T_i)]
        Standardized log-mels; clips shorter than ``crop_frames`` are padded to one crop.
    hop_frames : int, optional
        Hop between crop starts; default ``crop_frames // 2``.

    Returns
    -------
    np.ndarray [shape=(n_clips, n_classes)], float64, rows sum to 1
    """
    n_classes = int(model.output_shape[-1])
    expected = model.input_shape[2]
    if expected is not None and expected != crop_frames:
        raise ValueError(f"model takes {expected}-frame crops, got crop_frames={crop_frames}")
    out = np.zeros((len(specs), n_classes), dtype=np.float64)
    # Chunk by clips so that a long evaluation set does not materialise every crop at once.
    start = 0
    while start < len(specs):
        stop, n_crops = start, 0
        while stop < len(specs) and (n_crops == 0 or n_crops < max_crops_per_call):
            n_crops += _n_sliding(np.asarray(specs[stop]).shape[-1], crop_frames, hop_frames)
            stop += 1
        x, owner = _stack_sliding(specs[start:stop], crop_frames=crop_frames, hop_frames=hop_frames)
        probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
        sums = np.zeros((stop - start, n_classes))
        np.add.at(sums, owner, probs)
        out[start:stop] = sums / np.bincount(owner, minlength=stop - start)[:, None]
        start = stop
    return out


def _n_sliding(n_frames: int, crop_frames: int, hop_frames: int | None) -> int:
    """Number of crops :func:`sliding_crops` yields for a clip of ``n_frames`` frames."""
    hop = hop_frames or max(1, crop_frames // 2)
    last = max(n_frames, crop_frames) - crop_frames
    return last // hop + 1 + (last % hop != 0)


# --------------------------------------------------------------------------------------------
# Waveform augmentation
# --------------------------------------------------------------------------------------------


def augment_waveform(
    y: np.ndarray,
    *,
    sr: int,
    rng: np.random.Generator,
    noise_snr_db: tuple[float, float] | None = None,
    time_stretch: tuple[float, float] | None = None,
    pitch_shift: tuple[float, float] | None = None,
    gain_db: tuple[float, float] | None = None,
    keep_length: bool = True,
) -> np.ndarray:
    """Randomly perturb a mono waveform (training only).

    Each transform whose range is not ``None`` is applied once with a value drawn uniformly
    from its ``(low, high)`` range, in this order: time stretch (rate, >1 = faster, via
    ``librosa.effects.time_stretch``), pitch shift (semitones, ``librosa.effects.pitch_shift``),
    gain (dB), additive white Gaussian noise at the drawn SNR (dB, relative to the signal's
    mean power after the other transforms; skipped for an all-zero signal).

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]
    sr : int
        Sample rate in Hz.
    rng : np.random.Generator
        All randomness comes from here: same generator state, same output.
    noise_snr_db, time_stretch, pitch_shift, gain_db : (low, high) or None
        dB, rate (> 0), semitones, dB: ``params.yaml: augment``, whose ranges
        :func:`soundstage.config.validate_params` checks.
    keep_length : bool
        Trim or zero-pad a time-stretched signal back to ``n_samples`` so that fixed-duration
        segments stay fixed.

    Returns
    -------
    np.ndarray [shape=(n_samples,)] (or the stretched length if ``keep_length=False``), float32
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono 1-D signal, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("signal contains NaN or inf")

    n = y.size
    out = y.copy()
    # Draw every parameter up front, in a fixed order, so that enabling one transform does not
    # change the values drawn for another.
    draws = {
        "time_stretch": rng.uniform(*time_stretch) if time_stretch is not None else None,
        "pitch_shift": rng.uniform(*pitch_shift) if pitch_shift is not None else None,
        "gain_db": rng.uniform(*gain_db) if gain_db is not None else None,
        "noise_snr_db": rng.uniform(*noise_snr_db) if noise_snr_db is not None else None,
    }
    if draws["time_stretch"] is not None:
        out = librosa.effects.time_stretch(out, rate=float(draws["time_stretch"]))
        if keep_length:
            out = librosa.util.fix_length(out, size=n)
    if draws["pitch_shift"] is not None:
        out = librosa.effects.pitch_shift(out, sr=sr, n_steps=float(draws["pitch_shift"]))
    if draws["gain_db"] is not None:
        out = out * np.float32(10.0 ** (draws["gain_db"] / 20.0))
    if draws["noise_snr_db"] is not None:
        power = float(np.mean(np.square(out, dtype=np.float64)))
        if power > 0:
            noise_power = power / 10.0 ** (draws["noise_snr_db"] / 10.0)
            out = out + rng.normal(0.0, np.sqrt(noise_power), size=out.shape)
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Prediction and persistence
# --------------------------------------------------------------------------------------------


def predict_proba(
    model: Any, X: np.ndarray, *, kind: ModelKind, n_classes: int | None = None
) -> np.ndarray:
    """Class probabilities ``[shape=(n_samples, n_classes)]`` (float64) for RF or MLP.

    For a random forest trained without some class, pass ``n_classes`` to get one column per
    class (absent classes get probability 0). CNNs take spectrograms: use :func:`predict_cnn`.
    """
    _check_kind(kind)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if kind == "random_forest":
        p = np.asarray(model.predict_proba(X), dtype=np.float64)
        if n_classes is not None and p.shape[1] != n_classes:
            full = np.zeros((len(X), n_classes))
            full[:, np.asarray(model.classes_, dtype=np.int64)] = p
            p = full
        return p
    if kind == "keras_mlp":
        return np.asarray(model.predict(X.astype(np.float32), verbose=0), dtype=np.float64)
    raise ValueError("keras_cnn models take spectrograms: use predict_cnn()")


class UnsafeModelError(ValueError):
    """A model file refused before anything in it is loaded: it could run code, or it is absurdly large."""


def with_filename(exc: OSError, path: Path) -> OSError:
    """A copy of ``exc`` naming ``path``, for an error without a file name: a failed ``write()`` (a full
    disk) names none. The copy is of the same ``OSError`` subclass (chosen by errno)."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return OSError(exc.errno, exc.strerror, str(path))


def save_model(model: Any, directory: Path | str, *, kind: ModelKind) -> Path:
    """Write ``model`` to ``directory/model.skops`` (random forest, skops format, no pickle)
    or ``directory/model.keras`` (Keras native format), atomically. Returns the file path.

    The file is written as ``.<name>.tmp-<pid>-<random><suffix>`` beside it, then renamed
    (:func:`soundstage.io.atomic_path`), and gets the usual ``0o666 & ~umask`` mode, so that a team
    sharing the project folder can read it. An ``OSError`` (a full disk) names the model file.
    """
    from soundstage.io import atomic_path

    _check_kind(kind)
    target = Path(directory) / MODEL_FILENAMES[kind]
    try:
        with atomic_path(target) as tmp:  # keeps the suffix: Keras checks it
            if kind == "random_forest":
                import skops.io as sio

                sio.dump(model, tmp)
            else:
                model.save(tmp)
    except OSError as exc:
        if exc.filename is None:
            raise with_filename(exc, target) from exc
        raise
    return target


def keras_objects(config: Any) -> set[str]:
    """Every object a Keras ``config.json`` would deserialize, as ``module.class_name``.

    An object is a JSON object with a ``class_name``; a ``registered_name`` other than its class name
    (a custom, registered object) is reported as that name, so it cannot pass for a built-in.
    """
    found: set[str] = set()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "class_name" in node:
                module, name = node.get("module"), node["class_name"]
                registered = node.get("registered_name")
                found.add(str(registered) if registered not in (None, name) else
                          f"{module}.{name}" if module else str(name))
            stack.extend(node.values())
    return found


def _archive(path: Path) -> list[zipfile.ZipInfo] | None:
    """The members of the model archive at ``path``, after checking its sizes against ``MAX_MODEL_BYTES``;
    ``None`` when it is no zip archive (the format's loader then refuses it).

    Raises
    ------
    UnsafeModelError
        If the file, or its members once decompressed (a zip bomb), exceed ``MAX_MODEL_BYTES``.
    """
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise UnsafeModelError(f"refusing to load {path}: {size} bytes, more than the {MAX_MODEL_BYTES} a model "
                               f"file may have")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except zipfile.BadZipFile:
        return None
    expanded = sum(m.file_size for m in members)
    if expanded > MAX_MODEL_BYTES:
        raise UnsafeModelError(f"refusing to load {path}: its archive would expand to {expanded} bytes, more than "
                               f"the {MAX_MODEL_BYTES} a model file may have")
    return members


def _read_member_json(path: Path, name: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        try:
            return json.loads(zf.read(name))
        except KeyError:
            raise ValueError(f"{path}: no {name} in the archive") from None
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd nesting
            raise ValueError(f"{path}: {name} is not valid JSON ({type(exc).__name__})") from None


def _load_skops(path: Path, members: list[zipfile.ZipInfo] | None) -> Any:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    if members is not None:
        schema = _read_member_json(path, "schema.json")
        stack, modules = [schema], set()
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                modules.add(str(node.get("__module__", "builtins")))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        allowed = {*SKOPS_PACKAGES, *(t.split(".")[0] for t in TRUSTED_SKOPS_TYPES)}
        foreign = sorted(m for m in modules if m.split(".")[0] not in allowed)
        if foreign:
            raise UnsafeModelError(f"refusing to load {path}: it names modules outside {', '.join(sorted(allowed))}"
                                   f" (auditing it would import them): {', '.join(foreign)}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path}: not a skops file ({type(exc).__name__}: {exc})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_SKOPS_TYPES))
    if refused:
        raise UnsafeModelError(f"refusing to load {path}: it holds types outside the project's models "
                               f"(untrusted): {', '.join(refused)}")
    try:
        # Our list, not the audit's answer: skops audits again as it loads the bytes it reads now.
        model = sio.load(path, trusted=list(TRUSTED_SKOPS_TYPES))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: cannot load the forest ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, RandomForestClassifier):
        raise UnsafeModelError(f"refusing to use {path}: it holds a {type(model).__name__}, not a random forest")
    return model


def _load_keras(path: Path, members: list[zipfile.ZipInfo] | None) -> Any:
    if members is None:
        raise ValueError(f"{path}: not a Keras archive (no zip file)")
    refused = sorted(keras_objects(_read_member_json(path, "config.json")) - set(TRUSTED_KERAS_OBJECTS))
    if refused:
        raise UnsafeModelError(f"refusing to load {path}: its config holds objects outside the project's models: "
                               f"{', '.join(refused)}")
    keras = _keras()
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def load_model(directory: Path | str, *, kind: ModelKind) -> Any:
    """Load a model written by :func:`save_model`, refusing any file that could run code.

    Both formats are zip archives, refused when larger than ``MAX_MODEL_BYTES`` on disk or decompressed.
    skops files may name modules of ``SKOPS_PACKAGES`` only, and hold no type outside skops' defaults
    and ``TRUSTED_SKOPS_TYPES`` (checked with ``skops.io.get_untrusted_types`` before loading); the
    result must be a random forest. Keras files may hold no object outside ``TRUSTED_KERAS_OBJECTS``,
    and are loaded with ``safe_mode`` (no Python lambdas), uncompiled (inference only).

    Raises
    ------
    FileNotFoundError
        No model file.
    UnsafeModelError
        A file refused as unsafe or absurdly large; its message names the file and the offending types.
    ValueError
        A file that is no valid model of ``kind``.
    """
    _check_kind(kind)
    path = Path(directory) / MODEL_FILENAMES[kind]
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} model at {path}")
    members = _archive(path)
    if kind == "random_forest":
        return _load_skops(path, members)
    return _load_keras(path, members)
