"""Tests of ctsynth.blending: placement, tumour masks, Blend I (copy-paste), II (3D Poisson), III (texture)."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from ctsynth.blending import (
    BlendResult,
    RandomFeatureNet3D,
    blend_copy_paste,
    blend_folders,
    blend_poisson,
    blend_style_refined,
    blend_tumor,
    dilate_mask,
    highpass_sd,
    list_nifti,
    match_texture_statistics,
    paste_into,
    refine_texture,
    solve_poisson_region,
    to_label_map,
    tumor_fringe,
    tumor_mask,
    tumor_offset,
    weighted_gram,
)
from ctsynth.blending.poisson import tumour_contrast
from ctsynth.data.io import load_volume, save_volume

# ----------------------------------------------------------------------------------------------- synthetic inputs


def noisy_tissue(rng: np.random.Generator, size: int = 64, level: float = 0.7, sd: float = 0.05) -> np.ndarray:
    """Tissue cube: a constant level plus spatially correlated noise of SD ``sd`` (stays inside [0, 1])."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size,) * 3), 0.8)
    return np.clip(level + sd * noise / noise.std(), 0.0, 1.0)


def ball(size: int = 32, radius: float = 10.0, value: float = 0.3, edge: float = 0.0) -> np.ndarray:
    """Tumour cube: a ball of ``value`` on a 0 background; ``edge`` > 0 gives a soft (sigmoid) border of that width."""
    r = np.sqrt(((np.mgrid[:size, :size, :size] - (size - 1) / 2) ** 2).sum(0))
    if edge > 0:
        return value / (1.0 + np.exp((r - radius) / edge))
    return np.where(r <= radius, value, 0.0)


