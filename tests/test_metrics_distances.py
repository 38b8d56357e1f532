"""Pairwise Euclidean distances (shared by MMD, PRDC, memorisation) vs scipy.spatial.distance.cdist."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import cdist

from ctsynth.metrics.distances import pairwise_distances, pairwise_squared_distances


def test_pairwise_distances_match_scipy(rng):
    a, b = rng.normal(size=(7, 13)) * 50.0, rng.normal(size=(5, 13)) * 50.0
    d = pairwise_distances(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(d, cdist(a, b), rtol=1e-10, atol=1e-9)
    d2 = pairwise_squared_distances(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(d2, cdist(a, b, "sqeuclidean"), rtol=1e-10, atol=1e-8)


def test_pairwise_distances_of_identical_rows_are_zero_not_negative(rng):
    a = torch.from_numpy(rng.normal(size=(6, 300)) * 1e3)
    d2 = pairwise_squared_distances(a, a)
    assert torch.all(d2 >= 0)  # rounding of ||a||^2 + ||a||^2 - 2 a.a is clamped
    assert torch.all(torch.isfinite(pairwise_distances(a, a)))
    assert float(d2.diagonal().max()) < 1e-6 * float(d2.max())
