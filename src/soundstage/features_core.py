"""Pure feature extraction: one STFT per clip, every feature derived from it.

No file I/O here: :mod:`soundstage.features` (the stage) decodes audio, calls :func:`extract`
and :func:`summary_statistics`, and writes the results.

Conventions
-----------
- Every feature is a ``float32`` array of shape ``(n_bins, n_frames)``; single-row features
  (centroid, rms, ...) keep a leading axis of 1. ``tempo`` is a clip-level value of shape
  ``(1, 1)``.
- ``n_frames`` is the STFT frame count: ``1 + len(y) // hop_length`` when ``center=True``.
- One STFT magnitude (computed as librosa does, bit for bit) feeds everything, block by block
  of 128 frames; the mel product runs on the filterbank's non-zero blocks.
- librosa (and with it numba) is imported only for ``tuning=None``, ``tempo`` and the delta
  fallback below; the filterbanks and windows are built here with librosa's arithmetic (tests
  check them bit for bit), so a worker starts without it.
- Parity: each feature equals the corresponding librosa 0.11 function called on the signal
  itself (``librosa.feature.<name>(y=y, ...)`` with the same parameters), within the
  tolerances stated in ``tests/test_features_core.py``. Exceptions, all documented below:
  ``rms`` (spectral RMS, see :func:`extract`), MFCC deltas on clips with fewer frames than
  the delta width, and ``tempo`` (derived from this module's log-mel).

Degenerate input
----------------
- A clip shorter than ``n_fft`` works with ``center=True``: like librosa, ``n_fft // 2``
  samples are padded on each side (``pad_mode``), giving ``1 + len(y) // hop_length`` frames
  (without librosa's "n_fft too large" warning). With ``center=False`` such a clip is
  zero-padded at the end to ``n_fft`` samples (one frame), where librosa would raise.
- Silence gives finite values, identical to librosa's: log-mel at the ``amin`` floor
  (-100 dB), centroid/bandwidth/rolloff/zcr/rms 0, flatness 1, contrast 0, chroma 0,
  tuning (when estimated) 0, and tempo the peak of librosa's tempo prior (~117 BPM).
- An empty or non-finite signal raises :class:`ValueError`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "SPECTRAL_FEATURES",
    "SUMMARY_STATS",
    "FeatureConfig",
    "extract",
    "summary_statistics",
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

#: Statistics :func:`summary_statistics` can compute over frames (per row).
SUMMARY_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "median", "skew", "kurtosis")

# librosa defaults that are not exposed as tunables.
_AMIN = 1e-10  # power floor of power_to_db and spectral_flatness
_CONTRAST_FMIN = 200.0  # Hz, lower edge of the first spectral-contrast band
_ZC_THRESHOLD = 1e-10  # |y| <= this counts as 0 in zero_crossings


@dataclass(frozen=True)
class FeatureConfig:
    """Feature-extraction settings: the ``features`` section of ``params.yaml``, as
    :func:`soundstage.config.validate_params` validated it (this class checks nothing itself).

    STFT: ``n_fft`` / ``win_length`` / ``hop_length`` in samples, ``window``, ``center``,
    ``pad_mode`` as in :func:`librosa.stft`.

    Log-mel: ``n_mels`` Slaney-normalised filters between ``fmin`` and ``fmax`` Hz (``None``:
    ``sr / 2``) applied to ``|STFT| ** power``, then ``power_to_db(ref=1.0, amin=1e-10,
    top_db=top_db)`` in dB. ``top_db=80.0`` is librosa's default, which is what
    ``librosa.feature.mfcc(y=...)`` uses; ``None`` disables the clamp.

    MFCC: ``n_mfcc`` DCT-II (ortho) coefficients of the log-mel (``mfcc=False`` or
    ``n_mfcc=0`` disables MFCCs); ``mfcc_deltas`` adds Δ and ΔΔ (Savitzky–Golay,
    ``delta_width`` frames).

    Chroma: ``n_chroma`` bins from the power spectrogram with ``tuning`` in fractions of a
    bin (``None``: estimated per clip, as librosa does by default, ~50 ms per 30 s clip).

    Spectral: the names in ``spectral`` (see :data:`SPECTRAL_FEATURES`), with
    ``roll_percent`` for rolloff and ``n_bands`` for contrast. ``rms``, ``zcr``, ``tempo``
    toggle those features. ``summary`` names the statistics of :func:`summary_statistics`.
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
    mfcc: bool = True
    n_mfcc: int = 20
    mfcc_deltas: bool = True
    delta_width: int = 9
    chroma: bool = True
    n_chroma: int = 12
    tuning: float | None = 0.0
    spectral: tuple[str, ...] = SPECTRAL_FEATURES
    roll_percent: float = 0.85
    n_bands: int = 6
    rms: bool = True
    zcr: bool = True
    tempo: bool = False
    summary: tuple[str, ...] = ("mean", "std")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FeatureConfig:
        """Build from a validated ``features`` mapping (without ``save``); missing keys take the defaults."""
        kwargs = dict(d or {})
        for name in ("spectral", "summary"):  # YAML gives lists; the frozen, hashable config holds tuples
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field (tuples as lists), for YAML/JSON and MLflow params."""
        out = dataclasses.asdict(self)
        out["spectral"] = list(self.spectral)
        out["summary"] = list(self.summary)
        return out


# ---------------------------------------------------------------------------------------------
# Cached constant matrices. They are read-only so that a caller cannot corrupt the cache.


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _fft_frequencies(sr: int, n_fft: int) -> np.ndarray:
    """Centre frequency (Hz) of each FFT bin, as ``librosa.fft_frequencies``."""
    return np.fft.rfftfreq(n=n_fft, d=1.0 / sr)


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    hz = float(hz)
    return _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP if hz >= _MIN_LOG_HZ else hz / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return freqs


def _power_to_db(S: np.ndarray, *, amin: float = _AMIN, top_db: float | None = 80.0) -> np.ndarray:
    """``librosa.power_to_db(S, ref=1.0, amin=amin, top_db=top_db)``, same arithmetic, dB."""
    log_spec = 10.0 * np.log10(np.maximum(amin, S))
    log_spec -= 10.0 * np.log10(np.maximum(amin, 1.0))
    if top_db is not None:
        log_spec = np.maximum(log_spec, log_spec.max() - top_db)
    return log_spec


@functools.lru_cache(maxsize=32)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """Slaney mel filterbank, float32 ``(n_mels, 1 + n_fft // 2)``, as melspectrogram builds it."""
    if fmax is None:
        fmax = float(sr) / 2
    fftfreqs = _fft_frequencies(sr, n_fft)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])  # Slaney: ~constant energy per band
    weights *= enorm[:, np.newaxis]
    if not np.all((mel_f[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(
            f"empty mel filters: n_mels={n_mels} is too many for n_fft={n_fft} at sr={sr} "
            f"between fmin={fmin} and fmax={fmax} Hz; some bands will always be silent",
            stacklevel=2,
        )
    return _frozen(weights)


@functools.lru_cache(maxsize=32)
def _chroma_basis(sr: int, n_fft: int, n_chroma: int, tuning: float) -> np.ndarray:
    """Chroma filterbank, float32 ``(n_chroma, 1 + n_fft // 2)``, as chroma_stft builds it."""
    # librosa's defaults: ctroct=5.0, octwidth=2, norm=2, base_c=True.
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (float(a440) / 16))
    # The 0 Hz bin: 1.5 octaves below bin 1.
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    D = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    n_chroma2 = np.round(float(n_chroma) / 2)
    D = np.remainder(D + n_chroma2 + 10 * n_chroma, n_chroma) - n_chroma2
    wts = np.exp(-0.5 * (2 * D / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    length = np.sum(np.abs(wts) ** 2, axis=0, keepdims=True) ** (1.0 / 2)
    length[length < np.finfo(wts.dtype).tiny] = 1.0
    wts = wts / length
    wts *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2) ** 2)), (n_chroma, 1))
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return _frozen(np.ascontiguousarray(wts[:, : int(1 + n_fft / 2)], dtype=np.float32))