def boundary_jump(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute intensity step across the mask's faces (edges with one end inside, one outside)."""
    steps = []
    for axis in range(3):
        a, b = np.moveaxis(image, axis, 0), np.moveaxis(mask.astype(bool), axis, 0)
        crossing = b[1:] != b[:-1]
        steps.append(np.abs(a[1:] - a[:-1])[crossing])
    return float(np.concatenate(steps).mean())


@pytest.fixture
def tissue(rng) -> np.ndarray:
    return noisy_tissue(rng)


# ----------------------------------------------------------------------------------------------- labels, layout


def test_to_label_map_msd_convention():
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    labels = to_label_map(mask)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == {1, 2}
    assert (labels == 2).sum() == 8
    pancreas = np.zeros_like(mask)
    pancreas[:2] = 1
    labels = to_label_map(mask, pancreas_value=1, tumor_value=2, pancreas_mask=pancreas)
    assert labels[3, 0, 0] == 0 and labels[0, 0, 0] == 1 and labels[2, 2, 2] == 2
    as_torch = to_label_map(torch.as_tensor(mask), pancreas_value=0, tumor_value=1)
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.uint8
    assert torch.equal(as_torch, torch.as_tensor(mask))
    with pytest.raises(ValueError, match="tumor_value must be in"):
        to_label_map(mask, tumor_value=300)
    with pytest.raises(ValueError, match="pancreas_mask shape"):
        to_label_map(mask, pancreas_mask=np.ones((2, 2, 2)))


def test_result_label_map_method():
    result = BlendResult(
        image=np.zeros((2, 2, 2)), mask=np.eye(2, dtype=np.uint8)[None].repeat(2, 0), offset=(0, 0, 0), method="x"
    )
    assert set(np.unique(result.label_map())) == {1, 2}


def test_torch_input_with_channel_gives_torch_output_with_channel(tissue):
    result = blend_copy_paste(torch.as_tensor(ball())[None].float(), torch.as_tensor(tissue)[None].float())
    assert isinstance(result.image, torch.Tensor) and result.image.shape == (1, 64, 64, 64)
    assert result.image.dtype == torch.float32 and result.mask.dtype == torch.uint8
    assert result.mask.shape == (1, 64, 64, 64)
    numpy_result = blend_copy_paste(ball(), tissue)
    assert isinstance(numpy_result.image, np.ndarray) and numpy_result.image.shape == (64, 64, 64)
    np.testing.assert_allclose(result.image[0].numpy(), numpy_result.image, atol=1e-6)


@pytest.mark.parametrize(
    "tumor_shape, tissue_shape, message",
    [
        ((32, 32), (64, 64, 64), "tumor must be a 3D volume"),
        ((2, 32, 32, 32), (64, 64, 64), "tumor must be a 3D volume"),
        ((32, 32, 32), (1, 2, 64, 64, 64), "tissue must be a 3D volume"),
        ((40, 40, 40), (32, 32, 32), r"tumor cube \(40, 40, 40\) is larger than the tissue cube \(32, 32, 32\)"),
    ],
)
def test_bad_shapes(tumor_shape, tissue_shape, message):
    with pytest.raises(ValueError, match=message):
        blend_copy_paste(np.ones(tumor_shape), np.ones(tissue_shape))


def test_bad_values_and_types():
    tumour = ball()
    with pytest.raises(ValueError, match="tissue contains NaN"):
        blend_poisson(tumour, np.full((64, 64, 64), np.nan))
    with pytest.raises(TypeError, match="tumor must be a numpy array or torch tensor"):
        blend_copy_paste([[1.0]], np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match=r"mask shape \(8, 8, 8\) does not match tumor shape \(32, 32, 32\)"):
        blend_copy_paste(tumour, np.ones((64, 64, 64)), mask=np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match="the given tumor mask is empty"):
        blend_copy_paste(tumour, np.ones((64, 64, 64)), mask=np.zeros((32, 32, 32)))


# ----------------------------------------------------------------------------------------------- placement, masks


def test_tumor_offset_center_random_explicit():
    assert tumor_offset((32, 32, 32), (64, 64, 64)) == (16, 16, 16)
    assert tumor_offset((32, 32, 32), (64, 64, 64), "center") == (16, 16, 16)
    assert tumor_offset((31, 32, 20), (64, 64, 64)) == (16, 16, 22)
    first = tumor_offset((32, 32, 32), (64, 64, 64), "random", seed=3)
    assert first == tumor_offset((32, 32, 32), (64, 64, 64), "random", seed=3)
    draws = {tumor_offset((32, 32, 32), (64, 64, 64), "random", seed=s) for s in range(20)}
    assert len(draws) > 10
    assert all(0 <= o <= 32 for d in draws for o in d)
    assert tumor_offset((32, 32, 32), (64, 64, 64), (0, 32, 5)) == (0, 32, 5)
    with pytest.raises(ValueError, match=r"at offset \(0, 33, 5\) does not fit"):
        tumor_offset((32, 32, 32), (64, 64, 64), (0, 33, 5))
    with pytest.raises(ValueError, match="is larger than the tissue cube"):
        tumor_offset((65, 32, 32), (64, 64, 64))
    with pytest.raises(ValueError, match="unknown offset 'corner'"):
        tumor_offset((32, 32, 32), (64, 64, 64), "corner")
    with pytest.raises(ValueError, match="offset must have 3 entries"):
        tumor_offset((32, 32, 32), (64, 64, 64), (1, 2))


def test_paste_into_and_dilate():
    canvas = paste_into((6, 6, 6), np.ones((2, 2, 2)), (1, 2, 3))
    assert canvas.sum() == 8 and canvas[1:3, 2:4, 3:5].all()
    point = np.zeros((7, 7, 7), bool)
    point[3, 3, 3] = True
    assert dilate_mask(point, 0).sum() == 1
    assert dilate_mask(point, 1).sum() == 7  # 6-neighbour structuring element
    assert dilate_mask(point, 2).sum() == 25  # city-block ball of radius 2


def test_tumor_mask_threshold_largest_component_and_holes():
    tumour = ball(value=0.4)
    tumour[2, 2, 2] = 0.5  # stray bright voxel away from the tumour
    tumour[15:17, 15:17, 15:17] = 0.01  # dark enclosed core
    mask = tumor_mask(tumour, threshold=0.05)
    assert mask.dtype == np.uint8
    expected = ball(value=1.0) > 0
    np.testing.assert_array_equal(mask.astype(bool), expected)
    raw = tumor_mask(tumour, threshold=0.05, keep_largest=False, fill_holes=False)
    assert raw[2, 2, 2] == 1 and raw[15, 15, 15] == 0
    assert tumor_mask(tumour, threshold=0.45, keep_largest=False).sum() == 1
    with pytest.raises(ValueError, match=r"tumor mask is empty after thresholding at 0.6 \(tumor max 0.5\)"):
        tumor_mask(tumour, threshold=0.6)


def test_tumor_fringe_is_dark_border_not_dark_core():
    tumour = ball(value=0.6, radius=9, edge=1.0)
    tumour[14:18, 14:18, 14:18] = 0.1  # dark (necrotic) core enclosed by bright tumour
    mask = tumour > 0.05
    fringe = tumor_fringe(tumour, mask, fraction=0.5)
    dark = 0.5 * np.median(tumour[mask])
    assert fringe.any() and not (fringe & ~mask).any()
    assert (tumour[fringe] < dark).all()
    assert not fringe[14:18, 14:18, 14:18].any()
    dark_border = mask & (tumour < dark)
    dark_border[14:18, 14:18, 14:18] = False
    np.testing.assert_array_equal(fringe, dark_border)
    assert not tumor_fringe(tumour, mask, fraction=0).any()


# ----------------------------------------------------------------------------------------------- Blend I


def test_copy_paste_replaces_tissue_voxels_under_the_mask(tissue):
    tumour = ball(value=0.3)
    result = blend_copy_paste(tumour, tissue)
    inside = tumour > 0.05
    expected = tissue.copy()
    expected[16:48, 16:48, 16:48][inside] = tumour[inside]
    np.testing.assert_allclose(result.image, expected, atol=1e-6)
    np.testing.assert_array_equal(result.mask[16:48, 16:48, 16:48], inside)
    assert result.mask.sum() == inside.sum() and result.offset == (16, 16, 16) and result.method == "copy_paste"
    moved = blend_copy_paste(tumour, tissue, offset=(0, 0, 32))
    np.testing.assert_array_equal(moved.mask[0:32, 0:32, 32:64], inside)


# ----------------------------------------------------------------------------------------------- Blend II


def test_poisson_solution_satisfies_the_discrete_poisson_equation(tissue, rng):
    source = paste_into(tissue.shape, ndimage.gaussian_filter(rng.random((32, 32, 32)), 2.0), (16, 16, 16))
    source_mask = paste_into(tissue.shape, ball(value=1.0) > 0, (16, 16, 16), fill=False)
    region = dilate_mask(source_mask, 2)
    f = solve_poisson_region(source, tissue, region, source_mask, intensity_weight=0.0)
    lap_f, lap_g, lap_t = ndimage.laplace(f), ndimage.laplace(source), ndimage.laplace(tissue)
    # voxels whose whole 6-neighbourhood is tumour follow the tumour's Laplacian ...
    tumour_interior = ndimage.binary_erosion(source_mask, ndimage.generate_binary_structure(3, 1))
    np.testing.assert_allclose(lap_f[tumour_interior], lap_g[tumour_interior], atol=1e-8)
    # ... the dilation ring, away from the tumour, the tissue's; outside the region nothing changes
    ring = region & ~dilate_mask(source_mask, 1)
    np.testing.assert_allclose(lap_f[ring], lap_t[ring], atol=1e-8)
    np.testing.assert_array_equal(f[~region], tissue[~region])


def test_screened_poisson_residual(tissue, rng):
    source = paste_into(tissue.shape, 0.3 + 0.02 * rng.standard_normal((32, 32, 32)), (16, 16, 16))
    source_mask = paste_into(tissue.shape, ball(value=1.0) > 0, (16, 16, 16), fill=False)
    region = dilate_mask(source_mask, 2)
    lam = 0.5
    f = solve_poisson_region(source, tissue, region, source_mask, intensity_weight=lam, solver="direct")
    interior = ndimage.binary_erosion(source_mask, ndimage.generate_binary_structure(3, 1))
    residual = -ndimage.laplace(f) + lam * (f - source) + ndimage.laplace(source)
    np.testing.assert_allclose(residual[interior], 0.0, atol=1e-8)
    cg = solve_poisson_region(source, tissue, region, source_mask, intensity_weight=lam, solver="cg")
    np.testing.assert_allclose(cg, f, atol=1e-6)


def test_poisson_identity_when_tumor_equals_tissue(tissue):
    crop = tissue[16:48, 16:48, 16:48]
    for weight in (0.0, 0.25):
        result = blend_poisson(crop, tissue, intensity_weight=weight, threshold=0.0, fringe_fraction=0.0)
        assert result.mask.sum() == 32**3
        np.testing.assert_allclose(result.image, tissue, atol=1e-5)


def test_poisson_gradient_domain_offset_invariance(tissue, rng):
    tumour = ball(value=0.3) + 0.02 * ndimage.gaussian_filter(rng.standard_normal((32, 32, 32)), 1.0)
    mask = ball(value=1.0) > 0
    a = blend_poisson(tumour, tissue, mask=mask, intensity_weight=0.0)
    b = blend_poisson(tumour + 0.2, tissue, mask=mask, intensity_weight=0.0)
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
    # with the intensity term (the default) the tumour keeps its own level, so the offset shows
    c = blend_poisson(tumour, tissue, mask=mask)
    d = blend_poisson(tumour + 0.2, tissue, mask=mask)
    core = ndimage.binary_erosion(c.mask.astype(bool), iterations=3)
    assert 0.15 < d.image[core].mean() - c.image[core].mean() < 0.21


def test_poisson_changes_only_the_dilated_region_and_smooths_the_seam(tissue):
    tumour = ball(value=0.3)
    paste = blend_copy_paste(tumour, tissue)
    result = blend_poisson(tumour, tissue, dilation=2)
    region = dilate_mask(result.mask.astype(bool), 2)
    np.testing.assert_array_equal(result.image[~region], tissue[~region].astype(np.float32))
    assert boundary_jump(result.image, result.mask) < 0.5 * boundary_jump(paste.image, paste.mask)
    # the hypo-dense tumour stays hypo-dense: its core keeps about its own value
    core = ndimage.binary_erosion(result.mask.astype(bool), iterations=4)
    assert abs(result.image[core].mean() - 0.3) < 0.05
    # pure gradient-domain blending (no intensity term) takes the level of the surrounding tissue instead
    pure = blend_poisson(tumour, tissue, intensity_weight=0.0)
    assert abs(pure.image[core].mean() - tissue.mean()) < 0.05


@pytest.mark.parametrize("value,edge", [(0.35, 0.0), (0.45, 1.0), (0.3, 0.5)])
def test_poisson_keeps_the_tumour_to_tissue_contrast_within_5_percent(rng, value, edge):
    """Blend II (default) keeps the source tumour's mean contrast to the surrounding tissue within 5 %; the plain
    screened solution (keep_contrast=False) loses about a fifth of it (the issue this guards against)."""
    tissue = noisy_tissue(rng, level=0.7)
    tumour = ball(value=value, radius=8, edge=edge)
    result = blend_poisson(tumour, tissue)
    m = result.mask.astype(bool)
    # tissue reference: a shell 6-8 voxels outside the tumour, beyond the blended region (mask + fringe, dilated by 2)
    region = dilate_mask(m, 4)
    shell = dilate_mask(m, 8) & ~dilate_mask(m, 5)
    assert not (shell & region).any()
    source = paste_into(tissue.shape, tumour, result.offset)
    source_contrast = tumour_contrast(np.where(m, source, tissue), m, shell)
    assert source_contrast < -0.2  # hypo-attenuating
    assert tumour_contrast(result.image, m, shell) == pytest.approx(source_contrast, rel=0.05)
    core = ndimage.binary_erosion(m, iterations=3)
    assert abs(result.image[core].mean() - source[core].mean()) < 0.03  # the core keeps its own level
    plain = blend_poisson(tumour, tissue, keep_contrast=False)
    assert abs(tumour_contrast(plain.image, m, shell) / source_contrast - 1) > 0.1
    np.testing.assert_array_equal(result.image[~region], plain.image[~region])  # the correction stays in the region
    styled = blend_style_refined(tumour, tissue, mode="statistics")
    assert tumour_contrast(styled.image, m, shell) == pytest.approx(source_contrast, rel=0.05)


def test_poisson_removes_the_dark_fringe_of_a_soft_tumour(tissue):
    tumour = ball(value=0.4, radius=10, edge=1.0)
    paste = blend_copy_paste(tumour, tissue)
    result = blend_poisson(tumour, tissue, keep_contrast=False)
    assert paste.image[paste.mask.astype(bool)].min() < 0.1  # the "black pixels around the boundary"
    # no voxel darker than the tumour's own half-intensity border remains (copy-paste leaves them near 0)
    assert result.image[dilate_mask(paste.mask.astype(bool), 2)].min() > 0.45 * 0.4
    # the contrast-keeping default darkens the border band a little to offset the tissue's pull, no black rim
    assert blend_poisson(tumour, tissue).image[dilate_mask(paste.mask.astype(bool), 2)].min() > 0.35 * 0.4
    assert result.mask.sum() < paste.mask.sum()  # the fringe is transition, not tumour
    no_fringe = blend_poisson(tumour, tissue, fringe_fraction=0.0)
    assert no_fringe.mask.sum() == paste.mask.sum()


def test_poisson_mixed_mode_keeps_tissue_texture_in_a_smooth_tumour(tissue):
    tumour = ball(value=0.3)
    seamless = blend_poisson(tumour, tissue, mode="seamless")
    mixed = blend_poisson(tumour, tissue, mode="mixed")
    core = ndimage.binary_erosion(seamless.mask.astype(bool), iterations=2)
    assert highpass_sd(seamless.image, core) < 0.3 * highpass_sd(tissue)
    assert highpass_sd(mixed.image, core) > 0.6 * highpass_sd(tissue)
    assert mixed.method == "poisson_mixed"


def test_poisson_solve_is_fast(tissue):
    tumour = ball(value=0.3, radius=14)
    start = time.perf_counter()
    blend_poisson(tumour, tissue, dilation=2)
    # ~25k unknowns; well under 0.1 s on an idle core, the bound leaves room for a loaded CI machine
    assert time.perf_counter() - start < 3.0


def test_poisson_bad_arguments(tissue):
    tumour = ball()
    with pytest.raises(ValueError, match="unknown Poisson mode 'blend'; choose one of seamless, mixed"):
        blend_poisson(tumour, tissue, mode="blend")
    with pytest.raises(ValueError, match="dilation must be >= 0"):
        blend_poisson(tumour, tissue, dilation=-1)
    with pytest.raises(ValueError, match="intensity_weight must be >= 0"):
        blend_poisson(tumour, tissue, intensity_weight=-1.0)
    with pytest.raises(ValueError, match="unknown solver 'lu'"):
        blend_poisson(tumour, tissue, solver="lu")
    with pytest.raises(ValueError, match="Poisson system is singular"):
        blend_poisson(np.full((16, 16, 16), 0.5), np.full((16, 16, 16), 0.5), intensity_weight=0.0)
    with pytest.raises(ValueError, match="must have the same shape"):
        solve_poisson_region(np.ones((4, 4, 4)), np.ones((4, 4, 4)), np.ones((4, 4, 5), bool), np.ones((4, 4, 4)))


# ----------------------------------------------------------------------------------------------- Blend III


def test_random_feature_net_is_seeded_and_blind_to_offsets():
    net_a, net_b, net_c = RandomFeatureNet3D(seed=0), RandomFeatureNet3D(seed=0), RandomFeatureNet3D(seed=1)
    for a, b in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(net_a.parameters()), next(net_c.parameters()))
    x = torch.rand(1, 1, 16, 16, 16)
    features = net_a(x)
    assert [f.shape[1:] for f in features] == [(8, 16, 16, 16), (16, 8, 8, 8), (32, 4, 4, 4)]
    assert net_a.receptive_radii == (1, 3, 6)
    for f, g in zip(features, net_a(x + 0.37), strict=True):
        torch.testing.assert_close(f, g, atol=1e-5, rtol=1e-5)


