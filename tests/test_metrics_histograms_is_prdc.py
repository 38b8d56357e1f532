"""HU histograms (vs scipy's Wasserstein), Inception Score (analytic values) and PRDC (vs brute-force loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from ctsynth.metrics.histograms import (
    HU_BANDS,
    band_peaks,
    body_mask,
    histogram_bin_edges,
    histogram_intersection,
    histogram_wasserstein,
    hu_histogram,
    plot_histogram_overlay,
)
from ctsynth.metrics.inception_score import hagan_raw_feature_score, inception_score, inception_score_from_probs
from ctsynth.metrics.prdc import knn_radii, prdc


def test_bin_edges_and_counts(rng):
    edges = histogram_bin_edges()
    assert len(edges) == 379 and edges[0] == -1024 and edges[-1] == 2000
    vol = np.array([-3024.0, -1024.0, -1020.0, 0.0, 2000.0, 2500.0]).reshape(1, 2, 3)
    counts, out = hu_histogram(vol, edges)
    assert counts.sum() == 4 and counts[0] == 2 and counts[-1] == 1
    assert out == pytest.approx(2 / 6)
    mask = np.zeros_like(vol, dtype=bool)
    mask[0, 1] = True
    counts, _ = hu_histogram(vol, edges, mask=mask)
    assert counts.sum() == 2
    with pytest.raises(ValueError, match="whole number of bins"):
        histogram_bin_edges((-1000, 1000), bin_width=7)
    with pytest.raises(ValueError, match="mask shape"):
        hu_histogram(vol, edges, mask=mask[0])


def test_wasserstein_matches_scipy(rng):
    edges = histogram_bin_edges((-100, 100), 10)
    centres = (edges[:-1] + edges[1:]) / 2
    p, q = rng.random(20), rng.random(20)
    ref = wasserstein_distance(centres, centres, u_weights=p, v_weights=q)
    assert histogram_wasserstein(p, q, centres) == pytest.approx(ref, rel=1e-10)
    batch = rng.random((3, 20))
    expected = [wasserstein_distance(centres, centres, b, q) for b in batch]
    np.testing.assert_allclose(histogram_wasserstein(batch, q, centres), expected, rtol=1e-10)


def test_distances_identity_and_monotone_shift(rng):
    edges = histogram_bin_edges()
    centres = (edges[:-1] + edges[1:]) / 2
    vol = rng.normal(40, 60, size=(20, 20, 20))
    ref, _ = hu_histogram(vol, edges)
    assert histogram_wasserstein(ref, ref, centres) == pytest.approx(0.0, abs=1e-12)
    assert histogram_intersection(ref, ref) == pytest.approx(1.0)
    dists = [histogram_wasserstein(hu_histogram(vol + s, edges)[0], ref, centres) for s in (20, 50, 100)]
    inter = [histogram_intersection(hu_histogram(vol + s, edges)[0], ref) for s in (20, 50, 100)]
    assert dists[0] < dists[1] < dists[2]
    assert dists[2] == pytest.approx(100, abs=8)  # a pure shift moves the W1 distance by the shift (within a bin)
    assert inter[0] > inter[1] > inter[2]


def test_band_peaks_and_body_mask(tmp_path):
    edges = histogram_bin_edges()
    centres = (edges[:-1] + edges[1:]) / 2
    vol = np.full((24, 24, 24), -1000.0)
    vol[4:20, 4:20, 4:20] = -100.0  # fat shell
    vol[8:16, 8:16, 8:16] = 40.0  # soft tissue core
    vol[11:13, 11:13, 11:13] = -700.0  # enclosed gas: inside the body mask after hole filling
    p, _ = hu_histogram(vol, edges)
    peaks = band_peaks(p, centres)
    assert set(peaks) == set(HU_BANDS)
    assert peaks["air"] == pytest.approx(-1000, abs=4) and peaks["fat"] == pytest.approx(-100, abs=4)
    assert peaks["soft_tissue"] == pytest.approx(40, abs=4) and np.isnan(peaks["bone"])
    mask = body_mask(vol)
    assert mask.sum() == 16**3 and mask[11, 11, 11]
    path = plot_histogram_overlay(tmp_path / "h.png", centres, p, np.stack([p, p]))
    assert path.exists() and path.stat().st_size > 1000


def test_inception_score_analytic():
    assert inception_score(torch.zeros(20, 7), splits=2)[0] == pytest.approx(1.0)
    eye = np.eye(5)
    mean, std = inception_score_from_probs(np.concatenate([eye, eye]), splits=2)
    assert mean == pytest.approx(5.0) and std == pytest.approx(0.0)
    big_logits = torch.eye(10) * 100.0  # near one-hot, 10 distinct classes
    assert inception_score(big_logits, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    with pytest.raises(ValueError, match="one sample per split"):
        inception_score(torch.zeros(3, 4), splits=10)


def test_hagan_raw_feature_score():
    # identical rows -> every KL term is 0 -> 1.0; formula checked on a hand-computed example
    assert hagan_raw_feature_score(np.full((4, 3), 0.2)) == pytest.approx(1.0)
    f = np.array([[0.5, 0.0], [0.0, 0.5]])
    # p(y) = [0.25, 0.25]; each row contributes 0.5 * log(0.5 / 0.25)
    assert hagan_raw_feature_score(f) == pytest.approx(np.exp(0.5 * np.log(2)), rel=1e-9)
    with pytest.raises(ValueError, match="non-negative"):
        hagan_raw_feature_score(-np.ones((2, 2)))


def _prdc_loops(x, y, k):
    def kth(a):
        return [sorted(np.linalg.norm(a[i] - a[j]) for j in range(len(a)) if j != i)[k - 1] for i in range(len(a))]

    rx, ry = kth(x), kth(y)
    d = [[np.linalg.norm(x[i] - y[j]) for j in range(len(y))] for i in range(len(x))]
    precision = np.mean([any(d[i][j] < rx[i] for i in range(len(x))) for j in range(len(y))])
    recall = np.mean([any(d[i][j] < ry[j] for j in range(len(y))) for i in range(len(x))])
    density = sum(d[i][j] < rx[i] for i in range(len(x)) for j in range(len(y))) / (k * len(y))
    coverage = np.mean([min(d[i]) < rx[i] for i in range(len(x))])
    return precision, recall, density, coverage


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_matches_loops(rng, k):
    x = rng.normal(size=(25, 4))
    y = rng.normal(size=(20, 4)) * 1.3 + 0.4
    out = prdc(x, y, k=k)
    ref = _prdc_loops(x, y, k)
    assert [out["precision"], out["recall"], out["density"], out["coverage"]] == pytest.approx(list(ref))


def test_prdc_properties(rng):
    x = rng.normal(size=(40, 3))
    same = prdc(x, x, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(x, x + 100.0)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0
    np.testing.assert_allclose(knn_radii(np.array([[0.0], [1.0], [3.0]]), 1), [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="need more than 5 samples"):
        prdc(x[:5], x[:5])
