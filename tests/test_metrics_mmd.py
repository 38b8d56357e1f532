"""MMD^2: linear kernel vs monai.metrics.MMDMetric and a brute-force Gram matrix; Gaussian kernel vs brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import MMDMetric

from ctsynth.metrics.mmd import LinearMMDAccumulator, gaussian_mmd, linear_mmd, median_heuristic_bandwidth


def _brute_force_mmd(x: np.ndarray, y: np.ndarray, kernel, unbiased: bool) -> float:
    # independent reference: explicit double loops over the kernel matrix entries.
    m, n = len(x), len(y)
    kxx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if not unbiased or i != j)
    kyy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if not unbiased or i != j)
    kxy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n))
    dx, dy = (m * (m - 1), n * (n - 1)) if unbiased else (m * m, n * n)
    return kxx / dx + kyy / dy - 2 * kxy / (m * n)


def test_linear_mmd_matches_monai(rng):
    real = rng.random((6, 1, 8, 8, 8))
    syn = rng.random((6, 1, 8, 8, 8)) * 0.8 + 0.15
    ref = MMDMetric()(torch.as_tensor(real), torch.as_tensor(syn)).item()
    assert linear_mmd(real, syn) == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_linear_mmd_streaming_matches_brute_force_unequal_sizes(rng):
    real = rng.random((7, 1, 6, 6, 6))
    syn = rng.random((5, 1, 6, 6, 6)) + 0.05
    acc = LinearMMDAccumulator()
    for batch in np.array_split(real, 3):
        acc.update(batch, real=True)
    for batch in np.array_split(syn, 2):
        acc.update(torch.as_tensor(batch), real=False)
    ref = _brute_force_mmd(real.reshape(7, -1), syn.reshape(5, -1), lambda a, b: float(a @ b), unbiased=True)
    assert acc.counts == (7, 5)
    assert acc.compute() == pytest.approx(ref, rel=1e-9)


def test_linear_mmd_identity_and_monotone_in_shift(rng):
    real = rng.random((8, 1, 6, 6, 6))
    base = linear_mmd(real, real)
    # analytic: the unbiased estimator of a set against itself is -2 / (m - 1) * (summed per-voxel variance)
    assert base == pytest.approx(-2 / 7 * real.reshape(8, -1).var(axis=0).sum(), rel=1e-9)
    shifts = [linear_mmd(real, real + s) for s in (0.1, 0.2, 0.4)]
    assert shifts[0] < shifts[1] < shifts[2]
    # analytic: shifting every voxel by s adds exactly s^2 * n_voxels (= ||mean difference||^2)
    for s, value in zip((0.1, 0.2, 0.4), shifts, strict=True):
        assert value - base == pytest.approx(s**2 * 216, rel=1e-9)


def test_linear_mmd_errors():
    acc = LinearMMDAccumulator()
    acc.update(np.zeros((2, 4)), real=True)
    with pytest.raises(ValueError, match="equal size"):
        acc.update(np.zeros((2, 5)), real=False)
    with pytest.raises(ValueError, match="at least two samples"):
        acc.compute()


@pytest.mark.parametrize("unbiased", [True, False])
def test_gaussian_mmd_matches_brute_force(rng, unbiased):
    x = rng.normal(size=(7, 5))
    y = rng.normal(size=(6, 5)) + 0.5
    pooled = np.concatenate([x, y])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(13) for j in range(i + 1, 13)]
    sigma = float(np.median(dists))
    ref = _brute_force_mmd(x, y, lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2)), unbiased)
    out = gaussian_mmd(x, y, unbiased=unbiased)
    assert out["bandwidth"] == pytest.approx(sigma, rel=1e-9)
    assert median_heuristic_bandwidth(x, y) == pytest.approx(sigma, rel=1e-9)
    assert out["mmd2"] == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_gaussian_mmd_properties(rng):
    x = rng.normal(size=(20, 4))
    assert gaussian_mmd(x, x, unbiased=False)["mmd2"] == pytest.approx(0.0, abs=1e-12)
    values = [gaussian_mmd(x, x + s, bandwidth=2.0)["mmd2"] for s in (0.25, 0.5, 1.0)]
    assert values[0] < values[1] < values[2]
    with pytest.raises(ValueError, match="feature sizes differ"):
        gaussian_mmd(x, x[:, :3])
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        gaussian_mmd(np.zeros((3, 2)), np.zeros((3, 2)))
