"""Tests for soundstage.models: tiny synthetic data, few epochs (runs in well under a minute)."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from soundstage import models as M

N_CLASSES = 3

# Keras' JAX backend calls np.array(x) on objects without a `copy` keyword (not our code).
# One worker runs this module: its fitted models are built once (xdist --dist loadgroup).
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.xdist_group("models")]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_blobs(n_per_class: int, seed: int, n_features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs, one centre per class."""
    r = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0.0, 4.0, size=(N_CLASSES, n_features))
    X = np.concatenate([c + r.normal(size=(n_per_class, n_features)) for c in centres])
    y = np.repeat(np.arange(N_CLASSES), n_per_class)
    order = r.permutation(len(y))
    return X[order], y[order]


def make_band_specs(
    n_per_class: int, seed: int, n_mels: int = 16, lengths: tuple[int, ...] = (40,)
) -> tuple[list[np.ndarray], np.ndarray]:
    """Normalised-looking "log-mels": class k has energy in band k of the mel axis."""
    r = np.random.default_rng(seed)
    band = n_mels // N_CLASSES
    specs, labels = [], []
    for k in range(N_CLASSES):
        for i in range(n_per_class):
            s = r.normal(0.0, 0.3, size=(n_mels, lengths[i % len(lengths)]))
            s[k * band : (k + 1) * band] += 2.0
            specs.append(s.astype(np.float32))
            labels.append(k)
    return specs, np.array(labels)


@pytest.fixture(scope="module")
def blobs() -> dict[str, np.ndarray]:
    X_tr, y_tr = make_blobs(20, seed=1)
    X_va, y_va = make_blobs(6, seed=2)
    X_te, y_te = make_blobs(10, seed=3)
    scaler = M.fit_scaler(X_tr)
    return {
        "X_tr": X_tr, "y_tr": y_tr, "X_va": X_va, "y_va": y_va, "X_te": X_te, "y_te": y_te,
        "Z_tr": scaler.transform(X_tr), "Z_va": scaler.transform(X_va),
        "Z_te": scaler.transform(X_te),
    }


MLP_KW = dict(n_classes=N_CLASSES, hidden=(16,), dropout=0.1, learning_rate=1e-2,
              batch_size=16, epochs=15, patience=5, seed=7)


@pytest.fixture(scope="module")
def mlp_pair(blobs):
    """The same MLP fit twice with the same seed."""
    b = blobs
    return [M.fit_keras_mlp(b["Z_tr"], b["y_tr"], b["Z_va"], b["y_va"], **MLP_KW) for _ in range(2)]


CNN_KW = dict(n_classes=N_CLASSES, crop_frames=24, crops_per_clip=2, filters=(4, 8),
              dropout=0.1, batch_size=16, epochs=3, patience=2, learning_rate=1e-2,
              spec_augment_params={"freq_masks": 1, "freq_width": 2, "time_masks": 1,
                                   "time_width": 4},
              seed=3)


@pytest.fixture(scope="module")
def cnn_fit():
    train, y_tr = make_band_specs(8, seed=10, lengths=(40, 30, 20))  # 20 < crop_frames
    val, y_va = make_band_specs(3, seed=11)
    model, history = M.fit_keras_cnn(train, y_tr, val, y_va, **CNN_KW)
    return model, history, (train, y_tr)


# ------------------------------------------------------------------ random forest


def test_random_forest_learns(blobs):
    b = blobs
    rf = M.fit_random_forest(b["X_tr"], b["y_tr"], n_estimators=30, seed=0)
    p = M.predict_proba(rf, b["X_te"], kind="random_forest")
    assert p.shape == (len(b["X_te"]), N_CLASSES)
    assert (p.argmax(1) == b["y_te"]).mean() > 0.8


