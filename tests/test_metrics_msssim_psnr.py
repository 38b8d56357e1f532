"""Pairwise MS-SSIM diversity (vs MONAI called directly) and slice-wise PSNR (vs scikit-image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric
from skimage.metrics import peak_signal_noise_ratio

from ctsynth.metrics.msssim import pairwise_msssim, sample_pairs, select_msssim_config
from ctsynth.metrics.psnr import centre_slices, slicewise_psnr


@pytest.mark.parametrize(
    "shape, kernel, n_scales", [((64, 64, 64), 5, 4), ((32, 32, 32), 5, 3), ((176,) * 3, 11, 5), ((16, 16, 16), 3, 3)]
)
def test_select_msssim_config(shape, kernel, n_scales):
    cfg = select_msssim_config(shape)
    assert (cfg.kernel_size, len(cfg.weights)) == (kernel, n_scales)
    assert sum(cfg.weights) == pytest.approx(1.0)
    # MONAI accepts the choice (it raises when the volume is too small for the window and scales)
    if np.prod(shape) > 300_000:
        return  # a 176^3 call takes seconds; the smaller shapes exercise MONAI's size check
    x = torch.rand(1, 1, *shape)
    MultiScaleSSIMMetric(spatial_dims=3, kernel_size=cfg.kernel_size, weights=cfg.weights)(x, x)


def test_select_msssim_config_too_small():
    with pytest.raises(ValueError, match="too small for MS-SSIM"):
        select_msssim_config((2, 8, 8))


def test_sample_pairs():
    assert len(sample_pairs(5)) == 10
    sub = sample_pairs(20, max_pairs=15, seed=3)
    assert len(sub) == 15 and np.all(sub[:, 0] < sub[:, 1])
    np.testing.assert_array_equal(sub, sample_pairs(20, max_pairs=15, seed=3))


def _smooth_volumes(rng, n, shape=(32, 32, 32)):
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(rng.random(shape), 2.0) for _ in range(n)])[:, None].astype(np.float32)


def test_pairwise_msssim_identical_and_noise(rng):
    base = _smooth_volumes(rng, 1)
    same = np.repeat(base, 4, axis=0)
    assert pairwise_msssim(same)["mean"] == pytest.approx(1.0, abs=1e-5)
    noise = rng.random((4, 1, 32, 32, 32)).astype(np.float32)
    assert pairwise_msssim(noise)["mean"] < 0.2


def test_pairwise_msssim_matches_monai(rng):
    vols = _smooth_volumes(rng, 5)
    vols = (vols - vols.min()) / (vols.max() - vols.min())
    out = pairwise_msssim(vols, max_pairs=6, seed=1, batch_size=4)
    cfg = out["config"]
    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=1.0, kernel_size=cfg["kernel_size"], weights=cfg["weights"]
    )
    t = torch.as_tensor(vols)
    ref = [metric(t[i : i + 1], t[j : j + 1]).item() for i, j in out["pairs"]]
    # float32 cancellation in E[x^2] - mu^2 differs with the summation order: absolute tolerance for values near 0
    np.testing.assert_allclose(out["values"], ref, rtol=1e-5, atol=1e-5)
    assert out["n_pairs"] == 6 and out["mean"] == pytest.approx(np.mean(ref), rel=1e-5)
    via_monai = pairwise_msssim(vols, max_pairs=6, seed=1, batch_size=4, implementation="monai")
    np.testing.assert_allclose(via_monai["values"], ref, rtol=1e-6)
    with pytest.raises(ValueError, match="implementation must be"):
        pairwise_msssim(vols, implementation="fast")


def test_pairwise_msssim_separable_matches_monai_64(rng):
    # the 64^3 configuration (kernel 5, 4 scales) on structured, correlated pairs
    base = _smooth_volumes(rng, 1, shape=(64, 64, 64))[0, 0]
    base = (base - base.min()) / (base.max() - base.min())
    vols = np.stack([np.clip(base + 0.05 * i * rng.standard_normal(base.shape), 0, 1) for i in range(3)])[:, None]
    out = pairwise_msssim(vols.astype(np.float32))
    cfg = out["config"]
    assert (cfg["kernel_size"], cfg["n_scales"]) == (5, 4)
    metric = MultiScaleSSIMMetric(spatial_dims=3, kernel_size=5, weights=cfg["weights"])
    t = torch.as_tensor(vols.astype(np.float32))
    ref = [metric(t[i : i + 1], t[j : j + 1]).item() for i, j in out["pairs"]]
    np.testing.assert_allclose(out["values"], ref, rtol=1e-5)


def test_pairwise_msssim_loader_and_errors(rng):
    vols = _smooth_volumes(rng, 3)
    direct = pairwise_msssim(vols)
    via_loader = pairwise_msssim(lambda idx: torch.as_tensor(vols[idx]), n=3, spatial_shape=(32, 32, 32))
    np.testing.assert_allclose(direct["values"], via_loader["values"])
    no_cache = pairwise_msssim(vols, max_moment_bytes=0, batch_size=2)  # moments recomputed per batch of pairs
    np.testing.assert_allclose(direct["values"], no_cache["values"], rtol=1e-6)
    with pytest.raises(ValueError, match="at least two samples"):
        pairwise_msssim(vols[:1])
    with pytest.raises(ValueError, match="n and spatial_shape"):
        pairwise_msssim(lambda idx: vols[idx])


def test_centre_slices():
    v = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    s = centre_slices(v)
    np.testing.assert_array_equal(s["sagittal"], v[2])
    np.testing.assert_array_equal(s["coronal"], v[:, 2])
    np.testing.assert_array_equal(s["axial"], v[:, :, 3])
    with pytest.raises(ValueError, match="3D"):
        centre_slices(v[0])


@pytest.mark.parametrize("pairing", ["all", "random"])
def test_slicewise_psnr_matches_skimage(rng, pairing):
    real = {"axial": rng.random((4, 16, 16)).astype(np.float32)}
    syn = {"axial": np.clip(real["axial"][[1, 0, 3]] + rng.normal(0, 0.1, (3, 16, 16)), 0, 1).astype(np.float32)}
    out = slicewise_psnr(real, syn, data_range=1.0, pairing=pairing, seed=2)["axial"]
    ref = [
        peak_signal_noise_ratio(real["axial"][r].astype(np.float64), syn["axial"][s].astype(np.float64), data_range=1.0)
        for r, s in out["pairs"]
    ]
    np.testing.assert_allclose(out["values"], ref, rtol=1e-4)
    assert out["n_pairs"] == (12 if pairing == "all" else 3)
    if pairing == "random":
        assert len(set(out["pairs"][:, 0].tolist())) == 3  # without replacement while real slices last


def test_slicewise_psnr_monotone_in_noise(rng):
    real = {"axial": rng.random((3, 16, 16)).astype(np.float32)}
    means = []
    for sd in (0.01, 0.05, 0.2):
        syn = {"axial": (real["axial"] + rng.normal(0, sd, real["axial"].shape)).astype(np.float32)}
        means.append(slicewise_psnr(real, syn, pairing="random")["axial"]["values"])
    # same seeded pairing for every noise level, so PSNR must fall as the noise grows
    assert np.mean(means[0]) > np.mean(means[1]) > np.mean(means[2])
    with pytest.raises(ValueError, match="pairing must be"):
        slicewise_psnr(real, real, pairing="nearest")
    with pytest.raises(ValueError, match="missing"):
        slicewise_psnr(real, {"sagittal": real["axial"]})