def test_weighted_gram_matches_einsum():
    f = torch.rand(1, 4, 6, 6, 6)
    reference = torch.einsum("cxyz,dxyz->cd", f[0], f[0]) / (216 * 4)
    torch.testing.assert_close(weighted_gram(f), reference)
    torch.testing.assert_close(weighted_gram(f, torch.ones(1, 1, 6, 6, 6)), reference)
    w = torch.zeros(1, 1, 6, 6, 6)
    w[..., :3] = 1.0
    half = f[0, :, :, :, :3]
    torch.testing.assert_close(weighted_gram(f, w), torch.einsum("cxyz,dxyz->cd", half, half) / (108 * 4))


def test_highpass_sd_reference_values(rng):
    assert highpass_sd(np.full((8, 8, 8), 0.4)) == pytest.approx(0.0, abs=1e-12)
    noise = rng.standard_normal((32, 32, 32))
    assert highpass_sd(3 * noise) == pytest.approx(3 * highpass_sd(noise))
    reference = noise - ndimage.gaussian_filter(noise, 1.0)
    assert highpass_sd(noise) == pytest.approx(reference.std())


def test_statistics_mode_matches_the_tissue_texture(tissue):
    tumour = ball(value=0.3)
    stage1 = blend_poisson(tumour, tissue)
    refined = blend_style_refined(tumour, tissue, mode="statistics")
    core = ndimage.binary_erosion(refined.mask.astype(bool), iterations=2)
    target = highpass_sd(tissue)
    assert highpass_sd(stage1.image, core) < 0.3 * target
    assert highpass_sd(refined.image, core) == pytest.approx(target, rel=0.2)
    assert abs(refined.image[core].mean() - stage1.image[core].mean()) < 0.01
    changed = np.abs(refined.image - stage1.image) > 1e-6
    assert not (changed & ~refined.mask.astype(bool)).any()
    # a tumour rougher than the tissue is smoothed to the tissue's level
    rough = np.random.default_rng(0).standard_normal((64, 64, 64)) * 0.2 * (refined.mask > 0) + stage1.image
    smoothed = match_texture_statistics(rough, tissue, refined.mask.astype(bool))
    assert highpass_sd(smoothed, core) == pytest.approx(target, rel=0.25)