@functools.lru_cache(maxsize=32)
def _dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """First ``n_mfcc`` rows of the orthonormal DCT-II on ``n_mels`` points (float32).

    ``_dct_matrix(k, m) @ X == scipy.fft.dct(X, type=2, norm="ortho", axis=0)[:k]`` (to float32
    rounding), which is what ``librosa.feature.mfcc(S=X)`` computes, without transforming rows we
    discard. Written out (``sqrt(2/m) cos(pi k (2n + 1) / 2m)``, row 0 over ``sqrt 2``) so that a
    worker does not import ``scipy.fft`` (~0.1 s) for it.
    """
    k = np.arange(n_mfcc)[:, np.newaxis]
    basis = np.cos(np.pi * k * (2 * np.arange(n_mels) + 1) / (2 * n_mels)) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return _frozen(basis.astype(np.float32))


@functools.lru_cache(maxsize=32)
def _mel_blocks(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """The mel filterbank cut into dense row blocks over the bins they touch.

    Each filter is non-zero on a narrow band of FFT bins, so ``basis @ S`` is ~90 % products
    with zero. Groups of 16 consecutive filters cover a contiguous bin range; one small GEMM
    per group gives the same sums as the dense product (zeros add exactly), reassociated:
    within float32 rounding of it, at about a sixth of the work.

    Returns ``(row0, row1, bin0, bin1, block)`` tuples, ``block = basis[row0:row1, bin0:bin1]``
    (float32, C-contiguous).
    """
    basis = _mel_basis(sr, n_fft, n_mels, fmin, fmax)
    blocks = []
    for row0 in range(0, n_mels, 16):
        row1 = min(row0 + 16, n_mels)
        cols = np.flatnonzero(np.any(basis[row0:row1] != 0, axis=0))
        bin0, bin1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1)
        blocks.append((row0, row1, bin0, bin1, _frozen(np.ascontiguousarray(basis[row0:row1, bin0:bin1]))))
    return tuple(blocks)


