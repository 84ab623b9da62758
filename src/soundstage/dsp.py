"""Signal processing: pure functions on decoded float32 audio, and :func:`preprocess`, the whole
``process`` chain (resample, mono, filter, trim, normalize, fixed duration or segments) with its
:class:`ProcessConfig`.

A multichannel signal has shape ``(channels, n_samples)`` (the librosa convention); a mono one is
1-D ``(n_samples,)``. Every function works on the last axis, accepts both shapes and never
modifies its input (it may return a view of it). Rates are in Hz, levels in dB.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from soundstage.decode import AudioError, downmix_frames

__all__ = [
    "SILENCE_AMPLITUDE",
    "DurationConfig",
    "FilterConfig",
    "NormalizeConfig",
    "ProcessConfig",
    "Segment",
    "TrimConfig",
    "butter_filter",
    "fix_duration",
    "integrated_loudness",
    "normalize",
    "preprocess",
    "resample",
    "segment",
    "to_mono",
    "trim_silence",
]

#: Peak amplitude (-120 dBFS) below which a signal counts as silent: :func:`normalize` leaves it
#: unchanged and :func:`preprocess` rejects it.
SILENCE_AMPLITUDE = 1e-6


def _as_f32(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.float32)


def _peak(y: np.ndarray) -> float:
    if y.size == 0:
        return 0.0
    return float(max(y.max(), -y.min()))  # two passes, no |y| temporary


def to_mono(y: np.ndarray) -> np.ndarray:
    """Downmix to mono by averaging channels.

    Parameters
    ----------
    y : np.ndarray [shape=(channels, n) or (n,)]

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]
        1-D input is returned as is; a single channel is returned as a view.
    """
    y = _as_f32(y)
    if y.ndim == 1:
        return y
    if y.ndim != 2:
        raise ValueError(f"y: expected shape (channels, n) or (n,), got {y.shape}")
    if y.shape[0] == 1:
        return y[0]
    # Row by row in float32 (the transpose's columns are y's rows): a third of the cost of mean(axis=0).
    return downmix_frames(y.T)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int,
             quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = "HQ") -> np.ndarray:
    """Change the sample rate with soxr.

    Parameters
    ----------
    y : np.ndarray [shape=(n,) or (channels, n)]
    orig_sr, target_sr : int
        Hz. Equal rates return ``y`` itself (no copy).
    quality : str
        soxr quality preset.

    Returns
    -------
    np.ndarray [shape=(n_out,) or (channels, n_out), dtype=float32]
        ``n_out`` is ``n * target_sr / orig_sr`` rounded (soxr's output length).
    """
    if not orig_sr > 0:
        raise ValueError(f"orig_sr must be > 0 Hz, got {orig_sr}")
    if not target_sr > 0:
        raise ValueError(f"target_sr must be > 0 Hz, got {target_sr}")
    y = _as_f32(y)
    if orig_sr == target_sr:
        return y
    import soxr

    if y.ndim == 1:
        return soxr.resample(y, orig_sr, target_sr, quality=quality)
    if y.ndim != 2:
        raise ValueError(f"y: expected shape (channels, n) or (n,), got {y.shape}")
    # Channel by channel: each input row is contiguous and the output needs no transpose.
    rows = [soxr.resample(row, orig_sr, target_sr, quality=quality) for row in y]
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.empty((len(rows), rows[0].shape[0]), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def trim_silence(y: np.ndarray, *, top_db: float = 60.0, frame_length: int = 2048,
                 hop_length: int = 512) -> tuple[np.ndarray, tuple[int, int]]:
    """Remove leading and trailing silence, with ``librosa.effects.trim`` semantics.

    Frames of ``frame_length`` samples every ``hop_length`` (centred: the signal is zero-padded by
    ``frame_length // 2`` at both ends) are silent when their RMS is more than ``top_db`` below
    the loudest frame (dB floor 1e-5, per-frame maximum over channels). The kept interval runs
    from the first non-silent frame's start to one hop past the last one's. Because the
    reference is the signal's own maximum, an all-zero signal is *not* trimmed;
    :func:`preprocess` checks for silence separately.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)]
    top_db : float
        dB below the peak frame that counts as silence.
    frame_length, hop_length : int
        Samples.

    Returns
    -------
    y_trimmed : np.ndarray [shape=(..., end - start), dtype=float32]
        A view of ``y``.
    interval : tuple of int
        ``(start, end)`` sample indices in ``y``.

    Notes
    -----
    Re-implemented with block sums of squares (O(n), float64) instead of calling librosa,
    whose first call costs seconds of lazy imports in every worker process; the tests check it
    against ``librosa.effects.trim``.
    """
    if not top_db > 0:
        raise ValueError(f"top_db must be > 0 dB, got {top_db}")
    for name, value in (("frame_length", frame_length), ("hop_length", hop_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    y = _as_f32(y)
    n = y.shape[-1]
    if n == 0:
        return y, (0, 0)
    rows = y.reshape(-1, n)
    half = frame_length // 2
    n_frames = 1 + (n + 2 * half - frame_length) // hop_length
    # Frames start every hop and span frame_length: both are whole numbers of g-sample blocks, so
    # a frame's energy is a difference of the running sum over block sums (float64). Summing the
    # squares block by block is vectorised; a running sum over every sample is not (10x slower).
    g = math.gcd(frame_length, hop_length)
    n_blocks = -(-(n + 2 * half) // g)
    squares = np.zeros((rows.shape[0], n_blocks * g))  # the zero-padded signal's squares
    np.square(rows, out=squares[:, half:half + n], dtype=np.float64)
    running = np.zeros((rows.shape[0], n_blocks + 1))
    np.cumsum(squares.reshape(rows.shape[0], n_blocks, g).sum(axis=-1), axis=-1, out=running[:, 1:])
    starts = np.arange(n_frames) * (hop_length // g)
    power = np.maximum(running[:, starts + frame_length // g] - running[:, starts], 0.0) / frame_length
    rms = np.maximum(np.sqrt(power), 1e-5)
    db = 20 * np.log10(rms) - 20 * np.log10(rms.max())
    non_silent = np.flatnonzero(db.max(axis=0) > -top_db)
    if non_silent.size == 0:
        return y[..., 0:0], (0, 0)
    start = int(non_silent[0]) * hop_length
    end = min(n, (int(non_silent[-1]) + 1) * hop_length)
    return y[..., start:end], (start, end)


def _butter_sos(*, sr: float, kind: str, cutoff: float | tuple[float, ...] | list[float], order: int) -> np.ndarray:
    import scipy.signal

    if not sr > 0:
        raise ValueError(f"sr must be > 0 Hz, got {sr}")
    if kind not in ("lowpass", "highpass", "bandpass"):
        raise ValueError(f"kind must be 'lowpass', 'highpass' or 'bandpass', got {kind!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    edges = (float(cutoff),) if np.isscalar(cutoff) else tuple(float(c) for c in cutoff)  # type: ignore[arg-type]
    want = 2 if kind == "bandpass" else 1
    if len(edges) != want:
        raise ValueError(f"cutoff: {kind} needs {want} value(s) in Hz, got {len(edges)}")
    nyquist = sr / 2
    for c in edges:
        if not 0 < c < nyquist:
            raise ValueError(f"cutoff {c:g} Hz must lie strictly between 0 and Nyquist ({nyquist:g} Hz)")
    if kind == "bandpass" and not edges[0] < edges[1]:
        raise ValueError(f"cutoff: bandpass edges must increase (low < high), got {list(edges)}")
    wn = edges[0] if want == 1 else list(edges)
    return scipy.signal.butter(int(order), wn, btype=kind, fs=sr, output="sos")


def butter_filter(y: np.ndarray, *, sr: int, kind: Literal["lowpass", "highpass", "bandpass"],
                  cutoff: float | tuple[float, float] | tuple[float] | list[float], order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth filter (second-order sections, forward and backward).

    Forward-backward filtering squares the magnitude response: the effective order is ``2 *
    order`` and the gain at ``cutoff`` is -6 dB instead of -3 dB.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)]
    sr : int
        Sample rate in Hz.
    kind : {'lowpass', 'highpass', 'bandpass'}
    cutoff : float or sequence of float
        Hz; one value, or ``(low, high)`` for bandpass. Each must lie in (0, sr / 2).
    order : int
        Butterworth order (>= 1).

    Returns
    -------
    np.ndarray [shape=(..., n), dtype=float32]

    Raises
    ------
    ValueError
        Naming the parameter (``sr``, ``kind``, ``order``, ``cutoff``) that is invalid.

    Notes
    -----
    ``scipy.signal.sosfiltfilt`` extends the signal by ``padlen`` samples (odd reflection) at each
    end to tame edge transients and refuses signals not longer than that. For shorter signals the
    padding is reduced to ``n - 1`` samples, so edge transients of very short clips are larger.
    Filtering runs in float64 and the result is cast back to float32.
    """
    sos = _butter_sos(sr=sr, kind=kind, cutoff=cutoff, order=order)
    y = _as_f32(y)
    n = y.shape[-1]
    if n == 0:
        return y
    import scipy.signal

    zeros = min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    padlen = min(3 * (2 * len(sos) + 1 - zeros), n - 1)
    return scipy.signal.sosfiltfilt(sos, y, axis=-1, padlen=padlen).astype(np.float32, copy=False)


