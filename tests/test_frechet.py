"""Tests of ctsynth.metrics.frechet against a scipy.linalg.sqrtm reference, MONAI's FIDMetric and analytic values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from monai.metrics import FIDMetric

from ctsynth.metrics.frechet import (
    RunningFeatureStats,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    trace_sqrt_product,
)


def _reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook Frechet distance with scipy's general matrix square root of the (non-symmetric) product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _correlated(rng: np.random.Generator, n: int, f: int, scale: float = 1.0) -> np.ndarray:
    mix = rng.normal(size=(f, f)) / np.sqrt(f)
    return rng.normal(size=(n, f)) @ mix * scale


def test_feature_statistics_matches_numpy(rng):
    x = rng.normal(size=(50, 7)) * 3 + 10
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    mu_t, _ = feature_statistics(torch.from_numpy(x).float())
    np.testing.assert_allclose(mu_t, x.mean(0), rtol=1e-5)


def test_matches_scipy_sqrtm_reference(rng):
    a = _correlated(rng, 400, 16)
    b = _correlated(rng, 300, 16, scale=1.3) + 0.5
    ours, ref = frechet_distance(a, b), _reference_fd(a, b)
    assert ours == pytest.approx(ref, rel=1e-8, abs=1e-10)


def test_matches_monai_fidmetric(rng):
    a = _correlated(rng, 200, 12)
    b = _correlated(rng, 250, 12, scale=0.7) - 0.2
    monai_value = float(FIDMetric()(torch.from_numpy(b), torch.from_numpy(a)))
    assert frechet_distance(a, b) == pytest.approx(monai_value, rel=1e-6, abs=1e-8)


def test_trace_sqrt_product_analytic():
    # diagonal matrices: Tr sqrt(D1 D2) = sum sqrt(d1 d2)
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([16.0, 1.0, 0.25])
    assert trace_sqrt_product(np.diag(d1), np.diag(d2)) == pytest.approx(np.sqrt(d1 * d2).sum(), rel=1e-12)


def test_identical_sets_give_zero(rng):
    a = _correlated(rng, 100, 10)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_mean_shift_gives_squared_norm(rng):
    a = _correlated(rng, 80, 6)
    d = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    # equal covariances -> the trace term vanishes and the distance is |d|^2 exactly
    assert frechet_distance(a, a + d) == pytest.approx(float(d @ d), rel=1e-7)


def test_known_gaussians_from_stats():
    # N(0, I) vs N(m, 4 I) in F dims: |m|^2 + F (1 + 4 - 2*2) = |m|^2 + F
    f, m = 5, np.full(5, 2.0)
    value = frechet_distance_from_stats(np.zeros(f), np.eye(f), m, 4 * np.eye(f))
    assert value == pytest.approx(m @ m + f, rel=1e-12)


def test_symmetric(rng):
    a, b = _correlated(rng, 60, 8), _correlated(rng, 70, 8, 2.0)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def test_monotone_in_shift_and_noise(rng):
    a = _correlated(rng, 300, 8)
    base = _correlated(rng, 300, 8)
    shifts = [frechet_distance(a, base + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(shifts, shifts[1:], strict=False))
    noise = rng.normal(size=base.shape)
    noisy = [frechet_distance(a, base + s * noise) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(noisy, noisy[1:], strict=False))


def test_rank_deficient_is_finite_and_non_negative(rng):
    a = rng.normal(size=(10, 64))
    b = rng.normal(size=(12, 64)) + 0.1
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value >= 0.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # agrees with the reference even where sqrtm struggles (relative to the size of the terms)
    assert value == pytest.approx(_reference_fd(a, b), rel=1e-5, abs=1e-6)


def test_streaming_equals_batch(rng):
    x = rng.normal(size=(103, 9)) * 5 + 1000.0  # large mean: the naive formula would lose digits
    stats = RunningFeatureStats()
    for start in range(0, 103, 17):
        stats.update(x[start : start + 17])
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    y = rng.normal(size=(50, 9)) * 4 + 1000.5
    other = RunningFeatureStats().update(torch.from_numpy(y))
    assert stats.frechet_distance(other) == pytest.approx(frechet_distance(x, y), rel=1e-7)


def test_streaming_merge_and_save_load(rng, tmp_path):
    x = rng.normal(size=(40, 4))
    left, right = RunningFeatureStats().update(x[:15]), RunningFeatureStats().update(x[15:])
    left.merge(right)
    np.testing.assert_allclose(left.covariance, np.cov(x, rowvar=False), rtol=1e-12)
    path = left.save(tmp_path / "ref_stats.npz")
    loaded = RunningFeatureStats.load(path)
    assert loaded.count == 40
    np.testing.assert_allclose(loaded.covariance, left.covariance, rtol=1e-14)
    loaded.update(x[:3])
    np.testing.assert_allclose(loaded.mean, np.concatenate([x, x[:3]]).mean(0), rtol=1e-12)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(rng.normal(size=(5, 3)), rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        frechet_distance(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"\(N, F\) feature matrix"):
        frechet_distance(rng.normal(size=(5,)), rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(np.full((3, 2), np.nan), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance_from_stats(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    stats = RunningFeatureStats().update(rng.normal(size=(1, 3)))
    with pytest.raises(ValueError, match="needs at least 2"):
        _ = stats.covariance
    with pytest.raises(ValueError, match="holds 3"):
        stats.update(rng.normal(size=(2, 4)))
    with pytest.raises(ValueError, match="no feature vectors"):
        _ = RunningFeatureStats().mean


def test_low_rank_identity_matches_eigendecomposition_path():
    # N < F: the nuclear-norm identity must agree with the F x F eigendecomposition path (which clips round-off)
    from ctsynth.metrics.frechet import _frechet_distance_low_rank

    g = np.random.default_rng(7)
    a = g.normal(size=(40, 300))
    b = g.normal(loc=0.3, scale=1.5, size=(25, 300)) @ g.normal(size=(300, 300)) / 10
    expected = frechet_distance_from_stats(*feature_statistics(a), *feature_statistics(b))
    assert _frechet_distance_low_rank(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    stats_a, stats_b = RunningFeatureStats().update(a[:15]).update(a[15:]), RunningFeatureStats().update(b)
    assert stats_a.rows() is not None and stats_a.rows().shape == (40, 300)
    assert stats_a.frechet_distance(stats_b) == pytest.approx(expected, rel=1e-7)
    # past F vectors the rows are dropped and the statistics path takes over
    big = RunningFeatureStats().update(g.normal(size=(301, 300)))
    assert big.rows() is None