@functools.lru_cache(maxsize=32)
def _fft_window(window: str, win_length: int, n_fft: int) -> np.ndarray:
    """The analysis window as ``librosa.stft`` builds it: float64 ``(n_fft,)``, centred.

    ``scipy.signal.get_window(window, win_length, fftbins=True)`` (periodic); the cosine
    windows are computed here with scipy's own arithmetic, so that a worker does not import
    ``scipy.signal`` (~80 MB, ~1 s) for them.
    """
    coefficients = _COSINE_WINDOWS.get(window)
    if coefficients is None:
        import scipy.signal

        w = scipy.signal.get_window(window, win_length, fftbins=True)
    elif win_length <= 1:
        w = np.ones(win_length)
    else:
        fac = np.linspace(-np.pi, np.pi, win_length + 1, dtype=np.float64)
        w = np.zeros(win_length + 1, dtype=np.float64)
        for k, a in enumerate(np.asarray(coefficients, dtype=np.float64)):
            w += a * np.cos(k * fac)
        w = w[:-1]
    lpad = (n_fft - win_length) // 2
    return _frozen(np.pad(w, (lpad, n_fft - win_length - lpad)))


#: scipy.signal.windows.general_cosine coefficients of the windows computed without scipy.signal.
_COSINE_WINDOWS: dict[str, tuple[float, ...]] = {
    "hann": (0.5, 0.5),
    "hamming": (0.54, 1.0 - 0.54),
    "blackman": (0.42, 0.50, 0.08),
}