def test_random_forest_same_seed_same_predictions(blobs):
    b = blobs
    ps = [
        M.predict_proba(M.fit_random_forest(b["X_tr"], b["y_tr"], n_estimators=20, seed=5),
                        b["X_te"], kind="random_forest")
        for _ in range(2)
    ]
    np.testing.assert_array_equal(ps[0], ps[1])


def test_random_forest_roundtrip_is_skops_not_pickle(blobs, tmp_path):
    b = blobs
    rf = M.fit_random_forest(b["X_tr"], b["y_tr"], n_estimators=20, seed=0)
    path = M.save_model(rf, tmp_path / "rf", kind="random_forest")
    assert path == tmp_path / "rf" / "model.skops"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.skops"]  # no temp left
    assert zipfile.is_zipfile(path)
    assert "schema.json" in zipfile.ZipFile(path).namelist()
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError):
        pickle.load(f)
    loaded = M.load_model(path.parent, kind="random_forest")
    np.testing.assert_array_equal(
        M.predict_proba(rf, b["X_te"], kind="random_forest"),
        M.predict_proba(loaded, b["X_te"], kind="random_forest"),
    )


def test_load_model_rejects_foreign_types(tmp_path, monkeypatch):
    import skops.io as sio

    rf_dir = tmp_path / "rf"
    rf_dir.mkdir()
    (rf_dir / "model.skops").write_bytes(b"")  # never read: the audit is stubbed
    monkeypatch.setattr(sio, "get_untrusted_types", lambda file: ["os.system"])
    monkeypatch.setattr(sio, "load", lambda *a, **k: pytest.fail("must not load"))
    with pytest.raises(ValueError, match="untrusted"):
        M.load_model(rf_dir, kind="random_forest")


def test_predict_proba_pads_missing_class():
    X = np.array([[0.0], [0.1], [5.0], [5.1]])
    rf = M.fit_random_forest(X, np.array([0, 0, 2, 2]), n_estimators=5, seed=0)
    p = M.predict_proba(rf, X, kind="random_forest", n_classes=3)
    assert p.shape == (4, 3)
    np.testing.assert_array_equal(p[:, 1], 0.0)


def test_load_model_missing_and_bad_kind(tmp_path):
    with pytest.raises(FileNotFoundError):
        M.load_model(tmp_path, kind="keras_mlp")
    with pytest.raises(ValueError, match="unknown model kind"):
        M.load_model(tmp_path, kind="svm")  # type: ignore[arg-type]


@pytest.mark.parametrize("y", [np.array([0.0, 1.0, 2.0]), np.array([[0], [1], [2]])])
def test_fit_random_forest_rejects_bad_labels(y):
    with pytest.raises(ValueError):
        M.fit_random_forest(np.zeros((3, 2)), y, n_estimators=2, seed=0)


# ------------------------------------------------------------------ standardizer


