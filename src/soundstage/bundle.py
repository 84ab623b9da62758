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

    def predict(self, *, summary: np.ndarray | None = None, logmels: list[np.ndarray] | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_labels)`` from summary rows (RF, MLP) or log-mels (CNN).

        ``summary`` columns must be in ``meta["feature_columns"]`` order; ``logmels`` are raw
        (un-normalized) ``(n_mels, t)`` matrices: the bundle applies its own statistics.
        """
        n_classes = len(self.labels)
        if self.kind == "keras_cnn":
            if logmels is None:
                raise ValueError("a CNN bundle predicts from log-mels")
            mean = np.asarray(self.meta["logmel_stats"]["mean"], dtype=np.float64)
            std = np.asarray(self.meta["logmel_stats"]["std"], dtype=np.float64)
            specs = [((np.asarray(s, dtype=np.float64) - mean[:, None]) / np.maximum(std[:, None], 1e-8)).astype(np.float32)
                     for s in logmels]
            cnn = self.meta["cnn"]
            return models.predict_cnn(self.model, specs, crop_frames=cnn["crop_frames"], hop_frames=cnn["hop_frames"])
        if summary is None:
            raise ValueError(f"a {self.kind} bundle predicts from summary features")
        X = np.asarray(summary, dtype=np.float32)
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


def load_bundle(directory: str | Path) -> Bundle:
    import json

    directory = Path(directory)
    meta_file = directory / "bundle.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{directory}: not a soundstage model bundle (no bundle.json)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: unsupported bundle format {meta.get('format')!r}")
    return Bundle(directory, meta)
