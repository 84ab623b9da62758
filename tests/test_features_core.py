"""Tests for soundstage.features_core: parity with librosa called on the signal itself.

Every feature of ``extract()`` is compared with the librosa 0.11 function that computes it
from ``y`` (its own STFT), on generated signals (tone, chirp, white noise, silence, a clip
shorter than ``n_fft``) at 22050 and 16000 Hz, for the default config and a non-default one.

Tolerances (``ref`` = librosa's value cast to float32, ``scale`` = ``max |ref|``):

============================  ==========================================  ================
feature                       tolerance                                   observed
============================  ==========================================  ================
logmel (dB)                   rtol 1e-5, atol 1e-3 dB                     ~1e-5 dB
mfcc, mfcc_delta, _delta2     rtol 1e-4, atol 1e-5 × max|mfcc ref|        ~4e-7 × scale
chroma                        rtol 1e-5, atol 1e-6                        exact
centroid, bandwidth (Hz)      rtol 1e-5, atol 1e-3 Hz                     ~5e-8 relative
rolloff (Hz)                  exact                                       exact
contrast (dB)                 rtol 1e-5, atol 1e-4 dB                     ~1e-5 dB
flatness                      rtol 1e-5, atol 1e-7                        exact
rms                           rtol 1e-6, atol 0 (vs ``rms(S=|stft(y)|)``) exact
zcr                           exact                                       exact
tempo (BPM)                   rtol 1e-6                                   exact
============================  ==========================================  ================

MFCCs use a cached DCT matrix (float32 matmul) instead of ``scipy.fft.dct``, hence the
looser bound. The STFT magnitude itself is bit-identical to ``np.abs(librosa.stft(y))``; the
log-mel differs only by the reassociated float32 sums of the block-sparse mel product. ``rms`` is
compared with librosa's spectral RMS, not ``rms(y=y)``: the two are different definitions (windowed
vs unwindowed frames), see ``extract``'s docstring.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import librosa
import numpy as np
import pytest
import scipy.stats

from soundstage.features_core import (
    FEATURE_NAMES,
    SPECTRAL_FEATURES,
    FeatureConfig,
    _chroma_basis,
    _deltas,
    _fft_window,
    _mel_basis,
    _stft_magnitude,
    extract,
    summary_statistics,
)

DURATION = 1.0  # seconds: enough frames for deltas (width 9) at both hop lengths

CONFIGS = {
    "default": FeatureConfig(tempo=True),
    "custom": FeatureConfig(
        n_fft=1024,
        hop_length=256,
        win_length=800,
        n_mels=64,
        fmin=30.0,
        fmax=6000.0,
        n_mfcc=13,
        n_chroma=24,
        roll_percent=0.9,
        n_bands=4,
        tempo=True,
    ),
}

SIGNALS = ("tone", "chirp", "noise", "silence", "short")

TOL = {
    "logmel": dict(rtol=1e-5, atol=1e-3),
    "chroma": dict(rtol=1e-5, atol=1e-6),
    "centroid": dict(rtol=1e-5, atol=1e-3),
    "bandwidth": dict(rtol=1e-5, atol=1e-3),
    "rolloff": dict(rtol=0, atol=0),
    "contrast": dict(rtol=1e-5, atol=1e-4),
    "flatness": dict(rtol=1e-5, atol=1e-7),
    "rms": dict(rtol=1e-6, atol=0),
    "zcr": dict(rtol=0, atol=0),
    "tempo": dict(rtol=1e-6, atol=0),
}
MFCC_RTOL = 1e-4
MFCC_ATOL_FRACTION = 1e-5


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def make_signal(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(DURATION * sr)
    if kind == "tone":
        y = 0.5 * librosa.tone(440.0, sr=sr, length=n) + 0.2 * librosa.tone(1250.0, sr=sr, length=n)
    elif kind == "chirp":
        y = 0.5 * librosa.chirp(fmin=110.0, fmax=sr / 3, sr=sr, length=n)
    elif kind == "noise":
        y = 0.1 * rng.standard_normal(n)
    elif kind == "silence":
        y = np.zeros(n)
    elif kind == "short":  # shorter than any n_fft used here
        y = 0.3 * librosa.tone(660.0, sr=sr, length=700) + 0.05 * rng.standard_normal(700)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return y.astype(np.float32)


def librosa_reference(y: np.ndarray, sr: int, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Each feature from librosa's own entry point on ``y`` (one STFT per call)."""
    stft_kw = dict(
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=cfg.window,
        center=cfg.center,
        pad_mode=cfg.pad_mode,
    )
    mel_kw = dict(n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    ref: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
        mel = librosa.feature.melspectrogram(y=y, sr=sr, power=cfg.power, **stft_kw, **mel_kw)
        ref["logmel"] = librosa.power_to_db(mel, ref=1.0, top_db=cfg.top_db)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=cfg.n_mfcc, power=cfg.power, **stft_kw, **mel_kw)
        ref["mfcc"] = mfcc
        # Documented fallback: librosa's default mode="interp" needs >= width frames.
        mode = "interp" if mfcc.shape[-1] >= cfg.delta_width else "nearest"
        ref["mfcc_delta"] = librosa.feature.delta(mfcc, width=cfg.delta_width, mode=mode)
        ref["mfcc_delta2"] = librosa.feature.delta(mfcc, width=cfg.delta_width, order=2, mode=mode)
        ref["chroma"] = librosa.feature.chroma_stft(
            y=y, sr=sr, tuning=cfg.tuning, n_chroma=cfg.n_chroma, **stft_kw
        )
        ref["centroid"] = librosa.feature.spectral_centroid(y=y, sr=sr, **stft_kw)
        ref["bandwidth"] = librosa.feature.spectral_bandwidth(y=y, sr=sr, **stft_kw)
        ref["rolloff"] = librosa.feature.spectral_rolloff(
            y=y, sr=sr, roll_percent=cfg.roll_percent, **stft_kw
        )
        ref["contrast"] = librosa.feature.spectral_contrast(y=y, sr=sr, n_bands=cfg.n_bands, **stft_kw)
        ref["flatness"] = librosa.feature.spectral_flatness(y=y, **stft_kw)
        ref["rms"] = librosa.feature.rms(
            S=np.abs(librosa.stft(y, **stft_kw)), frame_length=cfg.n_fft, hop_length=cfg.hop_length
        )
        ref["zcr"] = librosa.feature.zero_crossing_rate(
            y, frame_length=cfg.n_fft, hop_length=cfg.hop_length, center=cfg.center
        )
        onset_env = librosa.onset.onset_strength(y=y, sr=sr, **stft_kw, **mel_kw)
        ref["tempo"] = librosa.feature.tempo(onset_envelope=onset_env, sr=sr, hop_length=cfg.hop_length)
    return ref