def test_feature_refinement_moves_texture_towards_the_tissue_and_keeps_content(rng):
    tissue = noisy_tissue(rng, size=32, sd=0.05)
    tumour = ball(size=16, radius=6, value=0.35)
    stage1 = blend_poisson(tumour, tissue)
    refined = blend_style_refined(tumour, tissue, n_steps=10, seed=0)
    mask = refined.mask.astype(bool)
    core = ndimage.binary_erosion(mask, iterations=1)
    target, before, after = highpass_sd(tissue), highpass_sd(stage1.image, core), highpass_sd(refined.image, core)
    assert abs(after - target) < 0.6 * abs(before - target)
    assert refined.image[mask].mean() < tissue.mean() - 0.2  # still a hypo-dense tumour
    assert abs(refined.image[mask].mean() - stage1.image[mask].mean()) < 0.03
    np.testing.assert_array_equal(refined.image[~mask], stage1.image[~mask])  # only tumour voxels change
    again = blend_style_refined(tumour, tissue, n_steps=10, seed=0)
    np.testing.assert_array_equal(refined.image, again.image)
    other = blend_style_refined(tumour, tissue, n_steps=10, seed=1)
    assert not np.array_equal(refined.image, other.image)


def test_feature_refinement_options(rng):
    tissue = noisy_tissue(rng, size=24)
    tumour = ball(size=12, radius=4, value=0.35)
    stage1 = blend_poisson(tumour, tissue)
    unchanged = blend_style_refined(tumour, tissue, n_steps=0)
    np.testing.assert_array_equal(unchanged.image, stage1.image)

    class OneConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 4, 3, padding=1)

        def forward(self, x):
            return [torch.relu(self.conv(x))]

    for kwargs in (
        dict(optimizer="adam", content_space="voxels", tv_weight=0.1),
        dict(feature_net=OneConv(), content_space="features", refine_dilation=1),
    ):
        result = blend_style_refined(tumour, tissue, n_steps=3, **kwargs)
        far = ~dilate_mask(result.mask.astype(bool), 3)
        np.testing.assert_array_equal(result.image[far], stage1.image[far])
        assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    region = np.zeros(tissue.shape, bool)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        refine_texture(stage1.image, tissue, region, optimizer="sgd")
    with pytest.raises(ValueError, match="unknown content_space 'gram'"):
        refine_texture(stage1.image, tissue, region, content_space="gram")
    with pytest.raises(ValueError, match="unknown style mode 'vgg'; choose one of features, statistics"):
        blend_style_refined(tumour, tissue, mode="vgg")


