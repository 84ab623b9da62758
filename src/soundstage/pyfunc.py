"""The whole prediction chain as an MLflow ``pyfunc`` model: audio bytes or paths in, label and
class probabilities out.

:class:`PipelineModel` carries a model bundle (``bundle.json`` + model file, see
:mod:`soundstage.bundle`) as the MLflow artifact ``bundle`` and predicts with the installed
``soundstage`` package: decode → the bundle's ``process`` parameters → features → its standardization →
model, through :func:`soundstage.predict.predict_file` / :func:`~soundstage.predict.predict_bytes`, the
functions of ``soundstage predict``; so MLflow, ``mlflow models serve`` and the CLI give the same numbers.

It is logged as a model *from code* (:func:`log_pipeline`): MLflow stores the file
``_pyfunc_entry.py``, which imports this class, and the bundle, never a pickle of our objects; loading
audits the bundle's model file as ``soundstage predict`` does (:func:`soundstage.bundle.load_bundle`).

Input (:func:`signature`): a DataFrame with a binary ``audio`` column (a file's bytes: WAV, FLAC,
OGG, MP3...; base64 in a JSON ``dataframe_split`` request) and/or a string ``path`` column (a file
readable where the model runs). Output: one row per input row, ``label``, ``p_<label>`` per class
(the bundle's label order) and ``error``: a row that cannot be predicted gets ``label`` None, NaN
probabilities and the reason in ``error``; the other rows are still predicted.
"""

from __future__ import annotations

import importlib.metadata as md
import io
import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

#: The artifact key of the bundle folder inside the MLflow model.
BUNDLE_ARTIFACT = "bundle"
#: The model's name inside its run: ``runs:/<run_id>/pipeline``.
MODEL_NAME = "pipeline"
#: The models-from-code file MLflow stores with the model.
ENTRY_FILE = Path(__file__).with_name("_pyfunc_entry.py")
#: Largest audio file one row may carry, in bytes: more is refused for that row (a bound on what a
#: server accepts to decode, not a limit of the chain).
MAX_AUDIO_BYTES = 256 << 20
#: Longest input example clip, in seconds.
MAX_EXAMPLE_SECONDS = 10.0


class PipelineModel(mlflow.pyfunc.PythonModel):
    """``audio`` bytes and/or ``path`` rows → ``label``, ``p_<label>``..., ``error`` (see the module)."""

    def load_context(self, context: Any) -> None:
        """Load and audit the bundle of the model's ``bundle`` artifact (a refused model fails here, once)."""
        from soundstage.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])
        self.bundle.model  # noqa: B018 - load (and audit) the model file now, not on the first request

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One output row per row of ``model_input`` (columns ``audio`` and/or ``path``), in order."""
        return predict_rows(self.bundle, model_input)


def predict_rows(bundle: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """``label``, ``p_<label>``... and ``error`` for every row of ``rows``.

    A row's ``audio`` (bytes), when present, is predicted with
    :func:`~soundstage.predict.predict_bytes` (its ``path``, if any, only names it in errors);
    otherwise its ``path`` with :func:`~soundstage.predict.predict_file`. A row with neither, bytes over
    :data:`MAX_AUDIO_BYTES`, or audio that cannot be used gets ``label`` None, NaN probabilities and
    an ``error`` message; ``error`` is None for the predicted rows.
    """
    from soundstage.decode import AudioError
    from soundstage.predict import predict_bytes, predict_file

    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"expected a DataFrame with an 'audio' and/or 'path' column, got {type(rows).__name__}")
    if "audio" not in rows.columns and "path" not in rows.columns:
        raise ValueError(f"expected an 'audio' (bytes) and/or 'path' column, got columns {list(rows.columns)}")
    labels = bundle.labels
    probs = np.full((len(rows), len(labels)), np.nan)
    errors: list[str | None] = [None] * len(rows)
    audio = rows["audio"].tolist() if "audio" in rows.columns else [None] * len(rows)
    paths = rows["path"].tolist() if "path" in rows.columns else [None] * len(rows)
    for i, (data, path) in enumerate(zip(audio, paths, strict=True)):
        name = path if _given(path) else f"row {i}"
        try:
            if _given(data):
                if not isinstance(data, bytes | bytearray | memoryview):
                    raise TypeError(f"{name}: 'audio' must hold a file's bytes, got {type(data).__name__}")
                if len(data) > MAX_AUDIO_BYTES:
                    raise ValueError(f"{name}: {len(data)} bytes of audio, more than the {MAX_AUDIO_BYTES} "
                                     "a row may carry")
                probs[i] = predict_bytes(bundle, bytes(data), name=str(name))
            elif _given(path):
                probs[i] = predict_file(bundle, str(path))
            else:
                raise ValueError(f"{name}: neither 'audio' bytes nor a 'path'")
        except AudioError as exc:
            errors[i] = str(exc)
        except (OSError, TypeError, ValueError) as exc:  # a folder as path, a permission problem, a bad row
            errors[i] = str(exc) if str(name) in str(exc) else f"{name}: {exc}"
    out = pd.DataFrame({"label": [None if errors[i] else labels[int(np.argmax(p))] for i, p in enumerate(probs)]})
    for j, lab in enumerate(labels):
        out[f"p_{lab}"] = probs[:, j]
    out["error"] = errors
    return out


def _given(value: Any) -> bool:
    """A cell that holds something: not None, NaN or empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return not (isinstance(value, str | bytes | bytearray) and len(value) == 0)


