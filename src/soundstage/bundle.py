"""Self-contained model bundles: everything ``predict`` needs to reproduce evaluation.

A bundle folder (``models/<model>/``) holds ``bundle.json`` — model name and kind, label list,
feature columns, the processing and feature parameters used in training, normalization statistics
(the summary-feature standardizer for the dense net, the train log-mel mean/std for the CNN) — and
the model file (``model.skops`` for scikit-learn, never a pickle; ``model.keras`` for Keras).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundstage import models
from soundstage.io import write_json

FORMAT = "soundstage-bundle/1"
KINDS = ("random_forest", "keras_mlp", "keras_cnn")


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
        if self._model is None:
            self._model = models.load_model(self.directory, kind=self.kind)
        return self._model

    @property
    def process_config(self) -> Any:
        """The training-time :class:`soundstage.audio.ProcessConfig`."""
        from soundstage.audio import ProcessConfig

        return ProcessConfig.from_dict(self.meta["process"])

    @property
    def feature_config(self) -> Any:
        """The training-time :class:`soundstage.features_core.FeatureConfig`."""
        from soundstage.features_core import FeatureConfig

        return FeatureConfig.from_dict(self.meta["features"])

    def predict(self, *, summary: np.ndarray | None = None, logmels: list[np.ndarray] | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_labels)`` from summary rows (RF, MLP) or log-mels (CNN).

        ``summary`` columns must be in ``meta["feature_columns"]`` order; ``logmels`` are raw
        (un-normalized) ``(n_mels, t)`` matrices: the bundle applies its own statistics.
        """
        n_classes = len(self.labels)
        if self.kind == "keras_cnn":
            if logmels is None:
                raise ValueError("a CNN bundle predicts from log-mels")
            stats = self.meta["logmel_stats"]
            specs = [models.normalize_logmel(s, mean=stats["mean"], std=stats["std"]) for s in logmels]
            cnn = self.meta["cnn"]
            return models.predict_cnn(self.model, specs, crop_frames=cnn["crop_frames"], hop_frames=cnn["hop_frames"])
        if summary is None:
            raise ValueError(f"a {self.kind} bundle predicts from summary features")
        X = np.asarray(summary, dtype=np.float32)
        n_cols = len(self.meta["feature_columns"])
        if X.ndim != 2 or X.shape[1] != n_cols:
            raise ValueError(f"summary must have shape (n, {n_cols}) (the bundle's feature_columns), got {X.shape}")
        if self.kind == "keras_mlp":
            X = models.Standardizer.from_dict(self.meta["standardizer"]).transform(X)
        return models.predict_proba(self.model, X, kind=self.kind, n_classes=n_classes)


def save_bundle(directory: str | Path, *, model: Any, meta: dict[str, Any]) -> Bundle:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if meta["kind"] not in KINDS:
        raise ValueError(f"unknown model kind {meta['kind']!r}")
    models.save_model(model, directory, kind=meta["kind"])
    write_json(directory / "bundle.json", {"format": FORMAT, **meta})
    return Bundle(directory, {"format": FORMAT, **meta}, model)


#: Metadata every bundle carries, and what each kind adds.
REQUIRED = ("model", "kind", "labels", "feature_columns", "process", "features")
REQUIRED_BY_KIND = {"random_forest": (), "keras_mlp": ("standardizer",), "keras_cnn": ("logmel_stats", "cnn")}


def load_bundle(directory: str | Path) -> Bundle:
    """Read ``directory/bundle.json`` and check it (the model file itself is loaded lazily)."""
    import json

    directory = Path(directory)
    meta_file = directory / "bundle.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{directory}: not a soundstage model bundle (no bundle.json)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_file}: unsupported bundle format {found!r}")
    if meta.get("kind") not in KINDS:
        raise ValueError(f"{meta_file}: unknown model kind {meta.get('kind')!r}")
    missing = [k for k in (*REQUIRED, *REQUIRED_BY_KIND[meta["kind"]]) if k not in meta]
    if missing:
        raise ValueError(f"{meta_file}: incomplete bundle, missing {', '.join(missing)}")
    model_file = directory / models.MODEL_FILENAMES[meta["kind"]]
    if not model_file.is_file():
        raise FileNotFoundError(f"{directory}: bundle has no model file {model_file.name}")
    return Bundle(directory, meta)