def test_feature_refinement_runs_quickly_on_a_64_cube(tissue):
    start = time.perf_counter()
    result = blend_style_refined(ball(value=0.3), tissue, n_steps=3)
    assert result.image.shape == (64, 64, 64)
    assert time.perf_counter() - start < 30.0  # a few seconds on an idle 2-core machine


# ----------------------------------------------------------------------------------------------- entry points


def test_blend_tumor_dispatches(tissue):
    tumour = ball(value=0.3)
    np.testing.assert_array_equal(
        blend_tumor(tumour, tissue, method="copy_paste").image, blend_copy_paste(tumour, tissue).image
    )
    np.testing.assert_array_equal(
        blend_tumor(tumour, tissue, method="poisson", dilation=1).image, blend_poisson(tumour, tissue, dilation=1).image
    )
    assert blend_tumor(tumour, tissue, method="style", mode="statistics").method == "style_statistics"
    with pytest.raises(ValueError, match="unknown blending method 'blend4'; choose one of copy_paste, poisson, style"):
        blend_tumor(tumour, tissue, method="blend4")


def _write_cubes(folder, cubes, spacing=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 30.0)
    for i, cube in enumerate(cubes):
        save_volume(cube.astype(np.float32), affine, folder / f"case_{i}.nii.gz")
    return affine


