"""Pure feature extraction: one STFT per clip, every feature derived from it.

No file I/O here: :mod:`soundstage.features` (the stage) decodes audio, calls :func:`extract`
and :func:`summarize`, and writes the results.

Conventions
-----------
- Every feature is a ``float32`` array of shape ``(n_bins, n_frames)``; single-row features
  (centroid, rms, ...) keep a leading axis of 1. ``tempo`` is a clip-level value of shape
  ``(1, 1)``.
- ``n_frames`` is the STFT frame count: ``1 + len(y) // hop_length`` when ``center=True``.
- Parity: each feature equals the corresponding librosa 0.11 function called on the signal
  itself (``librosa.feature.<name>(y=y, ...)`` with the same parameters), within the
  tolerances stated in ``tests/test_features_core.py``. Exceptions, all documented below:
  ``rms`` (spectral RMS, see :func:`extract`), MFCC deltas on clips with fewer frames than
  the delta width, and ``tempo`` (derived from this module's log-mel).

Degenerate input
----------------
- A clip shorter than ``n_fft`` works with ``center=True``: librosa pads ``n_fft // 2``
  samples on each side (``pad_mode``), giving ``1 + len(y) // hop_length`` frames; its
  "n_fft too large" warning is silenced. With ``center=False`` such a clip is zero-padded at
  the end to ``n_fft`` samples (one frame), where librosa would raise.
- Silence gives finite values, identical to librosa's: log-mel at the ``amin`` floor
  (-100 dB), centroid/bandwidth/rolloff/zcr/rms 0, flatness 1, contrast 0, chroma 0,
  tuning (when estimated) 0, and tempo the peak of librosa's tempo prior (~117 BPM).
- An empty or non-finite signal raises :class:`ValueError`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import librosa
import numpy as np
import scipy.fft

__all__ = [
    "FEATURE_NAMES",
    "SPECTRAL_FEATURES",
    "SUMMARY_STATS",
    "FeatureConfig",
    "extract",
    "summarize",
]

#: Spectral shape features that ``FeatureConfig.spectral`` may name.
SPECTRAL_FEATURES: tuple[str, ...] = ("centroid", "bandwidth", "rolloff", "contrast", "flatness")

#: Every key :func:`extract` can return, in the order it returns them.
FEATURE_NAMES: tuple[str, ...] = (
    "logmel",
    "mfcc",
    "mfcc_delta",
    "mfcc_delta2",
    "chroma",
    *SPECTRAL_FEATURES,
    "rms",
    "zcr",
    "tempo",
)

#: Statistics :func:`summarize` can compute over frames (per row).
SUMMARY_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "median", "skew", "kurtosis")

# librosa defaults that are not exposed as tunables.
_AMIN = 1e-10  # power floor of power_to_db and spectral_flatness
_CONTRAST_FMIN = 200.0  # Hz, lower edge of the first spectral-contrast band
_ZC_THRESHOLD = 1e-10  # |y| <= this counts as 0 in zero_crossings


@dataclass(frozen=True)
class FeatureConfig:
    """Feature-extraction settings (the ``features`` section of ``params.yaml``).

    STFT: ``n_fft`` / ``win_length`` / ``hop_length`` in samples, ``window``, ``center``,
    ``pad_mode`` as in :func:`librosa.stft`.

    Log-mel: ``n_mels`` Slaney-normalised filters between ``fmin`` and ``fmax`` Hz (``None``:
    ``sr / 2``) applied to ``|STFT| ** power``, then ``power_to_db(ref=1.0, amin=1e-10,
    top_db=top_db)`` in dB. ``top_db=80.0`` is librosa's default, which is what
    ``librosa.feature.mfcc(y=...)`` uses; ``None`` disables the clamp.

    MFCC: ``n_mfcc`` DCT-II (ortho) coefficients of the log-mel (``0`` disables MFCCs);
    ``mfcc_deltas`` adds Δ and ΔΔ (Savitzky–Golay, ``delta_width`` frames).

    Chroma: ``n_chroma`` bins from the power spectrogram with ``tuning`` in fractions of a
    bin (``None``: estimated per clip, as librosa does by default, ~50 ms per 30 s clip).

    Spectral: the names in ``spectral`` (see :data:`SPECTRAL_FEATURES`), with
    ``roll_percent`` for rolloff and ``n_bands`` for contrast. ``rms``, ``zcr``, ``tempo``
    toggle those features. ``summary`` names the statistics of :func:`summarize`.
    """

    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None
    window: str = "hann"
    center: bool = True
    pad_mode: str = "constant"
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    top_db: float | None = 80.0
    n_mfcc: int = 20
    mfcc_deltas: bool = True
    delta_width: int = 9
    chroma: bool = True
    n_chroma: int = 12
    tuning: float | None = 0.0
    spectral: tuple[str, ...] = field(default=SPECTRAL_FEATURES)
    roll_percent: float = 0.85
    n_bands: int = 6
    rms: bool = True
    zcr: bool = True
    tempo: bool = False
    summary: tuple[str, ...] = ("mean", "std")

    def __post_init__(self) -> None:
        # YAML gives lists; the dataclass is frozen and hashable, so store tuples.
        object.__setattr__(self, "spectral", tuple(self.spectral))
        object.__setattr__(self, "summary", tuple(self.summary))
        self._validate()

    def _validate(self) -> None:
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if not is_int or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        positive_int("n_fft", self.n_fft, 2)
        for name in ("window", "pad_mode"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        positive_int("hop_length", self.hop_length)
        if self.win_length is not None:
            positive_int("win_length", self.win_length)
            if self.win_length > self.n_fft:
                raise ValueError(f"win_length={self.win_length} exceeds n_fft={self.n_fft}")
        positive_int("n_mels", self.n_mels)
        positive_int("n_mfcc", self.n_mfcc, 0)
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} exceeds n_mels={self.n_mels}")
        positive_int("delta_width", self.delta_width, 3)
        if self.delta_width % 2 != 1:
            raise ValueError(f"delta_width must be odd, got {self.delta_width}")
        positive_int("n_chroma", self.n_chroma)
        positive_int("n_bands", self.n_bands)
        if self.fmin < 0:
            raise ValueError(f"fmin must be >= 0 Hz, got {self.fmin}")
        if self.fmax is not None and self.fmax <= self.fmin:
            raise ValueError(f"fmax={self.fmax} must exceed fmin={self.fmin}")
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        if self.top_db is not None and self.top_db < 0:
            raise ValueError(f"top_db must be >= 0 or None, got {self.top_db}")
        if not 0.0 < self.roll_percent < 1.0:
            raise ValueError(f"roll_percent must lie in (0, 1), got {self.roll_percent}")
        for name in self.spectral:
            if name not in SPECTRAL_FEATURES:
                raise ValueError(
                    f"unknown spectral feature {name!r}; choose from {SPECTRAL_FEATURES}"
                )
        for name in self.summary:
            if name not in SUMMARY_STATS:
                raise ValueError(f"unknown summary statistic {name!r}; choose from {SUMMARY_STATS}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FeatureConfig:
        """Build a config from a mapping (e.g. the ``features`` section of ``params.yaml``).

        Missing keys take their defaults, and so does ``None`` for a field that cannot be
        ``None`` (``n_fft: null`` means "unspecified"); for the fields where ``None`` has a
        meaning (``win_length``, ``fmax``, ``top_db``, ``tuning``) it is kept. ``d=None``
        gives the default config.

        Raises
        ------
        ValueError
            On an unknown key (named in the message) or an invalid value.
        """
        if d is None:
            return cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [key for key in d if key not in fields]
        if unknown:
            raise ValueError(f"unknown feature config key(s): {', '.join(map(repr, unknown))}")
        kwargs = {
            key: value
            for key, value in d.items()
            if value is not None or key in _NULLABLE_FIELDS
        }
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field (tuples as lists), for YAML/JSON and MLflow params."""
        out = dataclasses.asdict(self)
        out["spectral"] = list(self.spectral)
        out["summary"] = list(self.summary)
        return out