def _k_weighting_sos(sr: float) -> np.ndarray:
    """ITU-R BS.1770-4 K-weighting (high shelf + RLB high-pass) for any rate.

    The analog prototypes are re-derived by bilinear transform (the libebur128 formulation); at
    48 kHz this gives the coefficients tabulated in the standard.
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def integrated_loudness(y: np.ndarray, *, sr: int) -> float:
    """Integrated loudness in LUFS after ITU-R BS.1770-4.

    K-weighting, 400 ms blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative
    gate 10 LU below the absolutely-gated loudness. All channels have weight 1 (no surround
    weighting).

    Parameters
    ----------
    y : np.ndarray [shape=(n,) or (channels, n)]
    sr : int
        Hz.

    Returns
    -------
    float
        LUFS; ``-inf`` for an all-zero or empty signal. Deviations from the standard, so that
        every non-silent clip gets a finite value: a clip shorter than one block is measured as a
        single block, and when no block passes the absolute gate the ungated mean is used.
    """
    import scipy.signal

    if not sr > 0:
        raise ValueError(f"sr must be > 0 Hz, got {sr}")
    y2 = np.atleast_2d(_as_f32(y))
    if y2.ndim != 2:
        raise ValueError(f"y: expected shape (channels, n) or (n,), got {y2.shape}")
    n = y2.shape[-1]
    if n == 0:
        return -math.inf
    z = scipy.signal.sosfilt(_k_weighting_sos(sr), y2, axis=-1)
    power = np.einsum("cn,cn->n", z, z)  # sum over channels of the squared K-weighted signal
    block, step = round(0.4 * sr), round(0.1 * sr)
    if n < block:
        blocks = np.array([power.mean()])
    else:
        csum = np.concatenate(([0.0], np.cumsum(power)))
        starts = np.arange(0, n - block + 1, step)
        blocks = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10 * np.log10(np.maximum(blocks, 0.0))
    gated = blocks[lk > -70.0]
    if gated.size == 0:
        mean = float(blocks.mean())
        return -0.691 + 10 * math.log10(mean) if mean > 0 else -math.inf
    relative = -0.691 + 10 * math.log10(float(gated.mean())) - 10.0
    final = blocks[(lk > -70.0) & (lk > relative)]
    return -0.691 + 10 * math.log10(float(final.mean()))


def normalize(y: np.ndarray, *, method: Literal["peak", "rms", "loudness"], target_db: float,
              sr: int | None = None) -> np.ndarray:
    """Scale a signal to a target level.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)]
        ``(n,)`` or ``(channels, n)`` for ``loudness``.
    method : {'peak', 'rms', 'loudness'}
        ``peak``: max |y| becomes ``10 ** (target_db / 20)``. ``rms``: the RMS over all samples
        becomes ``10 ** (target_db / 20)`` (dBFS relative to amplitude 1, so a full-scale sine is
        -3.01 dB RMS). ``loudness``: the BS.1770 integrated loudness
        (:func:`integrated_loudness`) becomes ``target_db`` LUFS; needs ``sr``.
    target_db : float
        dBFS (peak, rms) or LUFS (loudness).
    sr : int, optional
        Hz, required by ``loudness``.

    Returns
    -------
    np.ndarray [shape=(..., n), dtype=float32]
        A new array, or ``y`` itself when it is silent (peak below :data:`SILENCE_AMPLITUDE`):
        silence is returned unchanged, never turned into NaN.

    Notes
    -----
    Clip guard: after ``rms`` or ``loudness`` normalization the gain is lowered, if needed, so
    that the peak stays at or below 1.0 (the level then falls short of the target). ``peak``
    normalization is exact, even for a target above 0 dBFS.
    """
    if method not in ("peak", "rms", "loudness"):
        raise ValueError(f"method must be 'peak', 'rms' or 'loudness', got {method!r}")
    if not math.isfinite(target_db):
        raise ValueError(f"target_db must be finite, got {target_db}")
    if method == "loudness" and (sr is None or not sr > 0):
        raise ValueError(f"sr (Hz) is required for method='loudness', got {sr}")
    y = _as_f32(y)
    peak = _peak(y)
    if not peak >= SILENCE_AMPLITUDE or not math.isfinite(peak):
        return y
    target = 10 ** (target_db / 20)
    if method == "peak":
        gain = target / peak
    else:
        if method == "rms":
            level = math.sqrt(float(np.mean(np.square(y), dtype=np.float64)))
            gain = target / level
        else:
            lufs = integrated_loudness(y, sr=sr)  # type: ignore[arg-type]
            gain = 10 ** ((target_db - lufs) / 20)
        # 1 - 1e-6 leaves room for float32 rounding of the product.
        gain = min(gain, (1.0 - 1e-6) / peak)
    return y * np.float32(gain)


def fix_duration(y: np.ndarray, *, n_samples: int, pad_mode: str = "constant") -> np.ndarray:
    """Crop or pad to an exact length.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)]
    n_samples : int
        Target length.
    pad_mode : str
        ``numpy.pad`` mode for the padding at the end (``"constant"`` pads zeros). An empty
        signal is always zero-padded.

    Returns
    -------
    np.ndarray [shape=(..., n_samples), dtype=float32]
        The first ``n_samples`` samples (a view) when longer, ``y`` itself when equal, padded at
        the end when shorter.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    y = _as_f32(y)
    n = y.shape[-1]
    if n >= n_samples:
        return y[..., :n_samples]
    widths = [(0, 0)] * (y.ndim - 1) + [(0, int(n_samples) - n)]
    return np.pad(y, widths, mode="constant" if n == 0 else pad_mode)  # type: ignore[call-overload]