def test_blend_folders_writes_hu_images_and_msd_labels(tmp_path, rng):
    to_hu = lambda x: -100.0 + 270.0 * x  # noqa: E731
    tissues = [noisy_tissue(rng, size=32) for _ in range(3)]
    tumours = [ball(size=16, radius=5, value=0.3 + 0.05 * i) for i in range(2)]
    tissue_affine = _write_cubes(tmp_path / "tissue", [to_hu(t) for t in tissues])
    _write_cubes(tmp_path / "tumor", [to_hu(t) for t in tumours])
    out = tmp_path / "out"
    paths = blend_folders(tmp_path / "tumor", tmp_path / "tissue", out, method="poisson", seed=5)
    assert [p.name for p in paths] == ["blend_0000.nii.gz", "blend_0001.nii.gz"]  # as many pairs as tumours
    for i, path in enumerate(paths):
        image, affine = load_volume(path)
        labels, label_affine = load_volume(out / "labelsTr" / path.name)
        np.testing.assert_allclose(affine, tissue_affine)
        np.testing.assert_allclose(label_affine, tissue_affine)
        assert image.dtype == np.float32 and labels.dtype == np.uint8
        assert set(np.unique(labels)) == {1, 2}
        expected = blend_poisson(tumours[i], tissues[i])
        np.testing.assert_array_equal(labels == 2, expected.mask.astype(bool))
        np.testing.assert_allclose(image, to_hu(expected.image), atol=0.05)  # HU, through a float32 round trip
    manifest = json.loads((out / "blend_manifest.json").read_text())
    assert manifest["method"] == "poisson" and manifest["hu_window"] == [-100.0, 170.0]
    assert manifest["pairs"][1]["tumor"].endswith("case_1.nii.gz") and manifest["pairs"][1]["seed"] == 6
    assert manifest["pairs"][0]["offset"] == [8, 8, 8]
    # already-windowed inputs, output kept in [0, 1]
    unit = tmp_path / "unit"
    _write_cubes(unit / "tissue", tissues[:1])
    _write_cubes(unit / "tumor", tumours[:1])
    (path,) = blend_folders(
        unit / "tumor", unit / "tissue", unit / "out", method="copy_paste", input_in_hu=False, hu_window=None
    )
    np.testing.assert_allclose(load_volume(path)[0], blend_copy_paste(tumours[0], tissues[0]).image, atol=1e-6)