_NULLABLE_FIELDS = frozenset({"win_length", "fmax", "top_db", "tuning"})


# ---------------------------------------------------------------------------------------------
# Cached constant matrices. They are read-only so that a caller cannot corrupt the cache.


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=32)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """Slaney mel filterbank, float32 ``(n_mels, 1 + n_fft // 2)``, as melspectrogram builds it."""
    return _frozen(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


@functools.lru_cache(maxsize=32)
def _chroma_basis(sr: int, n_fft: int, n_chroma: int, tuning: float) -> np.ndarray:
    """Chroma filterbank, float32 ``(n_chroma, 1 + n_fft // 2)``, as chroma_stft builds it."""
    return _frozen(librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=n_chroma))


@functools.lru_cache(maxsize=32)
def _dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """First ``n_mfcc`` rows of the orthonormal DCT-II on ``n_mels`` points (float32).

    ``_dct_matrix(k, m) @ X == scipy.fft.dct(X, type=2, norm="ortho", axis=0)[:k]``, which
    is what ``librosa.feature.mfcc(S=X)`` computes, without transforming rows we discard.
    """
    basis = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
    return _frozen(basis.astype(np.float32))


@functools.lru_cache(maxsize=32)
def _freq_moments_basis(sr: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """FFT bin frequencies (Hz, float64) and the stacked rows ``[1, f, f**2]``."""
    freq = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    return _frozen(freq), _frozen(np.stack([np.ones_like(freq), freq, freq**2]))


# ---------------------------------------------------------------------------------------------


def extract(
    y: np.ndarray, *, sr: int, config: FeatureConfig | None = None
) -> dict[str, np.ndarray]:
    """Compute the configured features of one mono clip from a single STFT.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]
        Mono floating-point audio (nominally in [-1, 1]), converted to float32: parity holds
        against librosa on that float32 signal. Must be non-empty and finite.
    sr : int > 0
        Sample rate in Hz.
    config : FeatureConfig, optional
        Defaults to ``FeatureConfig()``.

    Returns
    -------
    dict[str, np.ndarray]
        float32 arrays ``(n_bins, n_frames)`` in the order of :data:`FEATURE_NAMES`:

        - ``logmel`` ``(n_mels, t)``, dB: ``power_to_db(mel(|D| ** power), ref=1.0,
          amin=1e-10, top_db=config.top_db)``. Always returned.
        - ``mfcc`` ``(n_mfcc, t)``: DCT-II (ortho) of ``logmel`` = ``librosa.feature.mfcc``.
        - ``mfcc_delta``, ``mfcc_delta2`` ``(n_mfcc, t)``: ``librosa.feature.delta(mfcc,
          width=delta_width, order=1|2)``. With fewer than ``delta_width`` frames,
          where librosa's ``mode="interp"`` raises, ``mode="nearest"`` is used instead (a
          one-frame clip then has zero deltas).
        - ``chroma`` ``(n_chroma, t)``: ``chroma_stft`` of ``|D| ** 2`` with ``tuning``.
        - ``centroid``, ``bandwidth``, ``rolloff`` ``(1, t)`` in Hz, ``contrast``
          ``(n_bands + 1, t)`` in dB, ``flatness`` ``(1, t)``: librosa's ``spectral_*`` of the
          magnitude ``|D|`` (flatness thresholds ``|D| ** 2`` at 1e-10, librosa's default).
        - ``rms`` ``(1, t)``: ``librosa.feature.rms(S=|D|, frame_length=n_fft)``, the RMS of
          each *windowed* frame via Parseval. It differs from ``rms(y=y)`` (unwindowed frames):
          for a Hann window it is about sqrt(3/8) of it on stationary signals.
        - ``zcr`` ``(1, t)``: ``zero_crossing_rate(y, frame_length=n_fft, hop_length,
          center)``, exactly (computed with one cumulative sum instead of framing).
        - ``tempo`` ``(1, 1)`` BPM: ``librosa.feature.tempo`` of ``onset_strength(S=logmel)``.
          This equals librosa's ``onset_strength(y=y, ...)`` with the same STFT and mel
          settings when ``power=2`` and ``top_db=80`` (what it uses internally), so with the
          default config it is ``librosa.feature.tempo(y=y, sr=sr)``.

    Raises
    ------
    ValueError
        If ``y`` is not a non-empty finite 1-D array, ``sr`` is not positive, or the
        spectral-contrast bands exceed the Nyquist frequency (reduce ``n_bands``).
    """
    cfg = FeatureConfig() if config is None else config
    y = _validate_signal(y, sr)
    # Fail before the STFT: librosa would only raise once it reaches spectral_contrast.
    if "contrast" in cfg.spectral and _CONTRAST_FMIN * 2.0 ** (cfg.n_bands - 1) >= 0.5 * sr:
        raise ValueError(
            f"spectral contrast with n_bands={cfg.n_bands} exceeds the Nyquist frequency "
            f"at sr={sr} Hz; reduce n_bands"
        )
    if not cfg.center and y.size < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - y.size))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        D = librosa.stft(
            y,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=cfg.window,
            center=cfg.center,
            pad_mode=cfg.pad_mode,
        )
    S_mag = np.abs(D)  # float32 (1 + n_fft // 2, t)
    del D
    # |D| ** 2 exactly as librosa's _spectrogram computes it (not re**2 + im**2), for parity.
    S_pow = S_mag**2
    out: dict[str, np.ndarray] = {}

    S_mel_in = S_pow if cfg.power == 2.0 else (S_mag if cfg.power == 1.0 else S_mag**cfg.power)
    mel = _mel_basis(sr, cfg.n_fft, cfg.n_mels, float(cfg.fmin), _opt_float(cfg.fmax)) @ S_mel_in
    logmel = librosa.power_to_db(mel, ref=1.0, amin=_AMIN, top_db=cfg.top_db)
    out["logmel"] = logmel

    if cfg.n_mfcc > 0:
        mfcc = _dct_matrix(cfg.n_mfcc, cfg.n_mels) @ logmel
        out["mfcc"] = mfcc
        if cfg.mfcc_deltas:
            mode = "interp" if mfcc.shape[-1] >= cfg.delta_width else "nearest"
            for order, key in ((1, "mfcc_delta"), (2, "mfcc_delta2")):
                out[key] = librosa.feature.delta(
                    mfcc, width=cfg.delta_width, order=order, mode=mode
                )

    if cfg.chroma:
        tuning = cfg.tuning
        if tuning is None:
            with warnings.catch_warnings():
                # Silence has no peaks to estimate from; librosa warns and returns 0.0.
                warnings.filterwarnings("ignore", message="Trying to estimate tuning from empty")
                tuning = float(
                    librosa.estimate_tuning(S=S_pow, sr=sr, bins_per_octave=cfg.n_chroma)
                )
        raw = _chroma_basis(sr, cfg.n_fft, cfg.n_chroma, float(tuning)) @ S_pow
        out["chroma"] = librosa.util.normalize(raw, norm=np.inf, axis=0)

    spectral = set(cfg.spectral)
    if spectral & {"centroid", "bandwidth"}:
        centroid, bandwidth = _centroid_bandwidth(S_mag, sr, cfg.n_fft)
        if "centroid" in spectral:
            out["centroid"] = centroid
        if "bandwidth" in spectral:
            out["bandwidth"] = bandwidth
    if "rolloff" in spectral:
        out["rolloff"] = _rolloff(S_mag, sr, cfg.n_fft, cfg.roll_percent)
    if "contrast" in spectral:
        out["contrast"] = librosa.feature.spectral_contrast(
            S=S_mag, sr=sr, n_fft=cfg.n_fft, n_bands=cfg.n_bands, fmin=_CONTRAST_FMIN
        )
    if "flatness" in spectral:
        out["flatness"] = _flatness(S_pow)

    if cfg.rms:
        out["rms"] = librosa.feature.rms(S=S_mag, frame_length=cfg.n_fft, hop_length=cfg.hop_length)
    if cfg.zcr:
        out["zcr"] = _zero_crossing_rate(y, cfg.n_fft, cfg.hop_length, cfg.center)

    if cfg.tempo:
        onset_env = librosa.onset.onset_strength(
            S=logmel, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=cfg.center
        )
        tempo = librosa.feature.tempo(onset_envelope=onset_env, sr=sr, hop_length=cfg.hop_length)
        out["tempo"] = np.reshape(tempo, (1, 1))

    return {key: np.asarray(out[key], dtype=np.float32) for key in FEATURE_NAMES if key in out}