def segment(y: np.ndarray, *, win: int, hop: int, pad_last: bool) -> list[tuple[int, np.ndarray]]:
    """Cut fixed-length windows with a hop.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)]
    win, hop : int
        Window length and hop in samples (>= 1).
    pad_last : bool
        When the full windows do not reach the end of ``y``, add one more window starting at the
        next hop, zero-padded to ``win`` (a signal shorter than ``win`` then gives one padded
        window); otherwise drop that tail.

    Returns
    -------
    list of (int, np.ndarray [shape=(..., win), dtype=float32])
        ``(start sample, window)``; full windows are views of ``y``. There are
        ``1 + (n - win) // hop`` full windows when ``n >= win``.
    """
    for name, value in (("win", win), ("hop", hop)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    y = _as_f32(y)
    n = y.shape[-1]
    n_full = 0 if n < win else 1 + (n - win) // hop
    out = [(k * hop, y[..., k * hop: k * hop + win]) for k in range(n_full)]
    covered = (n_full - 1) * hop + win if n_full else 0
    start = n_full * hop
    if pad_last and covered < n and start < n:
        out.append((start, fix_duration(y[..., start:], n_samples=win)))
    return out


# ---------------------------------------------------------------------------------------------
# Configuration and the whole chain


@dataclass(frozen=True)
class TrimConfig:
    """``process.trim``: ``top_db`` in dB below the loudest frame."""

    enabled: bool = True
    top_db: float = 60.0


@dataclass(frozen=True)
class FilterConfig:
    """``process.filter``: Butterworth ``kind`` with ``cutoff`` in Hz (two values for bandpass)."""

    enabled: bool = False
    kind: str = "highpass"
    cutoff: tuple[float, ...] = (30.0,)
    order: int = 4


@dataclass(frozen=True)
class NormalizeConfig:
    """``process.normalize``: ``target_db`` in dBFS (peak, rms) or LUFS (loudness)."""

    enabled: bool = True
    method: str = "peak"
    target_db: float = -1.0


@dataclass(frozen=True)
class DurationConfig:
    """``process.duration``: ``mode`` none | fixed | segment; times in seconds; ``short`` pad | reject.

    ``min_seconds`` (0: keep every clip with audio) also sets the shortest tail of a segmented clip
    that becomes one more padded window.
    """

    mode: str = "none"
    seconds: float = 5.0
    hop_seconds: float = 2.5
    min_seconds: float = 0.0
    short: str = "pad"


_SECTIONS: dict[str, type] = {"trim": TrimConfig, "filter": FilterConfig, "normalize": NormalizeConfig,
                              "duration": DurationConfig}


@dataclass(frozen=True)
class ProcessConfig:
    """The ``process`` section of ``params.yaml``, as :func:`soundstage.config.validate_params`
    validated it (this class checks nothing itself)."""

    sample_rate: int | None = 22050
    mono: bool = True
    trim: TrimConfig = TrimConfig()
    filter: FilterConfig = FilterConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    duration: DurationConfig = DurationConfig()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ProcessConfig:
        """Build from a validated ``process`` mapping; missing keys take the defaults of ``params.yaml``."""
        kwargs = dict(d or {})
        for name, section in _SECTIONS.items():
            values = dict(kwargs.get(name) or {})
            if "cutoff" in values:  # YAML gives a list; the frozen config holds a tuple
                values["cutoff"] = tuple(values["cutoff"])
            kwargs[name] = section(**values)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested ``dict`` in the ``params.yaml`` layout (``cutoff`` as a list)."""
        out = dataclasses.asdict(self)
        out["filter"]["cutoff"] = list(self.filter.cutoff)
        return out


@dataclass(frozen=True, eq=False)
class Segment:
    """One processed piece of a clip.

    Attributes
    ----------
    index : int
        0-based position among the clip's segments.
    start : float
        Seconds from the start of the processed (resampled, trimmed) clip.
    audio : np.ndarray [shape=(n,) or (channels, n), dtype=float32]
        1-D when ``mono`` is set or the clip has one channel.
    """

    index: int
    start: float
    audio: np.ndarray


def preprocess(y: np.ndarray, *, sr: int, config: ProcessConfig) -> tuple[list[Segment], int]:
    """Run the whole preprocessing chain on one decoded clip.

    Order: resample -> mono -> filter -> trim -> silence / minimum-length checks -> normalize ->
    fixed duration or segmentation.

    Parameters
    ----------
    y : np.ndarray [shape=(channels, n) or (n,)]
        As returned by :func:`soundstage.decode.load_audio`.
    sr : int
        Hz.
    config : ProcessConfig

    Returns
    -------
    segments : list of Segment
        One for duration modes ``none`` and ``fixed``, one or more for ``segment``.
    sr : int
        The output rate in Hz (``config.sample_rate``, or ``sr`` when that is ``None``).

    Raises
    ------
    AudioError
        ``silent`` (path ``None``) when the clip is empty or below :data:`SILENCE_AMPLITUDE`
        after trimming; ``too_short`` when it is shorter than ``duration.min_seconds`` after
        trimming, or (``short: reject``) shorter than ``duration.seconds`` in modes ``fixed`` and
        ``segment``. Attach the file with :meth:`AudioError.with_path`.
    ValueError
        A filter cutoff at or above the Nyquist rate of a native rate (``sample_rate: null``).

    Notes
    -----
    * Downmixing runs before resampling when ``mono`` is set: both are linear, so the result is
      the same up to rounding, at 1 / channels of the resampling cost.
    * Normalization is per clip, before segmentation, so all windows of a clip keep their
      relative levels.
    * ``fixed`` crops from the start and zero-pads at the end (``short: pad``).
    * ``segment`` uses windows of ``seconds`` every ``hop_seconds``; with ``short: pad`` a
      clip shorter than one window becomes one padded window, and a tail not covered by the full
      windows becomes one more padded window when it holds at least ``min_seconds`` of audio
      (otherwise it is dropped, as it always is with ``short: reject``).
    """
    y = _as_f32(y)
    if y.ndim == 1:
        y = y[np.newaxis]
    if y.ndim != 2:
        raise ValueError(f"y: expected shape (channels, n) or (n,), got {y.shape}")
    y = to_mono(y) if config.mono else (y[0] if y.shape[0] == 1 else y)
    out_sr = int(config.sample_rate or sr)
    y = resample(y, orig_sr=sr, target_sr=out_sr)
    flt = config.filter
    if flt.enabled:
        y = butter_filter(y, sr=out_sr, kind=flt.kind, cutoff=flt.cutoff, order=flt.order)  # type: ignore[arg-type]
    if config.trim.enabled:
        y, _ = trim_silence(y, top_db=config.trim.top_db)
    n = y.shape[-1]
    peak = _peak(y)
    if n == 0 or peak < SILENCE_AMPLITUDE:
        level = f"{20 * math.log10(peak):.1f} dBFS" if peak > 0 else "-inf dBFS"
        after = "after trimming " if config.trim.enabled else ""
        raise AudioError(None, "silent", f"silent {after}({n} samples, peak {level}, below -120 dBFS): nothing to keep")
    dur = config.duration
    min_samples = round(dur.min_seconds * out_sr)
    if n < min_samples:
        after = " after trimming" if config.trim.enabled else ""
        raise AudioError(None, "too_short", f"{n / out_sr:.3f} s{after} is shorter than "
                                            f"process.duration.min_seconds={dur.min_seconds:g}")
    nrm = config.normalize
    if nrm.enabled:
        y = normalize(y, method=nrm.method, target_db=nrm.target_db, sr=out_sr)  # type: ignore[arg-type]

    if dur.mode == "none":
        return [Segment(0, 0.0, y)], out_sr
    win = max(1, round(dur.seconds * out_sr))
    if n < win and dur.short == "reject":
        raise AudioError(None, "too_short", f"{n / out_sr:.3f} s is shorter than process.duration.seconds="
                                            f"{dur.seconds:g} with process.duration.short=reject")
    if dur.mode == "fixed":
        return [Segment(0, 0.0, fix_duration(y, n_samples=win))], out_sr
    hop = max(1, round(dur.hop_seconds * out_sr))
    windows = segment(y, win=win, hop=hop, pad_last=dur.short == "pad")
    if n >= win and len(windows) > 1 + (n - win) // hop and n - windows[-1][0] < min_samples:
        windows.pop()  # padded tail with less than min_seconds of audio
    return [Segment(k, start / out_sr, w) for k, (start, w) in enumerate(windows)], out_sr