@functools.lru_cache(maxsize=32)
def _delta_taps(width: int, order: int) -> np.ndarray:
    """Savitzky-Golay taps (float64, ``(width,)``) of ``librosa.feature.delta``'s derivative.

    librosa filters with ``polyorder = deriv = order``: the ``order``-th derivative of the
    least-squares polynomial of degree ``order`` through each centred window, i.e. ``order!``
    times its leading coefficient, a fixed dot product with the window (scipy's
    ``savgol_coeffs(..., use="dot")``).
    """
    m = np.arange(width, dtype=np.float64) - width // 2
    vander = m[:, np.newaxis] ** np.arange(order + 1)
    return _frozen(math.factorial(order) * np.linalg.pinv(vander)[order])


@functools.lru_cache(maxsize=32)
def _contrast_bands(sr: int, n_fft: int, n_bands: int, fmin: float) -> tuple[tuple[int, int, int], ...]:
    """``(bin0, bin1, q)`` per spectral-contrast band, as ``librosa.feature.spectral_contrast``.

    librosa selects each octave band with a boolean mask, adds the bin below it (bands > 0) and
    every bin above the last one, then drops the top bin (all but the last band); ``q`` is
    ``max(1, rint(0.02 * mask size))``. The selection is one contiguous bin range.
    """
    freq = _fft_frequencies(sr, n_fft)
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:], strict=True)):
        idx = np.flatnonzero((freq >= f_low) & (freq <= f_high))
        if idx.size == 0:
            raise ValueError(
                f"spectral contrast band {k} ({f_low:g}-{f_high:g} Hz) holds no FFT bin at "
                f"features.n_fft={n_fft}, sr={sr} Hz; increase features.n_fft or reduce features.n_bands"
            )
        bin0 = int(idx[0]) - (1 if k > 0 else 0)
        bin1 = int(freq.size) if k == n_bands else int(idx[-1]) + 1
        q = max(int(np.rint(0.02 * (bin1 - bin0))), 1)
        if k < n_bands:
            bin1 -= 1
        bands.append((bin0, bin1, q))
    return tuple(bands)