def test_blend_folders_style_method(tmp_path, rng):
    _write_cubes(tmp_path / "tissue", [-100.0 + 270.0 * noisy_tissue(rng, size=24)])
    _write_cubes(tmp_path / "tumor", [-100.0 + 270.0 * ball(size=12, radius=4, value=0.3)])
    (path,) = blend_folders(tmp_path / "tumor", tmp_path / "tissue", tmp_path / "out", n=1, n_steps=2)
    image = load_volume(path)[0]
    assert image.shape == (24, 24, 24) and -100.0 <= image.min() and image.max() <= 170.0
    assert isinstance(nib.load(str(tmp_path / "out" / "labelsTr" / path.name)), nib.Nifti1Image)


def test_blend_folders_errors_name_the_files_and_write_nothing(tmp_path, rng):
    tumours = [ball(size=16, radius=5, value=0.3), np.zeros((16, 16, 16))]
    _write_cubes(tmp_path / "tissue", [noisy_tissue(rng, size=32) for _ in range(2)])
    _write_cubes(tmp_path / "tumor", tumours)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"case_1.nii.gz \+ .*case_1.nii.gz: tumor mask is empty"):
        blend_folders(tmp_path / "tumor", tmp_path / "tissue", out, method="poisson", input_in_hu=False, hu_window=None)
    assert not out.exists()
    with pytest.raises(ValueError, match="n=3 pairs requested but"):
        blend_folders(tmp_path / "tumor", tmp_path / "tissue", out, n=3)
    with pytest.raises(ValueError, match="input_in_hu=True needs hu_window"):
        blend_folders(tmp_path / "tumor", tmp_path / "tissue", out, hu_window=None)
    with pytest.raises(ValueError, match="unknown blending method 'paste'"):
        blend_folders(tmp_path / "tumor", tmp_path / "tissue", out, method="paste")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        blend_folders(tmp_path / "missing", tmp_path / "tissue", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no NIfTI files"):
        list_nifti(tmp_path / "empty")
    (tmp_path / "empty" / "._case_0.nii.gz").write_bytes(b"\x00macos resource fork")
    with pytest.raises(ValueError, match=r"empty: no NIfTI files"):  # hidden files are not volumes
        list_nifti(tmp_path / "empty")
    _write_cubes(tmp_path / "coarse", [ball(size=16, radius=5, value=0.3)], spacing=2.0)
    with pytest.raises(ValueError, match=r"case_0.nii.gz: voxel spacings differ"):
        blend_folders(tmp_path / "coarse", tmp_path / "tissue", out, input_in_hu=False, hu_window=None)
    assert not out.exists()