@pytest.mark.integration  # librosa's JIT / Keras models: seconds each
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("sr", [22050, 16000])
@pytest.mark.parametrize("kind", SIGNALS)
def test_parity_with_librosa(kind: str, sr: int, config_name: str, rng: np.random.Generator) -> None:
    cfg = CONFIGS[config_name]
    y = make_signal(kind, sr, rng)
    ours = extract(y, sr=sr, config=cfg)
    ref = librosa_reference(y, sr, cfg)

    assert list(ours) == list(FEATURE_NAMES)
    mfcc_atol = MFCC_ATOL_FRACTION * float(np.max(np.abs(ref["mfcc"])))
    for key in FEATURE_NAMES:
        expected = np.asarray(ref[key], dtype=np.float32).reshape(ours[key].shape)
        if key.startswith("mfcc"):
            tol = dict(rtol=MFCC_RTOL, atol=mfcc_atol)
        else:
            tol = TOL[key]
        np.testing.assert_allclose(ours[key], expected, **tol, err_msg=f"{key} ({kind}, {sr} Hz)")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"center": False}, {"n_fft": 1024, "hop_length": 256, "win_length": 800, "window": "hamming"},
     {"pad_mode": "reflect"}],
)
@pytest.mark.parametrize("n_samples", [700, 2048, 64 * 512, 64 * 512 + 1, 150_000])
def test_stft_magnitude_is_bit_identical_to_librosa(kwargs: dict, n_samples: int, rng: np.random.Generator) -> None:
    cfg = FeatureConfig(**kwargs)
    y = (0.2 * rng.standard_normal(n_samples) + 0.3 * np.sin(0.05 * np.arange(n_samples))).astype(np.float32)
    if not cfg.center and n_samples < cfg.n_fft:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
        ref = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                                  window=cfg.window, center=cfg.center, pad_mode=cfg.pad_mode))
    ours = _stft_magnitude(y, cfg)
    assert ours.flags.c_contiguous and ours.dtype == np.float32
    np.testing.assert_array_equal(ours.T, ref)


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [(22050, 2048, 128, 0.0, None), (16000, 1024, 64, 30.0, 6000.0), (44100, 4096, 40, 100.0, None)],
)
def test_filterbanks_are_librosas(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> None:
    """Built here (no librosa import in workers), bit-identical to librosa's."""
    np.testing.assert_array_equal(
        _mel_basis(sr, n_fft, n_mels, fmin, fmax),
        librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax),
    )
    for tuning in (0.0, 0.3, -0.25):
        for n_chroma in (12, 24):
            np.testing.assert_array_equal(
                _chroma_basis(sr, n_fft, n_chroma, tuning),
                librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=n_chroma),
            )


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "triang"])
@pytest.mark.parametrize("n_fft, win_length", [(2048, 2048), (1024, 800), (512, 1), (16, 15)])
def test_windows_are_librosas(window: str, n_fft: int, win_length: int) -> None:
    expected = librosa.util.pad_center(librosa.filters.get_window(window, win_length, fftbins=True), size=n_fft)
    np.testing.assert_array_equal(_fft_window(window, win_length, n_fft), expected)