def test_scaler_roundtrip_and_zero_variance():
    X = np.column_stack([np.arange(10.0), np.full(10, 3.0), 3.0 + np.arange(10) * 1e-10])
    s = M.fit_scaler(X)
    Z = s.transform(X)
    np.testing.assert_allclose(Z[:, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(Z[:, 0].std(), 1, atol=1e-6)
    np.testing.assert_array_equal(Z[:, 1], 0.0)  # constant column: no division by ~0
    # Unseen values in a constant or near-constant column stay finite and moderate.
    unseen = s.transform(np.array([[1.0, 4.0, 4.0]]))
    assert np.isfinite(unseen).all() and (np.abs(unseen[0, 1:]) <= 1.0).all()
    s2 = M.scaler_from_dict(json.loads(json.dumps(M.scaler_to_dict(s))))
    np.testing.assert_array_equal(s2.mean_, s.mean_)
    np.testing.assert_array_equal(s2.scale_, s.scale_)
    assert s2.mean_.dtype == np.float64
    np.testing.assert_array_equal(s2.transform(X), Z)
    np.testing.assert_allclose(s.inverse_transform(Z), X)
    # A bundle written before the scaler was scikit-learn's stores "std", floored the same way.
    old = M.scaler_from_dict({"mean": [1.0, 2.0, 3.0], "std": [2.0, 0.0, 1e-9]})
    np.testing.assert_array_equal(old.scale_, [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(old.transform(np.array([[3.0, 2.0, 4.0]])), [[1.0, 0.0, 1.0]])


def test_scaler_rejects_bad_input():
    with pytest.raises(ValueError):
        M.fit_scaler(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError):
        M.fit_scaler(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        M.fit_scaler(np.zeros((4, 2))).transform(np.zeros((4, 3)))


# ------------------------------------------------------------------ MLP


def test_mlp_learns_and_history(blobs, mlp_pair):
    model, history = mlp_pair[0]
    p = M.predict_proba(model, blobs["Z_te"], kind="keras_mlp")
    assert p.shape == (len(blobs["Z_te"]), N_CLASSES)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p.argmax(1) == blobs["y_te"]).mean() > 0.8
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history)
    assert 1 <= len(history["loss"]) <= MLP_KW["epochs"]


def test_mlp_same_seed_identical(blobs, mlp_pair):
    (m1, h1), (m2, h2) = mlp_pair
    assert h1 == h2
    np.testing.assert_array_equal(
        M.predict_proba(m1, blobs["Z_te"], kind="keras_mlp"),
        M.predict_proba(m2, blobs["Z_te"], kind="keras_mlp"),
    )


def test_mlp_save_load_roundtrip(blobs, mlp_pair, tmp_path):
    model = mlp_pair[0][0]
    path = M.save_model(model, tmp_path, kind="keras_mlp")
    assert path.name == "model.keras"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    loaded = M.load_model(tmp_path, kind="keras_mlp")
    np.testing.assert_array_equal(
        M.predict_proba(model, blobs["Z_te"], kind="keras_mlp"),
        M.predict_proba(loaded, blobs["Z_te"], kind="keras_mlp"),
    )


def test_build_mlp_layout():
    model = M.build_mlp(n_features=5, n_classes=4, hidden=(8, 6), dropout=0.2)
    assert model.input_shape == (None, 5)
    assert model.output_shape == (None, 4)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Dense", "ReLU", "Dropout", "Dense", "ReLU", "Dropout", "Dense"]


def test_mlp_rejects_out_of_range_labels(blobs):
    with pytest.raises(ValueError, match="labels"):
        M.fit_keras_mlp(blobs["Z_tr"], blobs["y_tr"] + 1, None, None,
                        **{**MLP_KW, "epochs": 1})


# ------------------------------------------------------------------ CNN


def test_build_cnn_shapes():
    model = M.build_cnn(n_mels=16, crop_frames=24, n_classes=N_CLASSES, filters=(4, 8, 8))
    assert model.input_shape == (None, 16, 24, 1)
    assert model.output_shape == (None, N_CLASSES)


def test_build_cnn_first_stride():
    plain = M.build_cnn(n_mels=16, crop_frames=24, n_classes=N_CLASSES, filters=(4, 8))
    strided = M.build_cnn(n_mels=16, crop_frames=24, n_classes=N_CLASSES, filters=(4, 8), first_stride=2)
    assert plain.get_layer("conv_0").output.shape[1:3] == (16, 24)
    assert strided.get_layer("conv_0").output.shape[1:3] == (8, 12)
    assert strided.count_params() == plain.count_params()  # same weights, a quarter of the positions
    assert strided.output_shape == (None, N_CLASSES)


def test_callbacks_follow_params():
    stop, plateau = M._callbacks(monitor="val_loss", patience=6, lr_factor=0.2, lr_patience=3)
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == ("val_loss", 6, True)
    assert (plateau.monitor, plateau.factor, plateau.patience) == ("val_loss", 0.2, 3)
    assert M._callbacks(monitor="loss", patience=9)[1].patience == 3  # default: patience // 3
    assert M._callbacks(monitor="loss", patience=1)[1].patience == 2


def test_standardize_logmel():
    spec = np.array([[-10.0, -20.0, -30.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    out = M.standardize_logmel(spec, mean=[-20.0, 5.0], std=[10.0, 0.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])  # zero std: floored, no inf
    with pytest.raises(ValueError, match="mel bins"):
        M.standardize_logmel(spec, mean=[0.0], std=[1.0])


def test_cnn_trains_and_predicts_whole_clips(cnn_fit):
    model, history, (train, y_tr) = cnn_fit
    assert 1 <= len(history["loss"]) <= CNN_KW["epochs"]
    assert "val_loss" in history and np.isfinite(history["val_loss"]).all()
    specs, _ = make_band_specs(2, seed=12, lengths=(60, 10))  # 10 < crop_frames: padded
    p = M.predict_cnn(model, specs, crop_frames=CNN_KW["crop_frames"])
    assert p.shape == (len(specs), N_CLASSES)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # Chunking across calls must not change the result.
    p_small = M.predict_cnn(model, specs, crop_frames=CNN_KW["crop_frames"], max_crops_per_call=1)
    np.testing.assert_allclose(p, p_small, atol=1e-6)


def test_cnn_same_seed_identical_and_roundtrip(cnn_fit, tmp_path):
    model, history, (train, y_tr) = cnn_fit
    val, y_va = make_band_specs(3, seed=11)
    again, history2 = M.fit_keras_cnn(train, y_tr, val, y_va, **CNN_KW)
    assert history == history2
    p = M.predict_cnn(model, val, crop_frames=CNN_KW["crop_frames"])
    np.testing.assert_array_equal(p, M.predict_cnn(again, val, crop_frames=CNN_KW["crop_frames"]))
    M.save_model(model, tmp_path, kind="keras_cnn")
    loaded = M.load_model(tmp_path, kind="keras_cnn")
    np.testing.assert_array_equal(
        p, M.predict_cnn(loaded, val, crop_frames=CNN_KW["crop_frames"])
    )
    with pytest.raises(ValueError, match="predict_cnn"):
        M.predict_proba(model, np.zeros((1, 3)), kind="keras_cnn")


def test_predict_cnn_is_mean_over_sliding_crops(cnn_fit):
    model = cnn_fit[0]
    spec = np.random.default_rng(4).normal(size=(16, 50)).astype(np.float32)
    crops = M.sliding_crops(spec, crop_frames=24, hop_frames=12)
    assert [c.shape for c in crops] == [(16, 24)] * 4  # starts 0, 12, 24 and flush 26
    np.testing.assert_array_equal(crops[-1], spec[:, 26:])
    expected = model.predict(crops[..., None], verbose=0).mean(0)
    np.testing.assert_allclose(M.predict_cnn(model, [spec], crop_frames=24)[0], expected,
                               atol=1e-6)
    with pytest.raises(ValueError, match="crop"):
        M.predict_cnn(model, [spec], crop_frames=32)


@pytest.mark.parametrize(("n_frames", "hop", "n_expected"),
                         [(10, None, 1), (24, None, 1), (25, None, 2), (48, 12, 3), (50, 12, 4)])
def test_sliding_crop_count(n_frames, hop, n_expected):
    spec = np.zeros((4, n_frames))
    assert len(M.sliding_crops(spec, crop_frames=24, hop_frames=hop)) == n_expected
    assert M._n_sliding(n_frames, 24, hop) == n_expected


def test_random_crops_shapes_and_padding(rng):
    spec = rng.normal(size=(8, 50)).astype(np.float32)
    crops = M.random_crops(spec, crop_frames=20, n=5, rng=rng)
    assert crops.shape == (5, 8, 20) and crops.dtype == np.float32
    for c in crops:  # every crop is a contiguous window of the input
        starts = [s for s in range(31) if np.array_equal(spec[:, s : s + 20], c)]
        assert starts
    short = rng.normal(size=(8, 7))
    padded = M.random_crops(short, crop_frames=20, n=3, rng=rng)
    assert padded.shape == (3, 8, 20)
    np.testing.assert_array_equal(padded[:, :, :7], np.broadcast_to(short, (3, 8, 7)))
    np.testing.assert_array_equal(padded[:, :, 7:], 0.0)
    assert M.random_crops(spec, crop_frames=20, n=0, rng=rng).shape == (0, 8, 20)


def test_spec_augment_bounds_determinism_and_no_inplace():
    x = np.random.default_rng(0).normal(size=(16, 40)).astype(np.float32) + 5.0  # no zeros
    x_before = x.copy()
    kw = dict(freq_masks=2, freq_width=4, time_masks=2, time_width=6)
    a = M.spec_augment(x, rng=np.random.default_rng(1), **kw)
    b = M.spec_augment(x, rng=np.random.default_rng(1), **kw)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    masked = a == 0
    unmasked = ~masked
    np.testing.assert_array_equal(a[unmasked], x[unmasked])
    # Masked cells form whole rows (freq masks) or whole columns (time masks) only.
    full_rows = masked.all(axis=1)
    full_cols = masked.all(axis=0)
    np.testing.assert_array_equal(masked, full_rows[:, None] | full_cols[None, :])
    assert full_rows.sum() <= 2 * 4 and full_cols.sum() <= 2 * 6
    # Widths larger than the axis are clipped, never out of bounds.
    tiny = M.spec_augment(np.ones((3, 5)), rng=np.random.default_rng(2), freq_masks=3,
                          freq_width=50, time_masks=3, time_width=50)
    assert tiny.shape == (3, 5)
    with pytest.raises(ValueError):
        M.spec_augment(np.ones((2, 3, 4)), rng=np.random.default_rng(0))


def test_spec_augment_masks_something_over_draws():
    x = np.ones((16, 40))
    n_masked = [
        int((M.spec_augment(x, rng=np.random.default_rng(s)) == 0).sum()) for s in range(5)
    ]
    assert max(n_masked) > 0


# ------------------------------------------------------------------ waveform augmentation

SR = 8000


@pytest.fixture(scope="module")
def tone() -> np.ndarray:
    t = np.arange(SR // 2) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_augment_waveform_deterministic_and_changes(tone):
    kw = dict(sr=SR, noise_snr_db=(20, 30), time_stretch=(0.9, 1.1), pitch_shift=(-2, 2),
              gain_db=(-6, 6))
    a = M.augment_waveform(tone, rng=np.random.default_rng(0), **kw)
    b = M.augment_waveform(tone, rng=np.random.default_rng(0), **kw)
    c = M.augment_waveform(tone, rng=np.random.default_rng(1), **kw)
    assert a.dtype == np.float32 and a.shape == tone.shape
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, tone)
    assert not np.allclose(a, c)


def test_augment_waveform_noop_when_all_none(tone):
    out = M.augment_waveform(tone, sr=SR, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, tone)
    assert out is not tone


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_augment_waveform_noise_snr(tone, snr_db):
    out = M.augment_waveform(tone, sr=SR, rng=np.random.default_rng(0), noise_snr_db=(snr_db,
                                                                                       snr_db))
    noise = out.astype(np.float64) - tone
    measured = 10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / np.mean(noise**2))
    assert abs(measured - snr_db) < 0.5


def test_augment_waveform_gain(tone):
    out = M.augment_waveform(tone, sr=SR, rng=np.random.default_rng(0), gain_db=(6.0, 6.0))
    np.testing.assert_allclose(out, tone * 10 ** (6 / 20), rtol=1e-5)


def test_augment_waveform_time_stretch_length(tone):
    kw = dict(sr=SR, rng=np.random.default_rng(0), time_stretch=(2.0, 2.0))
    assert M.augment_waveform(tone, **kw).shape == tone.shape
    kw["rng"] = np.random.default_rng(0)
    assert abs(len(M.augment_waveform(tone, keep_length=False, **kw)) - len(tone) / 2) < 64


def test_augment_waveform_silence_and_bad_input():
    silent = np.zeros(1000, dtype=np.float32)
    out = M.augment_waveform(silent, sr=SR, rng=np.random.default_rng(0), noise_snr_db=(10, 10))
    np.testing.assert_array_equal(out, silent)
    with pytest.raises(ValueError):
        M.augment_waveform(np.zeros((2, 100)), sr=SR, rng=np.random.default_rng(0))


def test_import_is_cheap():
    """Importing the module must not import Keras (it is loaded lazily)."""
    import subprocess
    import sys

    code = "import sys, soundstage.models; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ crop length, batch streams, progress


@pytest.mark.parametrize(("lengths", "expected"), [
    ([7] * 100, 8),                         # 0.44 s clips at 8 kHz, hop 512: the floor, not 128
    ([20] * 95 + [300] * 5, 20),            # the 5 % longest do not set the crop
    ([20] * 94 + [300] * 6, 128),           # ...but 6 % do, capped at 128
    (list(range(1, 101)), 95),              # the least length 95 % of the clips do not exceed
    ([5000, 4000], 128),
    ([33], 33),
])
def test_auto_crop_frames_rule(lengths, expected):
    rng = np.random.default_rng(0)
    assert M.auto_crop_frames(rng.permutation(np.array(lengths))) == expected
    assert M.resolve_crop_frames("auto", lengths) == expected
    assert M.resolve_crop_frames(48, lengths) == 48  # an integer is taken as is


@pytest.mark.parametrize("lengths", [[], [0, 10], [-3], [10.5, 20.0], [[10, 20]]])
def test_auto_crop_frames_refuses_bad_lengths(lengths):
    with pytest.raises(ValueError, match="frame count"):
        M.auto_crop_frames(np.array(lengths))


@pytest.mark.parametrize("value", [0, -8, "big", "AUTO", True, 12.0, None])
def test_resolve_crop_frames_refuses_bad_values_naming_the_key(value):
    with pytest.raises(ValueError, match=r"keras_cnn\.crop_frames must be 'auto' or an integer >= 1"):
        M.resolve_crop_frames(value, [40, 40])


@pytest.fixture(scope="module")
def spec_files(tmp_path_factory):
    """Raw dB "log-mels" of different lengths as .npy files (as `features` writes them) and their stats."""
    root = tmp_path_factory.mktemp("logmel")
    r = np.random.default_rng(4)
    specs = [(r.normal(-40.0, 12.0, size=(16, n))).astype(np.float32) for n in (50, 7, 31, 24, 90, 12, 40)]
    for i, s in enumerate(specs):
        np.save(root / f"c{i}.npy", s)
    frames = np.concatenate(specs, axis=1)
    stats = {"mean": frames.mean(axis=1), "std": frames.std(axis=1)}
    maps = [np.load(root / f"c{i}.npy", mmap_mode="r") for i in range(len(specs))]
    return specs, maps, stats, np.arange(len(specs)) % N_CLASSES


def test_crop_batches_read_from_files_equal_the_in_memory_ones(spec_files):
    specs, maps, stats, y = spec_files
    def standardize(s):
        return M.standardize_logmel(s, **stats)

    in_memory = [standardize(s) for s in specs]  # the whole set standardized up front
    kw = dict(crop_frames=24, crops_per_clip=3, batch_size=4, seed=5,
              augment={"freq_masks": 1, "freq_width": 3, "time_masks": 1, "time_width": 3})
    lazy = M._make_crop_dataset(maps, y, standardize=standardize, **kw)
    eager = M._make_crop_dataset(in_memory, y, **kw)
    assert len(lazy) == len(eager) == 21 // 4  # full batches only
    seen = []
    for _epoch in range(2):
        for i in reversed(range(len(lazy))):  # any order: batch i is batch i
            (xa, ya), (xb, yb) = lazy[i], eager[i]
            assert xa.shape == (4, 16, 24, 1) and xa.dtype == np.float32
            np.testing.assert_allclose(xa, xb, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(lazy[i][0], xa)  # asked twice: the same batch
            seen.append(xa)
        lazy.on_epoch_begin()
        eager.on_epoch_begin()
    assert not np.array_equal(seen[0], seen[len(lazy)])  # a new epoch draws new crops
    # Each crop is a standardized window of its clip, zero-padded when the clip is short.
    x, labels = M._make_crop_dataset(maps, y, standardize=standardize, **{**kw, "augment": None})[0]
    for crop, label in zip(x[..., 0], labels, strict=True):
        windows = [np.concatenate([w, np.zeros((16, 24 - w.shape[1]), np.float32)], axis=1)
                   for k, s in enumerate(in_memory) if y[k] == label
                   for w in (s[:, j:j + 24] for j in range(max(1, s.shape[1] - 23)))]
        assert any(np.allclose(crop, w, atol=1e-6) for w in windows)


def test_sliding_batches_read_from_files_equal_the_stacked_crops(spec_files):
    specs, maps, stats, y = spec_files
    def standardize(s):
        return M.standardize_logmel(s, **stats)

    data = M._make_sliding_dataset(maps, y, crop_frames=24, hop_frames=10, batch_size=8, standardize=standardize)
    x = np.concatenate([data[i][0] for i in range(len(data))])
    labels = np.concatenate([data[i][1] for i in range(len(data))])
    expected, owner = M._stack_sliding([standardize(s) for s in specs], crop_frames=24, hop_frames=10)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels, y[owner])
    assert max(len(data[i][0]) for i in range(len(data))) == 8


def test_time_masks_shrink_with_the_crop():
    aug = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 16}
    assert M._time_mask_cap(aug, 128) == aug
    assert M._time_mask_cap(aug, 40) == {**aug, "time_width": 5}
    assert M._time_mask_cap(aug, 7)["time_width"] == 1
    assert M._time_mask_cap(None, 40) is None


def test_cnn_auto_crop_follows_the_clips_and_logs_each_epoch(spec_files, capsys):
    specs, maps, stats, y = spec_files
    model, history = M.fit_keras_cnn(maps, y, maps[:3], y[:3], n_classes=N_CLASSES, crop_frames="auto",
                                     hop_frames=500, crops_per_clip=1, filters=(4,), batch_size=4, epochs=2,
                                     patience=2, seed=1, standardize=lambda s: M.standardize_logmel(s, **stats))
    assert model.input_shape[2] == M.auto_crop_frames([s.shape[1] for s in specs]) == 90
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("keras_cnn epoch")]
    assert len(lines) == len(history["loss"]) == 2
    assert lines[0].startswith("keras_cnn epoch 1/2: loss ")
    for ln in lines:
        assert "val_loss" in ln and "val_accuracy" in ln and ln.endswith(" s")


def test_mlp_logs_one_line_per_epoch_to_stderr(blobs, capsys):
    b = blobs
    _, history = M.fit_keras_mlp(b["Z_tr"], b["y_tr"], b["Z_va"], b["y_va"], **{**MLP_KW, "epochs": 3})
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("keras_mlp epoch")]
    assert [ln.split(":")[0] for ln in lines] == [f"keras_mlp epoch {i}/3" for i in range(1, len(history["loss"]) + 1)]
    assert all(", val_loss " in ln and ", val_accuracy " in ln for ln in lines)
    M.fit_keras_mlp(b["Z_tr"], b["y_tr"], None, None, **{**MLP_KW, "epochs": 1}, verbose=0)
    assert "keras_mlp epoch" not in capsys.readouterr().err  # explicit verbose=0: quiet
