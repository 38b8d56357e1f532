"""Tests of ctsynth.transforms.intensity: HU windowing and its exact inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, ScaleIntensityRanged

from ctsynth.transforms import HUToWindow, HUWindowd, unwindow_hu, window_hu


@pytest.fixture
def hu_volume(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1500, 2000, size=(1, 12, 10, 8)).astype(np.float32)


@pytest.mark.parametrize(("window", "out"), [((-100, 170), (0.0, 1.0)), ((-1024, 600), (-1.0, 1.0))])
def test_window_hu_matches_analytic_map_and_monai(hu_volume, window, out):
    got = window_hu(hu_volume, *window, *out)
    expected = np.clip((hu_volume.astype(np.float64) - window[0]) / (window[1] - window[0]), 0, 1)
    expected = expected * (out[1] - out[0]) + out[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32 and got.min() >= out[0] and got.max() <= out[1]
    ref = ScaleIntensityRanged("x", *window, *out, clip=True)({"x": hu_volume})["x"]
    np.testing.assert_allclose(got, np.asarray(ref), atol=1e-5)


def test_window_hu_torch_and_integer_input():
    x = torch.tensor([-1024, -212, 600, 700], dtype=torch.int16)
    got = window_hu(x, -1024, 600, -1, 1)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), [-1.0, 0.0, 1.0, 1.0], atol=1e-6)


def test_unwindow_inverts_inside_window_and_clamps_outside(hu_volume):
    w = window_hu(hu_volume, -1024, 600, -1, 1)
    back = unwindow_hu(w, -1024, 600, -1, 1)
    inside = (hu_volume >= -1024) & (hu_volume <= 600)
    assert np.abs(back[inside] - hu_volume[inside]).max() < 1e-4
    np.testing.assert_array_equal(back[hu_volume > 600], 600.0)
    np.testing.assert_array_equal(back[hu_volume < -1024], -1024.0)


def test_window_without_clip_is_linear_everywhere():
    assert float(window_hu(np.array([270.0]), -100, 170, clip=False)[0]) == pytest.approx(370 / 270)


def test_bad_window_raises():
    with pytest.raises(ValueError, match="hu_max > hu_min"):
        window_hu(np.zeros(3), 100, 100)
    with pytest.raises(ValueError, match="output range must not be empty"):
        HUToWindow(-100, 170, 1.0, 1.0)


def test_huwindowd_compose_inverse_and_invertd(hu_volume):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    t = Compose([HUWindowd("image", -100, 170)])
    d = t({"image": MetaTensor(hu_volume, affine=affine)})
    img = d["image"]
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    np.testing.assert_array_equal(img.affine.numpy(), affine)

    # Invertd maps a prediction-like copy back to HU through the image's traced window
    d["pred"] = img.clone()
    inv = Invertd("pred", transform=t, orig_keys="image")(d)
    expected = np.clip(hu_volume, -100, 170)
    assert np.abs(np.asarray(inv["pred"]) - expected).max() < 1e-4

    back = t.inverse(d)["image"]
    assert np.abs(np.asarray(back) - expected).max() < 1e-4
    assert back.applied_operations == []


def test_huwindowd_numpy_input_becomes_metatensor(hu_volume):
    out = HUWindowd("image", -1024, 600, -1, 1)({"image": hu_volume})["image"]
    assert isinstance(out, MetaTensor) and tuple(out.shape) == hu_volume.shape
    assert out.applied_operations[-1]["class"] == "HUToWindow"