@pytest.mark.parametrize("width", [3, 5, 9, 11])
@pytest.mark.parametrize("order", [1, 2])
def test_delta_matches_librosa(width: int, order: int, rng: np.random.Generator) -> None:
    x = (100 * rng.standard_normal((20, 50))).astype(np.float32)
    expected = librosa.feature.delta(x, width=width, order=order)
    alone = _deltas(x, width=width, orders=(order,))[0]
    np.testing.assert_allclose(alone, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    together = _deltas(x, width=width, orders=(1, 2))[order - 1]  # both orders from one product
    assert together.dtype == np.float32 and together.shape == x.shape
    np.testing.assert_allclose(together, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_default_features_do_not_import_librosa() -> None:
    """Workers stay lean (~140 MB instead of ~320 MB) and start faster: librosa (numba, llvmlite)
    and scipy.signal load only for tuning estimation, tempo and the < width-frame delta fallback."""
    code = (
        "import sys, numpy as np\n"
        "from soundstage.features_core import extract, FeatureConfig\n"
        "extract(np.random.default_rng(0).standard_normal(22050).astype(np.float32), sr=22050)\n"
        "extract(np.zeros(8000, np.float32), sr=16000, config=FeatureConfig(n_fft=1024, window='hamming'))\n"
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_long_clip_parity(rng: np.random.Generator) -> None:
    """A 20 s clip: many STFT blocks, long delta interiors, every contrast band sorted."""
    sr = 22050
    n = 20 * sr
    y = 0.3 * librosa.chirp(fmin=60.0, fmax=8000.0, sr=sr, length=n) + 0.05 * rng.standard_normal(n)
    y = y.astype(np.float32)
    cfg = FeatureConfig()
    ours = extract(y, sr=sr, config=cfg)
    ref = librosa_reference(y, sr, cfg)
    mfcc_atol = MFCC_ATOL_FRACTION * float(np.max(np.abs(ref["mfcc"])))
    for key, value in ours.items():
        tol = dict(rtol=MFCC_RTOL, atol=mfcc_atol) if key.startswith("mfcc") else TOL[key]
        np.testing.assert_allclose(value, np.asarray(ref[key], np.float32).reshape(value.shape), **tol, err_msg=key)


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("n_samples", [1, 700, 16000, 16001])
def test_shapes_dtypes_finite(config_name: str, n_samples: int, rng: np.random.Generator) -> None:
    cfg = CONFIGS[config_name]
    y = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    feats = extract(y, sr=16000, config=cfg)
    t = 1 + n_samples // cfg.hop_length
    expected_rows = {
        "logmel": cfg.n_mels,
        "mfcc": cfg.n_mfcc,
        "mfcc_delta": cfg.n_mfcc,
        "mfcc_delta2": cfg.n_mfcc,
        "chroma": cfg.n_chroma,
        "contrast": cfg.n_bands + 1,
    }
    for key, value in feats.items():
        assert value.dtype == np.float32, key
        assert np.isfinite(value).all(), key
        if key == "tempo":
            assert value.shape == (1, 1)
        else:
            assert value.shape == (expected_rows.get(key, 1), t), key


def test_silence_is_finite_and_documented_values() -> None:
    feats = extract(np.zeros(8000, dtype=np.float32), sr=16000, config=FeatureConfig(tempo=True))
    for key, value in feats.items():
        assert np.isfinite(value).all(), key
    np.testing.assert_allclose(feats["logmel"], -100.0, rtol=1e-6)  # amin floor: 1e-10 -> -100 dB
    for key in ("centroid", "bandwidth", "rolloff", "rms", "zcr", "chroma", "contrast"):
        np.testing.assert_array_equal(feats[key], 0.0, err_msg=key)
    np.testing.assert_allclose(feats["flatness"], 1.0, rtol=1e-6)
    # A constant sequence has zero derivatives, up to float32 rounding of |mfcc| ~ 1131.
    np.testing.assert_allclose(feats["mfcc_delta"], 0.0, atol=1e-7 * np.abs(feats["mfcc"]).max())


def test_one_frame_deltas_use_nearest_fallback() -> None:
    cfg = FeatureConfig(n_fft=512, hop_length=512)
    y = librosa.tone(1000.0, sr=16000, length=300).astype(np.float32)
    feats = extract(y, sr=16000, config=cfg)
    assert feats["mfcc"].shape == (20, 1)
    # A constant sequence has zero derivatives (up to the filter coefficients' rounding).
    np.testing.assert_allclose(feats["mfcc_delta"], 0.0, atol=1e-9)
    np.testing.assert_allclose(feats["mfcc_delta2"], 0.0, atol=1e-9)


def test_uncentered_short_clip_is_zero_padded(rng: np.random.Generator) -> None:
    cfg = FeatureConfig(center=False, n_fft=1024, hop_length=256)
    y = (0.1 * rng.standard_normal(600)).astype(np.float32)
    feats = extract(y, sr=16000, config=cfg)
    padded = np.pad(y, (0, 1024 - 600))
    np.testing.assert_allclose(
        feats["centroid"][0],
        librosa.feature.spectral_centroid(y=padded, sr=16000, n_fft=1024, hop_length=256, center=False)[0],
        rtol=1e-5,
    )
    assert feats["logmel"].shape == (128, 1)


def test_uncentered_parity(rng: np.random.Generator) -> None:
    cfg = FeatureConfig(center=False, n_fft=1024, hop_length=256, n_mels=40)
    y = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    feats = extract(y, sr=16000, config=cfg)
    kw = dict(n_fft=1024, hop_length=256, center=False)
    ref_mfcc = librosa.feature.mfcc(y=y, sr=16000, n_mels=40, **kw)
    np.testing.assert_allclose(feats["mfcc"], ref_mfcc, rtol=MFCC_RTOL, atol=1e-5 * np.abs(ref_mfcc).max())
    np.testing.assert_array_equal(
        feats["zcr"], librosa.feature.zero_crossing_rate(y, frame_length=1024, hop_length=256, center=False)
    )
    np.testing.assert_array_equal(
        feats["rolloff"], librosa.feature.spectral_rolloff(y=y, sr=16000, **kw).astype(np.float32)
    )


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("top_db", [None, 80.0])
def test_logmel_power_and_top_db(power: float, top_db: float | None, rng: np.random.Generator) -> None:
    cfg = FeatureConfig(power=power, top_db=top_db, n_mfcc=0, chroma=False, spectral=(), rms=False, zcr=False)
    y = make_signal("chirp", 16000, rng)
    feats = extract(y, sr=16000, config=cfg)
    assert list(feats) == ["logmel"]
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=16000, power=power), top_db=top_db)
    np.testing.assert_allclose(feats["logmel"], ref, **TOL["logmel"])


def test_estimated_tuning_matches_librosa_default() -> None:
    sr = 22050
    y = librosa.tone(452.0, sr=sr, duration=1.0).astype(np.float32)  # ~ +0.47 semitone off A4
    feats = extract(y, sr=sr, config=FeatureConfig(tuning=None))
    ref = librosa.feature.chroma_stft(y=y, sr=sr)  # tuning=None: estimated
    np.testing.assert_allclose(feats["chroma"], ref, **TOL["chroma"])
    fixed = extract(y, sr=sr, config=FeatureConfig(tuning=0.0))
    assert not np.allclose(fixed["chroma"], feats["chroma"])


def test_feature_selection() -> None:
    cfg = FeatureConfig(
        n_mfcc=13, mfcc_deltas=False, chroma=False, spectral=("rolloff", "centroid"), rms=False, zcr=True
    )
    y = librosa.tone(300.0, sr=16000, duration=0.5).astype(np.float32)
    assert list(extract(y, sr=16000, config=cfg)) == ["logmel", "mfcc", "centroid", "rolloff", "zcr"]
    only_logmel = FeatureConfig(mfcc=False, chroma=False, spectral=(), rms=False, zcr=False)
    assert list(extract(y, sr=16000, config=only_logmel)) == ["logmel"]
    assert list(extract(y, sr=16000, config=FeatureConfig(n_mfcc=0, chroma=False, spectral=(), rms=False,
                                                           zcr=False, tempo=True))) == ["logmel", "tempo"]


def test_extract_does_not_mutate_input_or_cache(rng: np.random.Generator) -> None:
    y = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    y_copy = y.copy()
    first = extract(y, sr=16000)
    first["logmel"][:] = 0.0  # callers own the outputs
    np.testing.assert_array_equal(y, y_copy)
    assert not _mel_basis(16000, 2048, 128, 0.0, None).flags.writeable
    again = extract(y, sr=16000)
    assert np.abs(again["logmel"]).max() > 0


def test_float64_input_is_cast_to_float32(rng: np.random.Generator) -> None:
    y64 = 0.1 * rng.standard_normal(4000)
    a = extract(y64, sr=16000)
    b = extract(y64.astype(np.float32), sr=16000)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "y, sr, match",
    [
        (np.zeros((2, 100), np.float32), 16000, "1-D"),
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.array([0.0, np.nan, 0.0], np.float32), 16000, "NaN"),
        (np.array([0.0, np.inf], np.float32), 16000, "NaN or infinite"),
        (np.zeros(100, np.complex64), 16000, "floating-point"),
        (np.zeros(100, np.int16), 16000, "floating-point"),
        (np.zeros(100, np.float32), 0, "sr"),
        (np.zeros(100, np.float32), 16000.5, "sr"),
    ],
)
def test_extract_rejects_bad_input(y: np.ndarray, sr: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        extract(y, sr=sr)


def test_contrast_beyond_nyquist_raises() -> None:
    with pytest.raises(ValueError, match="n_bands"):
        extract(np.zeros(4000, np.float32), sr=8000)  # 200 Hz * 2**5 = 6.4 kHz >= 4 kHz
    feats = extract(np.zeros(4000, np.float32), sr=8000, config=FeatureConfig(n_bands=4))
    assert feats["contrast"].shape[0] == 5


# -- FeatureConfig (params.yaml validation and its errors: tests/test_config.py) ----------


def test_config_defaults_and_round_trip() -> None:
    cfg = FeatureConfig()
    assert (cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.n_mfcc, cfg.tuning) == (2048, 512, 128, 20, 0.0)
    assert cfg.spectral == SPECTRAL_FEATURES
    d = cfg.to_dict()
    assert d["spectral"] == list(SPECTRAL_FEATURES) and d["summary"] == ["mean", "std"]
    assert FeatureConfig.from_dict(d) == cfg
    assert FeatureConfig.from_dict(None) == cfg
    assert FeatureConfig.from_dict({}) == cfg
    hash(cfg)  # frozen and hashable, lists normalised to tuples


def test_config_from_dict_keeps_none_and_makes_tuples() -> None:
    cfg = FeatureConfig.from_dict({"fmax": None, "tuning": None, "spectral": ["rolloff"]})
    assert cfg.tuning is None  # None is meaningful here: estimate per clip
    assert cfg.fmax is None
    assert cfg.spectral == ("rolloff",)
    hash(cfg)


# -- summary_statistics ------------------------------------------------------------------


def test_summary_statistics_names_order_and_values(rng: np.random.Generator) -> None:
    a = rng.standard_normal((2, 7)).astype(np.float32)
    b = rng.standard_normal((1, 7)).astype(np.float32)
    feats = {"mfcc": a, "logmel": rng.standard_normal((3, 7)).astype(np.float32), "centroid": b}
    row = summary_statistics(feats)
    assert list(row) == [
        "mfcc_mean_00",
        "mfcc_mean_01",
        "mfcc_std_00",
        "mfcc_std_01",
        "centroid_mean_00",
        "centroid_std_00",
    ]
    a64 = a.astype(np.float64)
    assert row["mfcc_mean_01"] == pytest.approx(a64[1].mean(), rel=1e-12)
    assert row["mfcc_std_00"] == pytest.approx(a64[0].std(), rel=1e-12)
    assert all(isinstance(v, float) for v in row.values())
    with_logmel = summary_statistics(feats, exclude=())
    assert "logmel_mean_02" in with_logmel and len(with_logmel) == 12


@pytest.mark.parametrize("stat", ["mean", "std", "min", "max", "median", "skew", "kurtosis"])
def test_summary_statistics_each_stat(stat: str, rng: np.random.Generator) -> None:
    x = rng.gamma(2.0, size=(3, 50))
    expected = {
        "mean": np.mean(x, axis=1),
        "std": np.std(x, axis=1),
        "min": np.min(x, axis=1),
        "max": np.max(x, axis=1),
        "median": np.median(x, axis=1),
        "skew": scipy.stats.skew(x, axis=1),
        "kurtosis": scipy.stats.kurtosis(x, axis=1),
    }[stat]
    row = summary_statistics({"f": x}, stats=(stat,))
    assert list(row) == [f"f_{stat}_00", f"f_{stat}_01", f"f_{stat}_02"]
    np.testing.assert_allclose(list(row.values()), expected, rtol=1e-10)


def test_summary_statistics_constant_rows_are_finite() -> None:
    row = summary_statistics({"f": np.full((2, 5), 3.0, np.float32)}, stats=("std", "skew", "kurtosis"))
    assert row == {
        "f_std_00": 0.0,
        "f_std_01": 0.0,
        "f_skew_00": 0.0,
        "f_skew_01": 0.0,
        "f_kurtosis_00": 0.0,
        "f_kurtosis_01": 0.0,
    }


def test_summary_statistics_extract_output_is_deterministic(rng: np.random.Generator) -> None:
    y = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    feats = extract(y, sr=16000)
    row = summary_statistics(feats)
    n_rows = 3 * 20 + 12 + 1 + 1 + 1 + 7 + 1 + 1 + 1  # mfcc(+Δ,ΔΔ), chroma, spectral, rms, zcr
    assert len(row) == 2 * n_rows
    assert list(row)[:2] == ["mfcc_mean_00", "mfcc_mean_01"]
    assert list(summary_statistics(extract(y, sr=16000))) == list(row)
    assert all(np.isfinite(v) for v in row.values())


@pytest.mark.parametrize(
    "feats, stats, match",
    [
        ({"f": np.zeros((2, 3))}, ("mean", "mode"), "mode"),
        ({"f": np.zeros(3)}, ("mean",), "2-D"),
        ({"f": np.zeros((2, 0))}, ("mean",), "2-D"),
    ],
)
def test_summary_statistics_rejects_bad_input(feats: dict, stats: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summary_statistics(feats, stats=stats)
