"""Tests for soundstage.bundle: save/load, per-kind normalization, and bad bundles."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from soundstage import models as M
from soundstage.bundle import FORMAT, Bundle, load_bundle, save_bundle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LABELS = ["a", "b", "c"]
COLUMNS = ["f_mean_0", "f_mean_1", "f_std_0", "f_std_1"]
PROCESS = {"sample_rate": 8000}
FEATURES = {"n_mels": 16, "n_mfcc": 8}


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
    scaler = M.Standardizer.fit(data["X"])
    mlp = M.build_mlp(n_features=len(COLUMNS), n_classes=3, hidden=(8,))
    save_bundle(tmp_path, model=mlp, meta=meta_of("keras_mlp", standardizer=scaler.to_dict()))
    bundle = load_bundle(tmp_path)
    expected = mlp.predict(scaler.transform(data["X"]), verbose=0)
    np.testing.assert_allclose(bundle.predict(summary=data["X"]), expected, rtol=1e-6, atol=1e-7)


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
