"""``soundstage predict BUNDLE FILE...``: label and class probabilities for new audio files.

Applies exactly the training-time chain stored in the bundle: decode → ``process`` parameters →
features from one STFT → the bundle's own normalization → model; segments of a file (when the
bundle was trained on segmented audio) are averaged, as in evaluation. A file that cannot be
decoded gets a per-file error; the others are still predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage.audio import AudioError, ProcessConfig, load_audio, preprocess
from soundstage.bundle import Bundle, load_bundle
from soundstage.features import clip_features
from soundstage.features_core import FeatureConfig


@dataclass
class PredictError:
    file: str
    reason: str
    message: str


def predict_file(bundle: Bundle, path: str | Path) -> np.ndarray:
    """Class probabilities ``(n_labels,)`` of one file (mean over its segments)."""
    pconf = ProcessConfig.from_dict(bundle.meta["process"])
    fconf = FeatureConfig.from_dict(bundle.meta["features"])
    y, sr = load_audio(path)
    segments, out_sr = preprocess(y, sr=sr, config=pconf)
    summaries, logmels = [], []
    for seg in segments:
        feats, summary = clip_features(seg.audio, sr=out_sr, config=fconf)
        summaries.append([summary[c] for c in bundle.meta["feature_columns"]])
        logmels.append(feats["logmel"])
    if bundle.kind == "keras_cnn":
        probs = bundle.predict(logmels=logmels)
    else:
        probs = bundle.predict(summary=np.asarray(summaries, dtype=np.float32))
    return probs.mean(axis=0)


def predict(*, bundle_dir: str | Path, files: list[str | Path]) -> tuple[pd.DataFrame, list[PredictError]]:
    """Predict every file; returns ``(table, errors)`` with table columns ``file, label, p_<label>...``."""
    bundle = load_bundle(bundle_dir)
    rows, errors = [], []
    for f in files:
        try:
            probs = predict_file(bundle, f)
        except AudioError as exc:
            errors.append(PredictError(str(f), exc.reason, str(exc)))
            continue
        except FileNotFoundError as exc:
            errors.append(PredictError(str(f), "missing_file", f"{f}: {exc}"))
            continue
        rows.append({"file": str(f), "label": bundle.labels[int(np.argmax(probs))],
                     **{f"p_{lab}": float(p) for lab, p in zip(bundle.labels, probs, strict=True)}})
    columns = ["file", "label", *(f"p_{lab}" for lab in bundle.labels)]
    return pd.DataFrame(rows, columns=columns), errors