@functools.lru_cache(maxsize=32)
def _freq_moments_basis(sr: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """FFT bin frequencies (Hz, float64) and the stacked rows ``[1, f, f**2]``."""
    freq = _fft_frequencies(sr, n_fft)
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
        - ``mfcc`` ``(n_mfcc, t)``: DCT-II (ortho) of ``logmel`` = ``librosa.feature.mfcc``
          (absent when ``mfcc=False`` or ``n_mfcc=0``; likewise each feature below is
          returned only when ``config`` enables it).
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
          center)``, exactly (sign changes counted once, frames bounded by binary search).
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
            f"spectral contrast with features.n_bands={cfg.n_bands} exceeds the Nyquist frequency "
            f"at sr={sr} Hz; reduce features.n_bands (or set process.sample_rate)"
        )
    if not cfg.center and y.size < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - y.size))

    n_frames = 1 + (y.size + (2 * (cfg.n_fft // 2) if cfg.center else 0) - cfg.n_fft) // cfg.hop_length
    spectral = set(cfg.spectral)
    want_mfcc = cfg.mfcc and cfg.n_mfcc > 0
    mel = np.empty((cfg.n_mels, n_frames), dtype=np.float32)
    mel_blocks = _mel_blocks(sr, cfg.n_fft, cfg.n_mels, float(cfg.fmin), _opt_float(cfg.fmax))
    per_frame: dict[str, np.ndarray] = {}
    if cfg.chroma:
        per_frame["chroma"] = np.empty((cfg.n_chroma, n_frames), dtype=np.float32)
    for name in ("centroid", "bandwidth", "rolloff"):
        if name in spectral:
            per_frame[name] = np.empty((1, n_frames))
    if "contrast" in spectral:
        valley, peak = np.empty((cfg.n_bands + 1, n_frames)), np.empty((cfg.n_bands + 1, n_frames))
    if "flatness" in spectral:
        per_frame["flatness"] = np.empty((1, n_frames), dtype=np.float32)
    if cfg.rms:
        per_frame["rms"] = np.empty((1, n_frames), dtype=np.float32)

    # Every frame-wise feature is computed block by block of frames, straight from that block's
    # STFT magnitude, while it is in cache; no (n_bins, t) matrix is ever held. Estimating the
    # tuning needs the whole spectrogram: then the block is the whole clip.
    tuning = cfg.tuning
    step = n_frames if tuning is None else _BLOCK_FRAMES
    for b0, S_mag_t in _stft_blocks(y, cfg, step):
        b1 = b0 + S_mag_t.shape[0]
        # S_mag_t is (frames, n_bins), C-contiguous: per-frame reductions (rolloff, contrast)
        # run along the fast axis. Its transpose is librosa's (n_bins, frames) layout.
        S_mag = S_mag_t.T
        # |D| ** 2 exactly as librosa's _spectrogram computes it (not re**2 + im**2), for parity.
        S_pow = S_mag**2
        S_mel_in = S_pow if cfg.power == 2.0 else (S_mag if cfg.power == 1.0 else S_mag**cfg.power)
        for row0, row1, bin0, bin1, block in mel_blocks:
            np.matmul(block, S_mel_in[bin0:bin1], out=mel[row0:row1, b0:b1])
        if cfg.chroma:
            if tuning is None:
                tuning = _estimate_tuning(S_pow, sr, cfg.n_chroma)
            raw = _chroma_basis(sr, cfg.n_fft, cfg.n_chroma, float(tuning)) @ S_pow
            # librosa.util.normalize(raw, norm=inf, axis=0): frames below float32's tiny stay.
            top = np.max(np.abs(raw), axis=0, keepdims=True).astype(np.float64)
            top[top < np.finfo(raw.dtype).tiny] = 1.0
            per_frame["chroma"][:, b0:b1] = raw / top
        if spectral & {"centroid", "bandwidth"}:
            centroid, bandwidth = _centroid_bandwidth(S_mag, sr, cfg.n_fft)
            if "centroid" in spectral:
                per_frame["centroid"][:, b0:b1] = centroid
            if "bandwidth" in spectral:
                per_frame["bandwidth"][:, b0:b1] = bandwidth
        if "rolloff" in spectral:
            per_frame["rolloff"][:, b0:b1] = _rolloff(S_mag_t, sr, cfg.n_fft, cfg.roll_percent)
        if "contrast" in spectral:
            _contrast_extremes(S_mag_t, sr, cfg.n_fft, cfg.n_bands, valley[:, b0:b1], peak[:, b0:b1])
        if "flatness" in spectral:
            per_frame["flatness"][:, b0:b1] = _flatness(S_pow)
        if cfg.rms:
            per_frame["rms"][:, b0:b1] = _rms(S_pow, cfg.n_fft)

    out: dict[str, np.ndarray] = {}
    logmel = _power_to_db(mel, amin=_AMIN, top_db=cfg.top_db)
    out["logmel"] = logmel
    if want_mfcc:
        mfcc = _dct_matrix(cfg.n_mfcc, cfg.n_mels) @ logmel
        out["mfcc"] = mfcc
        if cfg.mfcc_deltas:
            out["mfcc_delta"], out["mfcc_delta2"] = _deltas(mfcc, width=cfg.delta_width, orders=(1, 2))
    if "contrast" in spectral:
        # top_db=80 over the whole clip, as librosa applies it: after the last block.
        per_frame["contrast"] = _power_to_db(peak) - _power_to_db(valley)
    out.update(per_frame)

    if cfg.zcr:
        out["zcr"] = _zero_crossing_rate(y, cfg.n_fft, cfg.hop_length, cfg.center)

    if cfg.tempo:
        import librosa

        onset_env = librosa.onset.onset_strength(
            S=logmel, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=cfg.center
        )
        tempo = librosa.feature.tempo(onset_envelope=onset_env, sr=sr, hop_length=cfg.hop_length)
        out["tempo"] = np.reshape(tempo, (1, 1))

    return {key: np.asarray(out[key], dtype=np.float32) for key in FEATURE_NAMES if key in out}


def _opt_float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _mean(x: np.ndarray, axis: int, *, keepdims: bool = False) -> np.ndarray:
    """``np.mean(x, axis=axis)`` bit for bit, without its Python wrapper (a dozen calls per clip):
    the same sum, divided by the count (for float32, numpy divides in float64 and rounds once,
    which is the float32 quotient itself)."""
    return np.add.reduce(x, axis=axis, keepdims=keepdims) / x.shape[axis]


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


#: Frames per block in :func:`extract`: a block's spectra (float32 and the float64 FFT buffers,
#: ~3 MB at n_fft=2048) stay in a core's L2 cache while every feature reads them.
_BLOCK_FRAMES = 128


def _stft_blocks(y: np.ndarray, cfg: FeatureConfig, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """``np.abs(librosa.stft(y, ...)).T`` block by block: ``(first frame, (frames, n_bins))``.

    Each block is float32 and C-contiguous, at most ``step`` frames. The same arithmetic as
    librosa 0.11, hence bit-identical: float64 window times float32 frames, the float64 real FFT
    (``numpy.fft.rfft``: the same pocketfft code as librosa's ``scipy.fft.rfft``, without importing
    scipy), here along the contiguous axis, rounded to complex64, then ``abs``; the complex matrix
    is never kept.
    """
    n_fft, hop = cfg.n_fft, cfg.hop_length
    window = _fft_window(cfg.window, cfg.win_length or n_fft, n_fft)
    if cfg.center and cfg.pad_mode == "constant":
        padded = np.zeros(y.size + 2 * (n_fft // 2), dtype=y.dtype)  # np.pad's result, without its generic path
        padded[n_fft // 2 : n_fft // 2 + y.size] = y
        y = padded
    elif cfg.center:
        y = np.pad(y, n_fft // 2, mode=cfg.pad_mode)  # type: ignore[call-overload]
    # sliding_window_view(y, n_fft)[::hop], without its argument checks (once per clip)
    frames = np.lib.stride_tricks.as_strided(y, shape=(1 + (y.size - n_fft) // hop, n_fft),
                                             strides=(hop * y.strides[0], y.strides[0]), writeable=False)
    for b0 in range(0, frames.shape[0], max(1, step)):
        spec = np.fft.rfft(frames[b0 : b0 + step] * window, axis=-1)
        yield b0, np.abs(spec.astype(np.complex64))


def _stft_magnitude(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The whole ``np.abs(librosa.stft(y, ...)).T``, float32 ``(t, 1 + n_fft // 2)``."""
    return np.concatenate([block for _, block in _stft_blocks(y, cfg, _BLOCK_FRAMES)], axis=0)


def _estimate_tuning(S_pow: np.ndarray, sr: int, n_chroma: int) -> float:
    """``librosa.estimate_tuning`` of a power spectrogram, in fractions of a chroma bin."""
    import librosa

    with warnings.catch_warnings():
        # Silence has no peaks to estimate from; librosa warns and returns 0.0.
        warnings.filterwarnings("ignore", message="Trying to estimate tuning from empty")
        return float(librosa.estimate_tuning(S=S_pow, sr=sr, bins_per_octave=n_chroma))


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


def _rolloff(S_mag_t: np.ndarray, sr: int, n_fft: int, roll_percent: float) -> np.ndarray:
    """Spectral rolloff in Hz ``(1, t)``, bit-identical to ``librosa.feature.spectral_rolloff``.

    ``S_mag_t`` is ``|D|`` as ``(t, n_bins)``. librosa takes the lowest frequency whose
    cumulative (float32, sequential) energy reaches the threshold with a NaN mask and
    ``nanmin``; frequencies increase, so that is the first such bin (``argmax``). The cumulative
    sum runs along each frame's contiguous spectrum: the same additions in the same order.
    """
    freq, _ = _freq_moments_basis(sr, n_fft)
    total = np.cumsum(S_mag_t, axis=1)
    threshold = roll_percent * total[:, -1:]
    first = np.argmax(total >= threshold, axis=1)
    return freq[first][np.newaxis]


def _contrast_extremes(S_mag_t: np.ndarray, sr: int, n_fft: int, n_bands: int, valley: np.ndarray,
                       peak: np.ndarray) -> None:
    """Valleys and peaks of ``librosa.feature.spectral_contrast(S=|D|, fmin=200, quantile=0.02)``.

    Per band and frame, librosa sorts the band's magnitudes and averages the ``q`` lowest
    (valley) and ``q`` highest (peak); the contrast is then ``power_to_db(peak) -
    power_to_db(valley)`` (``top_db=80`` over the whole clip, applied by the caller). Here each
    frame's band is a contiguous row (numpy's SIMD sort), and a band with ``q == 1`` (the narrow
    low ones) takes min and max without sorting. The means agree with librosa's to float32
    rounding. Writes ``(n_bands + 1, frames)`` into ``valley`` and ``peak``.
    """
    bands = _contrast_bands(sr, n_fft, n_bands, _CONTRAST_FMIN)
    # The leading bands with q == 1 (the narrow low ones) are adjacent: their minima and maxima
    # come from one reduceat each (non-empty bands only: reduceat does not reduce an empty one).
    narrow = 0
    while (narrow < len(bands) and bands[narrow][2] == 1 and bands[narrow][1] > bands[narrow][0]
           and (narrow == 0 or bands[narrow][0] == bands[narrow - 1][1])):
        narrow += 1
    if narrow:
        starts = [b[0] for b in bands[:narrow]]
        span = S_mag_t[:, : bands[narrow - 1][1]]
        valley[:narrow] = np.minimum.reduceat(span, starts, axis=1).T
        peak[:narrow] = np.maximum.reduceat(span, starts, axis=1).T
    for k in range(narrow, len(bands)):
        bin0, bin1, q = bands[k]
        band = S_mag_t[:, bin0:bin1]
        if q == 1:
            valley[k] = np.min(band, axis=1)
            peak[k] = np.max(band, axis=1)
            continue
        ordered = np.sort(band, axis=1)  # SIMD sort of contiguous rows: faster than partition
        n = ordered.shape[1]
        valley[k] = _mean(ordered[:, :q], axis=1)
        peak[k] = _mean(ordered[:, n - q:], axis=1)


def _deltas(x: np.ndarray, *, width: int, orders: tuple[int, ...]) -> list[np.ndarray]:
    """``librosa.feature.delta(x, width=width, order=k)`` along frames for each ``k`` in ``orders``.

    Inside, the dot products of each centred window with :func:`_delta_taps` (float64), every
    order in one matrix product over the windows. scipy's ``mode="interp"`` fits one polynomial
    of degree ``order`` to the first (last) ``width`` frames and evaluates its ``order``-th
    derivative, a constant, at the edge frames: the value of the first (last) full window.
    Equal to scipy's filter up to float32 rounding, without refitting edge polynomials row by
    row. With fewer than ``width`` frames, where librosa's ``mode="interp"`` raises, its
    ``mode="nearest"`` is used (a one-frame clip then has zero deltas). float32 arrays, each
    shaped as ``x``.
    """
    n = x.shape[-1]
    if n < width:
        import librosa

        return [librosa.feature.delta(x, width=width, order=order, mode="nearest") for order in orders]
    half = width // 2
    taps = np.stack([_delta_taps(width, order) for order in orders], axis=1)  # (width, orders)
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), width, axis=-1)
    inner = windows @ taps  # (rows, n - width + 1, orders)
    out = np.empty((len(orders), *x.shape), dtype=np.float32)
    out[..., half : n - half] = np.moveaxis(inner, -1, 0)
    out[..., :half] = out[..., half : half + 1]
    out[..., n - half :] = out[..., n - half - 1 : n - half]
    return list(out)


def _rms(S_pow: np.ndarray, frame_length: int) -> np.ndarray:
    """``librosa.feature.rms(S=|D|, frame_length=n_fft)`` ``(1, t)`` from ``|D| ** 2``.

    The RMS of each windowed frame via Parseval: the DC and (even ``n_fft``) Nyquist bins
    count once, the others twice. Same arithmetic as librosa (``S_pow`` is its ``abs2(S)``).
    """
    x = S_pow.copy(order="K")
    x[0, :] *= 0.5
    if frame_length % 2 == 0:
        x[-1, :] *= 0.5
    return np.sqrt(2 * np.sum(x, axis=-2, keepdims=True) / frame_length**2)


def _flatness(S_pow: np.ndarray) -> np.ndarray:
    """Spectral flatness ``(1, t)`` as ``librosa.feature.spectral_flatness(S=|D|)`` (power=2).

    The 1e-10 floor keeps silence finite: a silent frame is perfectly flat (1.0).
    """
    S_thresh = np.maximum(_AMIN, S_pow)
    gmean = np.exp(_mean(np.log(S_thresh), axis=0, keepdims=True))
    amean = _mean(S_thresh, axis=0, keepdims=True)
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
    # Edge padding repeats the end samples, so it adds no sign change: count on ``y`` itself
    # and shift the frame bounds instead of copying the padded signal.
    pad = frame_length // 2 if center else 0
    n_frames = 1 + (y.size + 2 * pad - frame_length) // hop_length
    # librosa maps |y| <= 1e-10 to +0 and compares sign bits; for finite y that sign bit is
    # exactly ``y < -1e-10``.
    negative = y < -y.dtype.type(_ZC_THRESHOLD)
    # Sample j (padded coordinates) is a crossing when its sign differs from sample j - 1;
    # frame k counts the crossings j in (start_k, start_k + frame_length - 1].
    changes = np.flatnonzero(negative[1:] != negative[:-1]) + (1 + pad)
    starts = np.arange(n_frames) * hop_length
    counts = np.searchsorted(changes, starts + (frame_length - 1), side="right")
    counts -= np.searchsorted(changes, starts, side="right")
    return (counts / frame_length)[np.newaxis]


# ---------------------------------------------------------------------------------------------


def summary_statistics(
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
    # Features with the same frame count are stacked and summarised in one pass (rows are
    # independent, so the numbers are the same as feature by feature, with fewer numpy calls).
    groups: list[tuple[int, list[tuple[str, np.ndarray]]]] = []
    for key, value in feats.items():
        if key in excluded:
            continue
        x = np.asarray(value)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"feature {key!r} must be 2-D (n_bins, n_frames >= 1), got {x.shape}")
        if groups and groups[-1][0] == x.shape[1]:
            groups[-1][1].append((key, x))
        else:
            groups.append((x.shape[1], [(key, x)]))
    names: list[str] = []
    values: list[np.ndarray] = []
    for _, members in groups:
        stacked = np.concatenate([x for _, x in members], axis=0, dtype=np.float64)
        computed = _row_stats(stacked, stats)
        row0 = 0
        for key, x in members:
            row1 = row0 + x.shape[0]
            names.extend(_summary_names(key, stats, x.shape[0]))
            values.extend(computed[name][row0:row1] for name in stats)
            row0 = row1
    if not names:
        return {}
    return dict(zip(names, np.concatenate(values).tolist(), strict=True))


@functools.lru_cache(maxsize=256)
def _summary_names(key: str, stats: tuple[str, ...], n_rows: int) -> tuple[str, ...]:
    return tuple(f"{key}_{name}_{i:02d}" for name in stats for i in range(n_rows))


def _row_stats(x: np.ndarray, stats: tuple[str, ...]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    mean = _mean(x, axis=1)
    need_moments = {"std", "skew", "kurtosis"} & set(stats)
    if need_moments:
        d = x - mean[:, np.newaxis]
        d2 = d * d
        m2 = _mean(d2, axis=1)
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
            m3 = _mean(d2 * d, axis=1)
            out[name] = np.where(flat, 0.0, m3 / safe_m2**1.5)
        elif name == "kurtosis":
            m4 = _mean(d2 * d2, axis=1)
            out[name] = np.where(flat, 0.0, m4 / safe_m2**2 - 3.0)
    return out

