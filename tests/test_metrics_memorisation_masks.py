"""Memorisation audit (copies flagged, fresh samples not) and mask metrics (vs analytic values and scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from ctsynth.metrics.masks import compare_label_volumes, label_volumes_ml, paired_mask_scores
from ctsynth.metrics.memorisation import (
    feature_nearest_neighbours,
    leave_one_out_nn_distances,
    max_ncc_blockwise,
    memorisation_audit,
)


def _smooth(rng, n, shape=(16, 16, 16)):
    return np.stack([ndimage.gaussian_filter(rng.random(shape), 1.5) for _ in range(n)]).astype(np.float32)


def test_feature_nn_and_loo():
    train = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    syn = np.array([[0.1, 0.0], [3.0, 3.9]])
    d, idx = feature_nearest_neighbours(syn, train)
    np.testing.assert_allclose(d, [0.1, np.hypot(3.0, 0.1)])
    np.testing.assert_array_equal(idx, [0, 2])
    np.testing.assert_allclose(leave_one_out_nn_distances(train), [3.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="at least two"):
        leave_one_out_nn_distances(train[:1])


def test_max_ncc_blockwise_matches_pearson_loops(rng):
    q, r = _smooth(rng, 5), _smooth(rng, 7)
    best, idx, flip = max_ncc_blockwise(lambda i: q[i], 5, lambda i: r[i], 7, chunk_size=3, flip_axes=(0, 2))
    for a in range(5):
        cands = [
            (np.corrcoef(v.ravel(), r[b].ravel())[0, 1], b, ax)
            for ax, v in ((-1, q[a]), (0, q[a][::-1]), (2, q[a][:, :, ::-1]))
            for b in range(7)
        ]
        c, b, ax = max(cands)
        assert best[a] == pytest.approx(c, abs=1e-5) and idx[a] == b and flip[a] == ax


def test_audit_flags_copies_not_fresh_samples(rng):
    train = _smooth(rng, 10)
    copies = np.stack([train[2] + rng.normal(0, 0.002, train[2].shape), train[7][::-1].copy()])  # noisy, mirrored
    fresh = _smooth(rng, 4)
    syn = np.concatenate([copies, fresh]).astype(np.float32)

    # feature space: a simple stand-in embedding (block means) keeps the test independent of any network
    def feats(v):
        return v.reshape(len(v), 4, 4, 4, 4, 4, 4).mean(axis=(2, 4, 6)).reshape(len(v), -1)

    out = memorisation_audit(
        feats(syn), feats(train), lambda i: syn[i], len(syn), lambda i: train[i], len(train), chunk_size=4
    )
    assert out["likely_copies"] == [0, 1]
    ps = out["per_sample"]
    assert ps["voxel_nn_index"][0] == 2 and ps["voxel_nn_index"][1] == 7 and ps["voxel_nn_flip_axis"][1] == 0
    assert ps["voxel_ncc"][0] > 0.99 and np.all(ps["voxel_ncc"][2:] < 0.9)
    assert ps["feature_distance_ratio"][0] < 0.1 and np.all(ps["feature_distance_ratio"][2:] > 0.5)
    assert out["summary"]["n_likely_copies"] == 2
    assert out["summary"]["training_loo_max_ncc_max"] < 0.9


def test_audit_needs_inputs():
    with pytest.raises(ValueError, match="needs features"):
        memorisation_audit(None, None)


@pytest.mark.filterwarnings("ignore:the prediction of class")
def test_label_volumes_and_paired_scores():
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    mask[2:6, 2:6, 2:6] = 1  # 64 voxels
    mask[7:9, 7:9, 7:9] = 2  # 8 voxels
    vols = label_volumes_ml(mask, (2.0, 1.0, 0.5), labels=[1, 2, 3])
    assert vols == pytest.approx({1: 0.064, 2: 0.008, 3: 0.0})
    shifted = np.zeros_like(mask)
    shifted[3:7, 2:6, 2:6] = 1  # overlap 48 of 64
    scores = paired_mask_scores(shifted, mask, labels=[1, 2], spacing=(2.0, 1.0, 1.0))
    assert scores[1]["dice"] == pytest.approx(2 * 48 / 128)
    assert scores[1]["hd95"] == pytest.approx(2.0)  # one voxel along x at 2 mm
    assert scores[2]["dice"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        paired_mask_scores(mask[:5], mask, labels=[1])


def test_compare_label_volumes_matches_scipy():
    real = [{1: v} for v in (10.0, 12.0, 0.0, 15.0)]
    syn = [{1: v} for v in (11.0, 0.0, 0.0)]
    out = compare_label_volumes(real, syn, labels=[1])[1]
    r, s = [10.0, 12.0, 0.0, 15.0], [11.0, 0.0, 0.0]
    assert out["ks"] == pytest.approx(stats.ks_2samp(r, s).statistic)
    assert out["wasserstein_ml"] == pytest.approx(stats.wasserstein_distance(r, s))
    assert out["real_empty_fraction"] == 0.25 and out["synthetic_empty_fraction"] == pytest.approx(2 / 3)


def _shifted_copy(rng, shift=(3, 2, 0), size=32):
    """A training crop and a synthetic crop repeating it 3 and 2 voxels off (overlap 85 %), fresh texture elsewhere."""
    train = np.stack([ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 1.5) for _ in range(3)])
    syn = np.stack([ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 1.5) for _ in range(3)])
    sx, sy, sz = shift
    syn[0, sx:, sy:, sz:] = train[1, : size - sx, : size - sy, : size - sz]
    return train.astype(np.float32), syn.astype(np.float32)


def test_memorisation_finds_a_shifted_copy():
    train, syn = _shifted_copy(np.random.default_rng(5))
    assert (32 - 3) * (32 - 2) * 32 / 32**3 >= 0.8

    def audit(max_shift):
        return memorisation_audit(None, None, lambda i: syn[i], 3, lambda i: train[i], 3, max_shift=max_shift)

    aligned = audit(0)
    assert aligned["likely_copies"] == []  # the aligned NCC (the audit before shifts were searched) misses it
    found = audit(4)
    assert found["likely_copies"] == [0] and found["per_sample"]["voxel_nn_index"][0] == 1
    assert found["per_sample"]["voxel_ncc"][0] == pytest.approx(1.0, abs=1e-6)
    assert [found["per_sample"][f"voxel_nn_shift_{a}"][0] for a in "xyz"] == [3, 2, 0]
    assert found["per_sample"]["voxel_ncc"][1:].max() < 0.5 and found["protocol"]["max_shift"] == 4


def test_shifted_ncc_equals_brute_force_over_the_overlap():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(2, 10, 9, 8)), rng.normal(size=(3, 10, 9, 8))
    ncc, idx, _, shift = max_ncc_blockwise(
        lambda i: q[i], 2, lambda i: r[i], 3, flip_axes=(), max_shift=2, return_shifts=True
    )

    def overlap(t, n):
        return slice(max(0, t), n + min(0, t)), slice(max(0, -t), n - max(0, t))

    for i in range(2):
        best = (-2.0, None, None)
        for j in range(3):
            for t in np.ndindex(5, 5, 5):
                t = tuple(int(v) - 2 for v in t)
                (qa, ra), (qb, rb), (qc, rc) = (overlap(t[k], q.shape[1 + k]) for k in range(3))
                c = np.corrcoef(q[i][qa, qb, qc].ravel(), r[j][ra, rb, rc].ravel())[0, 1]
                if c > best[0]:
                    best = (c, j, t)
        assert ncc[i] == pytest.approx(best[0], abs=1e-6) and idx[i] == best[1] and tuple(shift[i]) == best[2]
