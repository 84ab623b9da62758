"""``soundstage predict BUNDLE FILE...``: label and class probabilities for new audio files.

Applies exactly the training-time chain stored in the bundle, as the pipeline does:
decode (:func:`~soundstage.decode.load_audio`) → the bundle's ``process`` parameters
(:func:`~soundstage.dsp.preprocess`, float32 segments, as written by the ``process`` stage) →
features from one STFT (:func:`~soundstage.features.clip_features` with the bundle's ``features``
parameters; log-mels as float32, as the ``features`` stage stores them) → the bundle's own
standardization → model. Segments of a file (when the bundle was trained on segmented audio) are
averaged, as ``evaluate`` averages a clip's segments. A file that cannot be used (missing,
undecodable, silent, too short...) gets a per-file error; the others are still predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from soundstage.bundle import Bundle, load_bundle
from soundstage.decode import AudioError, load_audio
from soundstage.dsp import preprocess, to_mono
from soundstage.features import clip_features


@dataclass
class PredictError:
    """Why one file was not predicted: ``reason`` is the code of :class:`~soundstage.decode.AudioError`
    (``not_found``, ``unreadable``, ``not_audio``, ``truncated``, ``silent``, ``too_short``,
    ``cannot_process``...); ``message`` names the file."""

    file: str
    reason: str
    message: str


def file_features(bundle: Bundle, path: str | Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Training-time features of every segment of one file: :func:`samples_features` of its decode.

    Returns
    -------
    summary : np.ndarray [shape=(n_segments, n_features)], float32
        Columns in the bundle's ``feature_columns`` order.
    logmels : list of np.ndarray [shape=(n_mels, n_frames)], float32, dB

    Raises
    ------
    AudioError
        Naming ``path``, for any file that cannot be decoded or preprocessed.
    """
    try:
        y, sr = load_audio(path, mono=bundle.process_config.mono)
    except AudioError as exc:
        raise (exc.with_path(path) if exc.path is None else exc) from None
    except (ValueError, MemoryError) as exc:
        raise AudioError(path, "cannot_process", f"{type(exc).__name__}: {exc}") from None
    return samples_features(bundle, y, sr=sr, source=path)


def samples_features(bundle: Bundle, y: np.ndarray, *, sr: int,
                     source: str | Path | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Training-time features of every segment of one decoded clip (a file, or a window of a stream).

    Parameters
    ----------
    y : np.ndarray [shape=(channels, n) or (n,)], float32
        At the native rate ``sr`` (Hz), as :func:`~soundstage.decode.load_audio` returns it (already
        downmixed when the bundle's ``process.mono`` is set).
    source : path-like or str, optional
        Named in errors.

    Returns
    -------
    summary, logmels
        As :func:`file_features`.

    Raises
    ------
    AudioError
        Naming ``source``: ``silent``, ``too_short``, ``cannot_process``.
    """
    pconf, fconf = bundle.process_config, bundle.feature_config
    try:
        segments, out_sr = preprocess(y, sr=sr, config=pconf)
    except AudioError as exc:
        raise (exc.with_path(source) if exc.path is None and source is not None else exc) from None
    except (ValueError, MemoryError) as exc:
        raise AudioError(source, "cannot_process", f"{type(exc).__name__}: {exc}") from None
    if not segments:
        raise AudioError(source, "too_short", "no segment left after preprocessing")
    columns = bundle.meta["feature_columns"]
    summaries, logmels = [], []
    for seg in segments:
        # With process.mono: false the features stage downmixes the stored (n, channels) frames with
        # decode.downmix_frames; to_mono of the (channels, n) segment gives the same numbers.
        audio = to_mono(seg.audio)
        feats, summary = clip_features(audio, sr=out_sr, config=fconf)
        missing = [c for c in columns if c not in summary]
        if missing:
            raise ValueError(f"bundle expects features {missing[:3]}... that its feature params do not produce")
        summaries.append([summary[c] for c in columns])
        if "logmel" in feats:
            logmels.append(np.ascontiguousarray(feats["logmel"], dtype=np.float32))
    return np.asarray(summaries, dtype=np.float32), logmels


def predict_features(bundle: Bundle, summary: np.ndarray, logmels: list[np.ndarray]) -> np.ndarray:
    """Class probabilities ``[shape=(n_labels,)]`` of one clip from its segments' features (their mean)."""
    if bundle.kind == "keras_cnn":
        probs = bundle.predict(logmels=logmels)
    else:
        probs = bundle.predict(summary=summary)
    return probs.mean(axis=0)


def predict_samples(bundle: Bundle, y: np.ndarray, *, sr: int, source: str | Path | None = None) -> np.ndarray:
    """Class probabilities ``[shape=(n_labels,)]`` of one decoded clip (see :func:`samples_features`)."""
    return predict_features(bundle, *samples_features(bundle, y, sr=sr, source=source))


def predict_file(bundle: Bundle, path: str | Path) -> np.ndarray:
    """Class probabilities ``[shape=(n_labels,)]`` of one file (mean over its segments)."""
    return predict_features(bundle, *file_features(bundle, path))


def predict_bytes(bundle: Bundle, data: bytes, *, name: str = "audio") -> np.ndarray:
    """Class probabilities ``[shape=(n_labels,)]`` of one audio file given as its bytes (an upload, an
    MLflow request): :func:`predict_file` on those bytes written to a private temporary file.

    Raises
    ------
    AudioError
        Naming ``name`` (not the temporary file), for bytes that cannot be decoded or preprocessed.
    """
    import tempfile

    # A file, not a buffer: load_audio's checks (MPEG frame walk, lengths) work on paths, so bytes and
    # files take one decoding path and give the same numbers.
    with tempfile.TemporaryDirectory(prefix="soundstage-predict-") as tmp:
        path = Path(tmp) / "audio"
        path.write_bytes(data)
        try:
            return predict_file(bundle, path)
        except AudioError as exc:
            raise AudioError(name, exc.reason, exc.detail.replace(str(path), name)) from None


def predict(*, bundle_dir: str | Path, files: list[str | Path]) -> tuple[pd.DataFrame, list[PredictError]]:
    """Predict every file; returns ``(table, errors)``.

    ``table`` has one row per predicted file, in input order: ``file, label, p_<label>...``
    (probabilities in the bundle's label order); ``errors`` one :class:`PredictError` per file
    that could not be predicted.

    Raises
    ------
    FileNotFoundError, ValueError
        For the bundle itself (see :func:`~soundstage.bundle.load_bundle`), before any file is read:
        a missing or invalid ``bundle.json``, a model file refused as unsafe
        (:class:`~soundstage.models.UnsafeModelError`) or not matching ``bundle.json``.
    """
    bundle = load_bundle(bundle_dir)
    # Load (and audit) the model before any file: a refused model is one clear error, not one per file.
    bundle.model  # noqa: B018
    rows, errors = [], []
    for f in files:
        try:
            probs = predict_file(bundle, f)
        except AudioError as exc:
            errors.append(PredictError(str(f), exc.reason, str(exc)))
            continue
        except OSError as exc:  # a folder, a permission problem...
            errors.append(PredictError(str(f), "unreadable", f"{f}: {exc}"))
            continue
        rows.append({"file": str(f), "label": bundle.labels[int(np.argmax(probs))],
                     **{f"p_{lab}": float(p) for lab, p in zip(bundle.labels, probs, strict=True)}})
    columns = ["file", "label", *(f"p_{lab}" for lab in bundle.labels)]
    return pd.DataFrame(rows, columns=columns), errors
