"""Streaming per-bin mean and variance with an exact parallel merge.

Each shard (or clip) summarises its frames as a :class:`Moments` — count, mean and ``M2``
(the sum of squared deviations from the mean) per bin — and partial results merge with the
pairwise update of Chan, Golub & LeVeque (1979):

    n = n_a + n_b,  δ = mean_b - mean_a
    mean = mean_a + δ · n_b / n
    M2   = M2_a + M2_b + δ² · n_a · n_b / n

The merge is exact in real arithmetic and numerically stable in floating point: unlike
``Σx`` / ``Σx²`` accumulators it never subtracts two large, nearly equal numbers, so a
feature with a large offset (e.g. 1e6 ± 1) keeps its variance to ~1e-12 relative. All
accumulation is float64 whatever the input dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Moments"]


@dataclass(eq=False)
class Moments:
    """Frame count, mean and sum of squared deviations of each bin.

    Attributes
    ----------
    count : int >= 0
        Number of frames summarised.
    mean : np.ndarray [shape=(n_bins,), dtype=float64]
        Per-bin mean (zeros, a placeholder, when ``count == 0``).
    m2 : np.ndarray [shape=(n_bins,), dtype=float64]
        Per-bin ``Σ (x - mean)²`` over frames.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    def __post_init__(self) -> None:
        self.count = int(self.count)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.m2 = np.asarray(self.m2, dtype=np.float64)
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.mean.ndim != 1 or self.mean.shape != self.m2.shape:
            raise ValueError(
                f"mean and m2 must be 1-D of equal shape, got {self.mean.shape} and {self.m2.shape}"
            )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def empty(cls, n_bins: int) -> Moments:
        """Identity of :meth:`merge`: no frames, ``n_bins`` bins."""
        return cls(0, np.zeros(n_bins), np.zeros(n_bins))

    @classmethod
    def from_frames(cls, x: np.ndarray) -> Moments:
        """Summarise one block of frames.

        Parameters
        ----------
        x : np.ndarray [shape=(n_bins, n_frames)]
            Real values, e.g. a log-mel spectrogram (dB). ``n_frames`` may be 0.

        Notes
        -----
        Two passes in float64 (mean, then squared deviations from it), so the block itself
        is as accurate as ``np.var``.
        """
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (n_bins, n_frames), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise ValueError(f"x must be real-valued, got dtype {x.dtype}")
        n_bins, n_frames = x.shape
        if n_frames == 0:
            return cls.empty(n_bins)
        mean = x.mean(axis=1, dtype=np.float64)
        dev = x.astype(np.float64, copy=True)
        dev -= mean[:, np.newaxis]
        m2 = np.einsum("ij,ij->i", dev, dev)
        return cls(n_frames, mean, m2)

    # -- combination ----------------------------------------------------------------------

    @property
    def n_bins(self) -> int:
        return int(self.mean.shape[0])

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of both frame sets (Chan et al.); inputs are not modified."""
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge {self.n_bins} bins with {other.n_bins} bins")
        if other.count == 0:
            return self.copy()
        if self.count == 0:
            return other.copy()
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        delta = other.mean - self.mean
        # float() keeps huge counts from overflowing int64 in n_a * n_b.
        mean = self.mean + delta * (n_b / n)
        m2 = self.m2 + other.m2 + delta**2 * (float(n_a) * float(n_b) / n)
        return Moments(n, mean, m2)

    @classmethod
    def merge_all(cls, parts: Iterable[Moments], *, n_bins: int | None = None) -> Moments:
        """Merge any number of partial moments, in order.

        ``n_bins`` is needed only to return :meth:`empty` for an empty iterable, which
        otherwise raises :class:`ValueError`.
        """
        total: Moments | None = None if n_bins is None else cls.empty(n_bins)
        for part in parts:
            total = part.copy() if total is None else total.merge(part)
        if total is None:
            raise ValueError("merge_all of no parts: pass n_bins to get an empty result")
        return total

    @classmethod
    def from_parts(cls, counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> Moments:
        """Merge ``k`` partial moments given as stacked arrays, in one vectorised step.

        Parameters
        ----------
        counts : np.ndarray [shape=(k,)]
            Frame counts (>= 0).
        means, m2s : np.ndarray [shape=(k, n_bins)]
            Per-part means and ``M2``.

        Notes
        -----
        The k-way form of the pairwise update: with ``n = Σ n_i`` and the merged mean
        ``μ = Σ n_i μ_i / n``, ``M2 = Σ M2_i + Σ n_i (μ_i - μ)²``, exact in real arithmetic. It
        sums deviations from the merged mean, never large squares, so it keeps the stability of
        :meth:`merge`; an error ε in ``μ`` changes ``M2`` only by ``n ε²`` (the first-order term
        ``2 ε Σ n_i (μ_i - μ)`` vanishes). The means are averaged relative to the first
        part's, so a large common offset does not cost precision either.
        """
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        means = np.asarray(means, dtype=np.float64)
        m2s = np.asarray(m2s, dtype=np.float64)
        k = counts.shape[0]
        if means.ndim != 2 or means.shape[0] != k or m2s.shape != means.shape:
            raise ValueError(
                f"from_parts needs counts (k,), means and m2s (k, n_bins); got {counts.shape}, "
                f"{means.shape}, {m2s.shape}"
            )
        if (counts < 0).any():
            raise ValueError("counts must be >= 0")
        live = counts > 0  # an empty part's mean and M2 are placeholders: drop them
        counts, means, m2s = counts[live], means[live], m2s[live]
        n = int(counts.sum())
        if n == 0:
            return cls.empty(means.shape[1])
        w = counts.astype(np.float64)[:, np.newaxis]
        shift = means[0]
        mean = shift + (w * (means - shift)).sum(axis=0) / n
        dev = means - mean
        m2 = m2s.sum(axis=0) + (w * (dev * dev)).sum(axis=0)
        return cls(n, mean, m2)

    def copy(self) -> Moments:
        return Moments(self.count, self.mean.copy(), self.m2.copy())

    # -- results --------------------------------------------------------------------------

    @property
    def var(self) -> np.ndarray:
        """Population variance (ddof=0) per bin; NaN when ``count == 0``, as ``np.var([])``."""
        if self.count == 0:
            return np.full(self.n_bins, np.nan)
        return self.m2 / self.count

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per bin; NaN when ``count == 0``."""
        return np.sqrt(self.var)