def signature(labels: list[str]) -> Any:
    """The pyfunc's ``ModelSignature``: inputs ``audio`` (binary) and ``path`` (string), both optional
    per column (a request sends one or both); outputs ``label``, ``p_<label>`` (double) and ``error``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("binary", "audio", required=False), ColSpec("string", "path", required=False)])
    outputs = Schema([ColSpec("string", "label", required=False),
                      *(ColSpec("double", f"p_{lab}", required=False) for lab in labels),
                      ColSpec("string", "error", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_wav(process: dict[str, Any], *, seed: int = 0) -> bytes:
    """A short 16-bit mono WAV file (its bytes) that the bundle's ``process`` parameters keep: a seeded
    two-tone chord with a little noise, at the processing rate (16 kHz when it keeps native rates), 1 s
    or the clip length the parameters require (at most :data:`MAX_EXAMPLE_SECONDS`)."""
    import soundfile as sf

    sr = int(process.get("sample_rate") or 16000)
    duration = dict(process.get("duration") or {})
    seconds = max(1.0, float(duration.get("min_seconds") or 0.0))
    if duration.get("mode", "none") != "none" and duration.get("short") == "reject":
        seconds = max(seconds, float(duration.get("seconds") or 0.0))
    seconds = min(seconds, MAX_EXAMPLE_SECONDS)
    t = np.arange(round(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    y = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 660.0 * t) + 0.02 * rng.normal(size=t.size)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def pip_requirements() -> list[str]:
    """``soundstage``'s own dependencies pinned to the installed versions (``name==version``), and
    MLflow's: what the model needs besides ``soundstage`` itself. Read from the package metadata, not
    inferred by MLflow (which loads the model in a subprocess, seconds per training)."""
    from packaging.requirements import Requirement

    pins = []
    for spec in md.requires("soundstage") or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (tests)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        try:
            pins.append(f"{req.name}{extras}=={md.version(req.name)}")
        except md.PackageNotFoundError:
            pins.append(str(req))
    return pins


def log_pipeline(bundle_dir: str | Path, *, registered_model_name: str | None = None) -> Any:
    """Log the bundle in ``bundle_dir`` as the pyfunc model ``pipeline`` of the active run (and register
    it as a new version of ``registered_model_name``, when given). Returns the ``ModelInfo``.

    Logged from code (:data:`ENTRY_FILE`), with :func:`signature`, an input example (:func:`example_wav`
    as the ``audio`` of one row, which MLflow also runs once through the loaded model to check it) and
    :func:`pip_requirements`.
    """
    from soundstage.bundle import load_bundle

    meta = load_bundle(bundle_dir).meta
    example = pd.DataFrame({"audio": [example_wav(meta["process"])]})
    return mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(ENTRY_FILE),
                                   artifacts={BUNDLE_ARTIFACT: str(Path(bundle_dir).resolve())},
                                   signature=signature(list(meta["labels"])), input_example=example,
                                   pip_requirements=pip_requirements(),
                                   registered_model_name=registered_model_name)
