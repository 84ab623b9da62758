"""Tests for soundstage.moments: streaming mean/variance with Chan et al.'s exact merge.

Reference values are ``np.mean`` / ``np.var`` (two-pass, float64) of the concatenated
frames. Merged results must agree to 1e-12 relative, including empty partitions; with a 1e6
offset on unit-spread data the variance is held to 1e-10 (measured ~3e-11): there a part's
mean is only representable to 1e6 * eps ~ 1e-10 absolute, which bounds every float64 method,
while naive Σx / Σx² accumulators are off by > 1e-6 (asserted below).
"""

from __future__ import annotations

import numpy as np
import pytest

from soundstage.moments import Moments

N_BINS = 4


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1979)  # Chan, Golub & LeVeque


def random_partition(x: np.ndarray, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split frames (axis 1) at random cut points; repeated cuts make empty parts."""
    cuts = np.sort(rng.integers(0, x.shape[1] + 1, size=n_parts - 1))
    return np.split(x, cuts, axis=1)


def assert_matches(m: Moments, x: np.ndarray, rtol: float) -> None:
    assert m.count == x.shape[1]
    np.testing.assert_allclose(m.mean, x.mean(axis=1), rtol=rtol)
    np.testing.assert_allclose(m.var, x.var(axis=1), rtol=rtol)
    np.testing.assert_allclose(m.std, x.std(axis=1), rtol=rtol)


def test_from_frames_matches_numpy(rng: np.random.Generator) -> None:
    x = rng.normal(3.0, 2.0, size=(N_BINS, 101))
    m = Moments.from_frames(x)
    assert m.mean.dtype == np.float64 and m.m2.dtype == np.float64
    assert m.n_bins == N_BINS
    assert_matches(m, x, rtol=1e-13)


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("n_parts", [1, 2, 7, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_merge_of_random_partitions(offset: float, n_parts: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Per-bin spreads. With an offset, a part's mean is only representable to ~offset * 2e-16
    # absolute, which bounds any float64 method's variance error at ~eps * offset / std
    # relative (measured: 3e-11 at 1e6 ± 1, 4e-12 at 1e6 ± 10, 4e-8 at 1e6 ± 1e-3).
    scales = [1.0, 1e-3, 10.0, 1.0] if offset == 0 else [1.0, 3.0, 10.0, 1.0]
    x = offset + rng.normal(0.0, 1.0, size=(N_BINS, 500)) * np.array(scales)[:, np.newaxis]
    parts = random_partition(x, n_parts, rng)
    merged = Moments.merge_all(Moments.from_frames(p) for p in parts)
    assert_matches(merged, x, rtol=1e-12 if offset == 0 else 1e-10)


def test_merge_with_empty_partitions_everywhere(rng: np.random.Generator) -> None:
    x = rng.normal(size=(N_BINS, 30))
    empty = np.empty((N_BINS, 0))
    parts = [empty, x[:, :10], empty, empty, x[:, 10:], empty]
    merged = Moments.merge_all(Moments.from_frames(p) for p in parts)
    assert_matches(merged, x, rtol=1e-12)


def test_merge_parts_of_very_different_magnitude(rng: np.random.Generator) -> None:
    small = rng.normal(0.0, 1e-3, size=(N_BINS, 200))
    large = rng.normal(1e6, 1.0, size=(N_BINS, 300))
    x = np.concatenate([small, large], axis=1)
    merged = Moments.from_frames(small).merge(Moments.from_frames(large))
    assert_matches(merged, x, rtol=1e-12)


def test_offset_is_stable_where_sum_of_squares_is_not(rng: np.random.Generator) -> None:
    """Σx / Σx² accumulators lose the variance of 1e6 ± 1 data; the Chan merge does not."""
    x = 1e6 + rng.normal(0.0, 1.0, size=(N_BINS, 2000))
    parts = random_partition(x, 20, rng)
    truth = x.var(axis=1)

    n = s = ss = 0.0
    for p in parts:  # the naive streaming alternative
        n += p.shape[1]
        s = s + p.sum(axis=1)
        ss = ss + (p * p).sum(axis=1)
    naive = ss / n - (s / n) ** 2
    naive_err = np.max(np.abs(naive - truth) / truth)

    merged = Moments.merge_all(Moments.from_frames(p) for p in parts)
    chan_err = np.max(np.abs(merged.var - truth) / truth)
    assert naive_err > 1e-6  # the test data really are hard
    assert chan_err < 1e-10


def test_float32_frames_accumulate_in_float64(rng: np.random.Generator) -> None:
    x32 = (1000.0 + rng.normal(size=(N_BINS, 10_000))).astype(np.float32)
    x64 = x32.astype(np.float64)
    parts = random_partition(x32, 5, rng)
    merged = Moments.merge_all(Moments.from_frames(p) for p in parts)
    assert_matches(merged, x64, rtol=1e-12)


def test_merge_order_does_not_matter(rng: np.random.Generator) -> None:
    x = rng.normal(5.0, 3.0, size=(N_BINS, 300))
    parts = [Moments.from_frames(p) for p in random_partition(x, 9, rng)]
    forward = Moments.merge_all(parts)
    backward = Moments.merge_all(parts[::-1])
    tree = Moments.merge_all(
        [Moments.merge_all(parts[:4]), Moments.merge_all(parts[4:])]
    )
    for other in (backward, tree):
        assert other.count == forward.count
        np.testing.assert_allclose(other.mean, forward.mean, rtol=1e-13)
        np.testing.assert_allclose(other.m2, forward.m2, rtol=1e-12)


def test_count_zero_on_either_side(rng: np.random.Generator) -> None:
    m = Moments.from_frames(rng.normal(size=(N_BINS, 5)))
    empty = Moments.empty(N_BINS)
    for merged in (m.merge(empty), empty.merge(m)):
        assert merged.count == 5
        np.testing.assert_array_equal(merged.mean, m.mean)
        np.testing.assert_array_equal(merged.m2, m.m2)
        assert merged is not m and merged.mean is not m.mean
    both = empty.merge(Moments.empty(N_BINS))
    assert both.count == 0
    assert np.isnan(both.var).all() and np.isnan(both.std).all()
    assert Moments.from_frames(np.empty((N_BINS, 0))).count == 0


def test_merge_does_not_mutate_inputs(rng: np.random.Generator) -> None:
    a = Moments.from_frames(rng.normal(size=(N_BINS, 5)))
    b = Moments.from_frames(rng.normal(size=(N_BINS, 7)))
    a_mean, a_m2, b_mean = a.mean.copy(), a.m2.copy(), b.mean.copy()
    a.merge(b)
    Moments.merge_all([a, b])
    assert a.count == 5 and b.count == 7
    np.testing.assert_array_equal(a.mean, a_mean)
    np.testing.assert_array_equal(a.m2, a_m2)
    np.testing.assert_array_equal(b.mean, b_mean)


def test_merge_all_empty_iterable() -> None:
    assert Moments.merge_all([], n_bins=3).count == 0
    assert Moments.merge_all([], n_bins=3).n_bins == 3
    with pytest.raises(ValueError, match="n_bins"):
        Moments.merge_all([])


def test_single_frame_has_zero_variance() -> None:
    m = Moments.from_frames(np.array([[1.0], [-2.0]]))
    assert m.count == 1
    np.testing.assert_array_equal(m.var, [0.0, 0.0])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Moments.from_frames(np.zeros(5)), "2-D"),
        (lambda: Moments.from_frames(np.zeros((2, 3), dtype=complex)), "real"),
        (lambda: Moments.empty(2).merge(Moments.empty(3)), "bins"),
        (lambda: Moments(-1, np.zeros(2), np.zeros(2)), "count"),
        (lambda: Moments(1, np.zeros(2), np.zeros(3)), "shape"),
    ],
)
def test_bad_input_raises(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def stacked(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ms = [Moments.from_frames(p) for p in parts]
    return (np.array([m.count for m in ms]), np.stack([m.mean for m in ms]), np.stack([m.m2 for m in ms]))


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("n_parts", [1, 3, 40])
def test_from_parts_matches_numpy_and_pairwise_merge(offset: float, n_parts: int, rng: np.random.Generator) -> None:
    x = offset + rng.normal(0.0, 1.0, size=(N_BINS, 600)) * np.array([1.0, 3.0, 10.0, 0.5])[:, np.newaxis]
    parts = random_partition(x, n_parts, rng)  # includes empty parts
    m = Moments.from_parts(*stacked(parts))
    assert_matches(m, x, rtol=1e-12 if offset == 0 else 1e-10)
    pairwise = Moments.merge_all(Moments.from_frames(p) for p in parts)
    np.testing.assert_allclose(m.mean, pairwise.mean, rtol=1e-13)
    np.testing.assert_allclose(m.m2, pairwise.m2, rtol=1e-12 if offset == 0 else 1e-10)


def test_from_parts_ignores_placeholders_of_empty_parts(rng: np.random.Generator) -> None:
    x = rng.normal(size=(N_BINS, 50))
    counts, means, m2s = stacked([x[:, :0], x[:, :20], x[:, 20:]])
    means[0] = 1e300  # an empty part's mean is a placeholder: whatever it holds, it has no weight
    m2s[0] = np.nan
    assert_matches(Moments.from_parts(counts, means, m2s), x, rtol=1e-12)
    empty = Moments.from_parts(np.zeros(2, int), np.zeros((2, N_BINS)), np.zeros((2, N_BINS)))
    assert empty.count == 0 and empty.n_bins == N_BINS


@pytest.mark.parametrize(
    "counts, means, m2s, match",
    [
        ([1, 2], np.zeros((3, 2)), np.zeros((3, 2)), "counts"),
        ([1], np.zeros((1, 2)), np.zeros((1, 3)), "m2s"),
        ([-1], np.zeros((1, 2)), np.zeros((1, 2)), ">= 0"),
    ],
)
def test_from_parts_bad_input(counts, means, m2s, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Moments.from_parts(np.asarray(counts), means, m2s)