def _opt_float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _validate_signal(y: np.ndarray, sr: int) -> np.ndarray:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr must be a positive integer (Hz), got {sr!r}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be mono 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y is empty")
    if not np.issubdtype(y.dtype, np.floating):
        # Integer PCM would need scaling to [-1, 1]; refuse rather than guess.
        raise ValueError(f"y must be real floating-point audio, got dtype {y.dtype}")
    y = np.ascontiguousarray(y, dtype=np.float32)
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinite samples")
    return y


def _centroid_bandwidth(S_mag: np.ndarray, sr: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral centroid and bandwidth (p=2) in Hz, ``(1, t)`` each, from one matrix product.

    With ``m_k = sum_f f**k |D|`` (float64): centroid ``c = m_1 / m_0`` and bandwidth
    ``sqrt(sum_f (f - c)**2 |D| / m_0) = sqrt((m_2 - 2 c m_1 + c**2 m_0) / m_0)``. Like librosa's
    ``util.normalize``, a frame whose total is below float32's ``tiny`` is not normalised
    (silence: both 0). float64 keeps the cancellation in ``m_2 / m_0 - c**2`` harmless.
    """
    _, basis = _freq_moments_basis(sr, n_fft)
    m0, m1, m2 = basis @ S_mag.astype(np.float64)
    denom = np.where(m0 < np.finfo(S_mag.dtype).tiny, 1.0, m0)
    centroid = m1 / denom
    var = (m2 - 2.0 * centroid * m1 + centroid**2 * m0) / denom
    bandwidth = np.sqrt(np.maximum(var, 0.0))
    return centroid[np.newaxis], bandwidth[np.newaxis]


def _rolloff(S_mag: np.ndarray, sr: int, n_fft: int, roll_percent: float) -> np.ndarray:
    """Spectral rolloff in Hz ``(1, t)``, bit-identical to ``librosa.feature.spectral_rolloff``.

    librosa takes the lowest frequency whose cumulative energy reaches the threshold with a
    NaN mask and ``nanmin``; frequencies increase, so that is the first such bin (``argmax``).
    """
    freq, _ = _freq_moments_basis(sr, n_fft)
    total = np.cumsum(S_mag, axis=0)
    threshold = roll_percent * total[-1]
    first = np.argmax(total >= threshold, axis=0)
    return freq[first][np.newaxis]


def _flatness(S_pow: np.ndarray) -> np.ndarray:
    """Spectral flatness ``(1, t)`` as ``librosa.feature.spectral_flatness(S=|D|)`` (power=2).

    The 1e-10 floor keeps silence finite: a silent frame is perfectly flat (1.0).
    """
    S_thresh = np.maximum(_AMIN, S_pow)
    gmean = np.exp(np.mean(np.log(S_thresh), axis=0, keepdims=True))
    amean = np.mean(S_thresh, axis=0, keepdims=True)
    return gmean / amean


def _zero_crossing_rate(
    y: np.ndarray, frame_length: int, hop_length: int, center: bool
) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate`` ``(1, t)``, exactly, in O(n_samples).

    librosa frames the (edge-padded) signal and counts sign changes between consecutive
    samples inside each frame (|y| <= 1e-10 counts as +0). Counting each sign change once and
    differencing a cumulative sum at the frame bounds gives the same integers without the
    ``frame_length / hop_length``-fold redundant work.
    """
    if center:
        y = np.pad(y, frame_length // 2, mode="edge")
    n_frames = 1 + (y.size - frame_length) // hop_length
    # librosa maps |y| <= 1e-10 to +0 and compares sign bits; for finite y that sign bit is
    # exactly ``y < -1e-10``.
    negative = y < -y.dtype.type(_ZC_THRESHOLD)
    # crossings[i] = number of sign changes between samples (j - 1, j) for 1 <= j <= i.
    crossings = np.empty(y.size, dtype=np.int32 if y.size < 2**31 else np.int64)
    crossings[0] = 0
    np.cumsum(negative[1:] != negative[:-1], out=crossings[1:])
    starts = np.arange(n_frames) * hop_length
    counts = crossings[starts + frame_length - 1] - crossings[starts]
    return (counts / frame_length)[np.newaxis]


# ---------------------------------------------------------------------------------------------


def summarize(
    feats: Mapping[str, np.ndarray],
    *,
    stats: Iterable[str] = ("mean", "std"),
    exclude: Iterable[str] = ("logmel",),
) -> dict[str, float]:
    """Flatten frame-level features into one row of clip-level statistics.

    Parameters
    ----------
    feats : mapping of str to np.ndarray [shape=(n_bins, n_frames)]
        As returned by :func:`extract`.
    stats : iterable of str
        Names from :data:`SUMMARY_STATS`, computed per row over frames in float64: ``std`` is
        the population value (ddof=0); ``skew`` and ``kurtosis`` (excess, Fisher) are the
        biased moment estimators (``scipy.stats.skew``/``kurtosis`` defaults) and are 0 for a
        constant row, where they are undefined.
    exclude : iterable of str
        Features to leave out (the 128-row log-mel by default).

    Returns
    -------
    dict[str, float]
        Columns ``<feature>_<stat>_<index:02d>`` (e.g. ``mfcc_mean_00``), ordered by feature
        (the mapping's order, which :func:`extract` fixes), then statistic (as given), then
        row index.

    Raises
    ------
    ValueError
        On an unknown statistic, a feature that is not 2-D, or one with no frames.
    """
    stats = tuple(stats)
    for name in stats:
        if name not in SUMMARY_STATS:
            raise ValueError(f"unknown summary statistic {name!r}; choose from {SUMMARY_STATS}")
    excluded = set(exclude)
    row: dict[str, float] = {}
    for key, value in feats.items():
        if key in excluded:
            continue
        x = np.asarray(value, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"feature {key!r} must be 2-D (n_bins, n_frames >= 1), got {x.shape}")
        computed = _row_stats(x, stats)
        for name in stats:
            for i, v in enumerate(computed[name]):
                row[f"{key}_{name}_{i:02d}"] = float(v)
    return row


def _row_stats(x: np.ndarray, stats: tuple[str, ...]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    mean = x.mean(axis=1)
    need_moments = {"std", "skew", "kurtosis"} & set(stats)
    if need_moments:
        d = x - mean[:, np.newaxis]
        d2 = d * d
        m2 = d2.mean(axis=1)
        # Rows that are constant up to rounding: higher standardised moments are undefined.
        flat = m2 <= (np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1e-300)) ** 2
        safe_m2 = np.where(flat, 1.0, m2)
    for name in stats:
        if name == "mean":
            out[name] = mean
        elif name == "std":
            out[name] = np.sqrt(m2)
        elif name == "min":
            out[name] = x.min(axis=1)
        elif name == "max":
            out[name] = x.max(axis=1)
        elif name == "median":
            out[name] = np.median(x, axis=1)
        elif name == "skew":
            m3 = (d2 * d).mean(axis=1)
            out[name] = np.where(flat, 0.0, m3 / safe_m2**1.5)
        elif name == "kurtosis":
            m4 = (d2 * d2).mean(axis=1)
            out[name] = np.where(flat, 0.0, m4 / safe_m2**2 - 3.0)
    return out

