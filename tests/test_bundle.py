"""Tests for soundstage.bundle: save/load, per-kind normalization, and bad bundles."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from soundstage import models as M
from soundstage.bundle import FORMAT, Bundle, load_bundle, save_bundle
from soundstage.io import is_temp_name

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LABELS = ["a", "b", "c"]
COLUMNS = ["f_mean_0", "f_mean_1", "f_std_0", "f_std_1"]
PROCESS = {"sample_rate": 8000}
FEATURES = {"n_mels": 16, "n_mfcc": 8, "n_bands": 4}  # 4 contrast bands fit below 4 kHz


def meta_of(kind: str, **extra) -> dict:
    return {"model": kind, "kind": kind, "labels": LABELS, "feature_columns": COLUMNS,
            "process": PROCESS, "features": FEATURES, **extra}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    r = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    X = r.normal(size=(30, len(COLUMNS))) * [1, 10, 100, 1000] + y[:, None] * [3, 30, 300, 3000]
    return {"X": X.astype(np.float32), "y": y}


def test_random_forest_bundle_roundtrip(tmp_path, data):
    rf = M.fit_random_forest(data["X"], data["y"], n_estimators=10, seed=0)
    saved = save_bundle(tmp_path / "rf", model=rf, meta=meta_of("random_forest"))
    assert sorted(p.name for p in (tmp_path / "rf").iterdir()) == ["bundle.json", "model.skops"]
    on_disk = json.loads((tmp_path / "rf" / "bundle.json").read_text())
    assert on_disk["format"] == FORMAT and on_disk["labels"] == LABELS
    loaded = load_bundle(tmp_path / "rf")
    assert loaded.kind == "random_forest" and loaded.labels == LABELS
    expected = rf.predict_proba(data["X"])
    np.testing.assert_array_equal(loaded.predict(summary=data["X"]), expected)
    np.testing.assert_array_equal(saved.predict(summary=data["X"]), expected)
    assert loaded.process_config.sample_rate == 8000
    assert loaded.feature_config.n_mels == 16


def test_random_forest_bundle_pads_a_class_absent_from_training(tmp_path, data):
    keep = data["y"] != 1
    rf = M.fit_random_forest(data["X"][keep], data["y"][keep], n_estimators=5, seed=0)
    save_bundle(tmp_path, model=rf, meta=meta_of("random_forest"))
    p = load_bundle(tmp_path).predict(summary=data["X"][:4])
    assert p.shape == (4, 3)
    np.testing.assert_array_equal(p[:, 1], 0.0)


def test_mlp_bundle_applies_its_standardizer(tmp_path, data):
    scaler = M.fit_scaler(data["X"])
    mlp = M.build_mlp(n_features=len(COLUMNS), n_classes=3, hidden=(8,))
    save_bundle(tmp_path, model=mlp, meta=meta_of("keras_mlp", standardizer=M.scaler_to_dict(scaler)))
    bundle = load_bundle(tmp_path)
    expected = mlp.predict(scaler.transform(data["X"].astype(np.float64)).astype(np.float32), verbose=0)
    got = bundle.predict(summary=data["X"])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # A bundle written before the scaler was scikit-learn's stores the standard deviation as "std".
    _rewrite(tmp_path, standardizer={"mean": scaler.mean_.tolist(), "std": scaler.scale_.tolist()})
    np.testing.assert_array_equal(load_bundle(tmp_path).predict(summary=data["X"]), got)


def test_cnn_bundle_normalizes_raw_logmels(tmp_path):
    r = np.random.default_rng(1)
    mean, std = r.normal(-40, 5, size=16), r.uniform(5, 15, size=16)
    raw = [(mean[:, None] + std[:, None] * r.normal(size=(16, n))).astype(np.float32) for n in (30, 50, 12)]
    cnn = M.build_cnn(n_mels=16, crop_frames=24, n_classes=3, filters=(4,), first_stride=2)
    meta = meta_of("keras_cnn", logmel_stats={"mean": mean.tolist(), "std": std.tolist()},
                   cnn={"crop_frames": 24, "hop_frames": 6})
    save_bundle(tmp_path, model=cnn, meta=meta)
    bundle = load_bundle(tmp_path)
    normed = [((s - mean[:, None]) / std[:, None]).astype(np.float32) for s in raw]
    expected = M.predict_cnn(cnn, normed, crop_frames=24, hop_frames=6)
    got = bundle.predict(logmels=raw)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The bundle's hop is used: a different hop gives different crops, so (generally) other numbers.
    assert not np.allclose(got, M.predict_cnn(cnn, normed, crop_frames=24, hop_frames=12), atol=1e-9)
    with pytest.raises(ValueError, match="log-mels"):
        bundle.predict(summary=np.zeros((1, len(COLUMNS))))


def test_summary_bundle_rejects_wrong_inputs(tmp_path, data):
    rf = M.fit_random_forest(data["X"], data["y"], n_estimators=3, seed=0)
    save_bundle(tmp_path, model=rf, meta=meta_of("random_forest"))
    bundle = load_bundle(tmp_path)
    with pytest.raises(ValueError, match="summary"):
        bundle.predict(logmels=[np.zeros((16, 10))])
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        bundle.predict(summary=np.zeros((2, 3)))


def test_save_bundle_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown model kind"):
        save_bundle(tmp_path, model=object(), meta=meta_of("svm"))


@pytest.fixture
def rf_bundle_dir(tmp_path, data):
    rf = M.fit_random_forest(data["X"], data["y"], n_estimators=3, seed=0)
    save_bundle(tmp_path / "b", model=rf, meta=meta_of("random_forest"))
    return tmp_path / "b"


def _rewrite(path, **changes):
    meta = json.loads((path / "bundle.json").read_text())
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    (path / "bundle.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"format": "other/1"}, ValueError, "unsupported bundle format"),
    ({"kind": "svm"}, ValueError, "unknown model kind"),
    ({"labels": None}, ValueError, "missing labels"),
    ({"kind": "keras_mlp"}, ValueError, "missing standardizer"),
])
def test_load_bundle_rejects_bad_metadata(rf_bundle_dir, change, error, match):
    _rewrite(rf_bundle_dir, **change)
    with pytest.raises(error, match=match):
        load_bundle(rf_bundle_dir)


def test_load_bundle_missing_pieces(tmp_path, rf_bundle_dir):
    with pytest.raises(FileNotFoundError, match="no bundle.json"):
        load_bundle(tmp_path / "nowhere")
    (rf_bundle_dir / "model.skops").unlink()
    with pytest.raises(FileNotFoundError, match="model.skops"):
        load_bundle(rf_bundle_dir)
    (rf_bundle_dir / "bundle.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_bundle(rf_bundle_dir)


def test_bundle_model_is_loaded_lazily(rf_bundle_dir):
    bundle = load_bundle(rf_bundle_dir)
    assert isinstance(bundle, Bundle) and bundle._model is None
    bundle.predict(summary=np.zeros((1, len(COLUMNS))))
    assert bundle._model is not None


# ------------------------------------------------------------------ bundle.json is validated field by field


def write_bundle_json(directory, kind: str, **changes):
    """A bundle folder with ``bundle.json`` (a valid one of ``kind``, then ``changes``) and an empty model
    file: ``load_bundle`` validates without loading the model."""
    n_mels = FEATURES["n_mels"]
    extra = {"keras_mlp": {"standardizer": {"mean": [0.0] * 4, "std": [1.0] * 4}},
             "keras_cnn": {"logmel_stats": {"mean": [0.0] * n_mels, "std": [1.0] * n_mels},
                           "cnn": {"crop_frames": 24, "hop_frames": 12}}}.get(kind, {})
    meta = {"format": FORMAT, **meta_of(kind, **extra), **changes}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bundle.json").write_text(json.dumps(meta))
    (directory / M.MODEL_FILENAMES[kind]).write_bytes(b"")
    return directory


def test_load_bundle_accepts_every_field_a_trained_bundle_has(tmp_path):
    optional = {"training": {"n_train": 15, "n_val": 6, "n_augmented": 0, "augment": None,
                             "split_hash": "0123456789ab", "fold": "0"},
                "params": {"n_estimators": 20, "max_depth": None}, "seed": 7,
                "mlflow": {"tracking_uri": "sqlite:////srv/project/mlflow.db", "experiment": "toyset",
                           "run_id": "0123456789abcdef0123456789abcdef"},
                "tags": {"git.commit": "c0ffee", "data.table": "abc123"}, "params_hash": "0" * 40}
    for kind in ("random_forest", "keras_mlp", "keras_cnn"):
        bundle = load_bundle(write_bundle_json(tmp_path / kind, kind, **optional))
        assert bundle.kind == kind and bundle.meta["params_hash"] == "0" * 40


STATS_16 = {"mean": [0.0] * 16, "std": [1.0] * 16}


@pytest.mark.parametrize(("kind", "change", "match"), [
    ("random_forest", {"labels": "a,b,c"}, "'labels' must be a list of strings"),
    ("random_forest", {"labels": ["a", 1]}, "'labels' must hold strings"),
    ("random_forest", {"labels": ["a", "b", "a"]}, "'labels' holds duplicates"),
    ("random_forest", {"labels": ["a"]}, "'labels' must hold 2 to"),
    ("random_forest", {"labels": ["a", "b" * 5000]}, "'labels' must hold strings of at most"),
    ("random_forest", {"feature_columns": ["f", None]}, "'feature_columns' must hold strings"),
    ("random_forest", {"feature_columns": []}, "'feature_columns' must hold 1 to"),
    ("random_forest", {"model": "/srv/models/rf"}, "'model' must be a model name"),
    ("random_forest", {"process": {"sample_rate": 8000, "trim": {"top_dbb": 3}}}, "'process' is not a valid"),
    ("random_forest", {"process": [8000]}, "'process' must be a mapping"),
    ("random_forest", {"features": {"n_mels": 0}}, "'features' is not a valid"),
    ("random_forest", {"standardizer": {"mean": [0.0] * 4, "std": [1.0] * 4}}, "unexpected field.*'standardizer'"),
    ("keras_mlp", {"standardizer": {"mean": [0.0] * 3, "std": [1.0] * 4}}, r"'standardizer\.mean' must be a list of 4"),
    ("keras_mlp", {"standardizer": {"mean": [0.0] * 4, "std": [1.0, -1.0, 1.0, 1.0]}},
     r"'standardizer\.std' must not be negative"),
    ("keras_mlp", {"standardizer": {"mean": [0.0, 0.0, 0.0, "0"], "std": [1.0] * 4}},
     r"'standardizer\.mean' must hold finite numbers"),
    ("keras_mlp", {"standardizer": {"mean": [0.0] * 4}}, "'standardizer' must hold"),
    ("keras_mlp", {"standardizer": {"mean": [0.0] * 4, "scale": [1.0, 0.0, 1.0, 1.0]}},
     r"'standardizer\.scale' must be positive"),
    ("keras_mlp", {"standardizer": {"mean": [0.0] * 4, "scale": [1.0] * 3}},
     r"'standardizer\.scale' must be a list of 4"),
    ("random_forest", {"features": {**FEATURES, "n_bands": 6}}, r"'features' is not a valid.*features\.n_bands"),
    ("keras_cnn", {"logmel_stats": {"mean": [0.0] * 15, "std": [1.0] * 16}},
     r"'logmel_stats\.mean' must be a list of 16"),
    ("keras_cnn", {"logmel_stats": {"mean": [float("nan")] * 16, "std": [1.0] * 16}},
     r"'logmel_stats\.mean' must hold finite numbers"),
    ("keras_cnn", {"logmel_stats": STATS_16, "cnn": {"crop_frames": 0, "hop_frames": 8}}, r"'cnn\.crop_frames'"),
    ("keras_cnn", {"logmel_stats": STATS_16, "cnn": {"crop_frames": True, "hop_frames": 8}}, r"'cnn\.crop_frames'"),
    ("keras_cnn", {"logmel_stats": STATS_16, "cnn": {"crop_frames": 24, "hop_frames": 8.0}}, r"'cnn\.hop_frames'"),
    ("keras_cnn", {"logmel_stats": STATS_16, "cnn": {"crop_frames": 10**9, "hop_frames": 8}}, r"'cnn\.crop_frames'"),
    ("keras_cnn", {"logmel_stats": STATS_16, "cnn": {"crop_frames": 24}}, "'cnn' must hold"),
    ("random_forest", {"mlflow": {"run_id": 5}}, r"'mlflow\.run_id'"),
    ("random_forest", {"mlflow": {"artifacts": "/srv/elsewhere"}}, "'mlflow' must hold"),
    ("random_forest", {"tags": {"git.commit": 1}}, "'tags'"),
    ("random_forest", {"params_hash": "not a hash"}, "'params_hash'"),
    ("random_forest", {"seed": "7"}, "'seed'"),
    ("random_forest", {"training": {"n_train": -1}}, r"'training\.n_train'"),
    ("random_forest", {"training": {"split_hash": "../../etc"}}, r"'training\.split_hash' must be 12 hex digits"),
    ("random_forest", {"training": {"fold": "../1"}}, r"'training\.fold' must be a fold id"),
    ("random_forest", {"training": {"fold": 1}}, r"'training\.fold' must be a fold id"),
    ("random_forest", {"params": ["n_estimators", 3]}, "'params' must be a mapping"),
])
def test_load_bundle_validates_every_field(tmp_path, kind, change, match):
    bundle = write_bundle_json(tmp_path / "b", kind, **change)
    with pytest.raises(ValueError, match=rf"bundle\.json: .*{match}"):
        load_bundle(bundle)


def test_save_bundle_validates_before_writing_anything(tmp_path, data):
    rf = M.fit_random_forest(data["X"], data["y"], n_estimators=2, seed=0)
    with pytest.raises(ValueError, match="'labels' holds duplicates"):
        save_bundle(tmp_path / "b", model=rf, meta=meta_of("random_forest", labels=["a", "b", "a"]))
    assert not (tmp_path / "b").exists()


def test_a_model_that_does_not_match_bundle_json_is_refused(rf_bundle_dir):
    _rewrite(rf_bundle_dir, feature_columns=COLUMNS[:3])  # the forest was fitted on 4 columns
    bundle = load_bundle(rf_bundle_dir)
    with pytest.raises(ValueError, match=r"model\.skops: the model does not match bundle\.json.*3 features"):
        bundle.model


# ------------------------------------------------------------------ model files: mode, temporary names, errors


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("kind", ["random_forest", "keras_mlp"])
def test_model_files_respect_the_umask_and_use_hidden_temporaries(tmp_path, data, umask_027, monkeypatch, kind):
    """0o666 & ~umask, not mkstemp's 0600: a team sharing the project folder can read the models."""
    import re

    if kind == "random_forest":
        model, extra = M.fit_random_forest(data["X"], data["y"], n_estimators=2, seed=0), {}
    else:
        model = M.build_mlp(n_features=len(COLUMNS), n_classes=3, hidden=(4,))
        extra = {"standardizer": M.scaler_to_dict(M.fit_scaler(data["X"]))}
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(M.os, "replace", lambda src, dst: (renamed.append((Path(src), Path(dst))),
                                                           real_replace(src, dst))[1])
    save_bundle(tmp_path / "b", model=model, meta=meta_of(kind, **extra))
    target = tmp_path / "b" / M.MODEL_FILENAMES[kind]
    assert os.stat(target).st_mode & 0o777 == 0o640
    (tmp,) = [src for src, dst in renamed if dst == target]
    assert tmp.parent == target.parent
    assert re.fullmatch(rf"\.{re.escape(target.name)}\.tmp-{os.getpid()}-[0-9a-f]{{8}}{re.escape(target.suffix)}",
                        tmp.name)
    assert is_temp_name(tmp.name)  # what the cleaner of killed runs' leftovers removes
    assert not list((tmp_path / "b").glob(".*.tmp-*"))


@pytest.mark.parametrize("failing", ["model", "bundle.json"])
def test_a_full_disk_error_names_the_file_and_leaves_no_temporary(tmp_path, data, monkeypatch, failing):
    import errno

    import skops.io as sio

    import soundstage.bundle as B

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "model":
        def partial_dump(model, file):  # some bytes reach the disk, then it is full
            Path(file).write_bytes(b"PK\x03\x04 partial")
            full_disk()
        monkeypatch.setattr(sio, "dump", partial_dump)
    else:
        monkeypatch.setattr(B, "write_json", full_disk)
    rf = M.fit_random_forest(data["X"], data["y"], n_estimators=2, seed=0)
    with pytest.raises(OSError, match="No space left on device") as exc:
        save_bundle(tmp_path / "b", model=rf, meta=meta_of("random_forest"))
    named = tmp_path / "b" / ("model.skops" if failing == "model" else "bundle.json")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(named)
    assert str(named) in str(exc.value)
    assert not list((tmp_path / "b").glob(".*.tmp-*"))
