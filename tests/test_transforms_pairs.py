"""Tests of ctsynth.transforms.pairs: HA-GAN image+mask stacking along z and splitting back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from ctsynth.transforms import (
    HUWindowd,
    SplitImageMaskd,
    StackImageMaskd,
    decode_mask,
    encode_mask,
    split_image_mask,
    stack_image_mask,
)


def _pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = rng.uniform(-1, 1, size=(1, 10, 8, 6)).astype(np.float32)
    lbl = np.zeros((1, 10, 8, 6), dtype=np.uint8)
    lbl[0, 2:6, 2:5, 1:4] = 1
    lbl[0, 3:5, 3:4, 2:3] = 2
    return img, lbl


def test_encodings_follow_the_thesis():
    labels = torch.tensor([0, 1, 2])
    np.testing.assert_allclose(encode_mask(labels, "binary").numpy(), [-1, 1, 1])
    np.testing.assert_allclose(encode_mask(labels, "scaled").numpy(), [-1, 0, 1])
    np.testing.assert_allclose(encode_mask(labels, "binary_scaled").numpy(), [-1, 0, 0])
    np.testing.assert_allclose(encode_mask(labels, "raw").numpy(), [0, 1, 2])
    # variant (a): labels through the image window [-1024, 600] -> [-1, 1]: all near -0.74
    np.testing.assert_allclose(encode_mask(labels, "hu_window").numpy(), (np.array([0, 1, 2]) + 1024) / 812 - 1)


@pytest.mark.parametrize("encoding", ["scaled", "hu_window", "raw"])
def test_decode_inverts_multilabel_encodings(encoding):
    labels = torch.tensor([0, 1, 2, 2, 0], dtype=torch.uint8)
    got = decode_mask(encode_mask(labels, encoding), encoding)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), labels.numpy())


def test_decode_binary_threshold_on_noisy_values():
    v = torch.tensor([-0.9, -0.01, 0.0, 0.3])
    np.testing.assert_array_equal(decode_mask(v, "binary").numpy(), [0, 0, 1, 1])
    np.testing.assert_array_equal(decode_mask(v, "binary", threshold=0.2).numpy(), [0, 0, 0, 1])
    np.testing.assert_array_equal(decode_mask(torch.tensor([-0.8, -0.4]), "binary_scaled").numpy(), [0, 1])
    np.testing.assert_array_equal(decode_mask(torch.tensor([-0.7, 0.45, 0.8]), "scaled").numpy(), [0, 1, 2])


def test_stack_layout_and_split_roundtrip(rng):
    img, lbl = _pair(rng)
    pair = stack_image_mask(img, lbl, "scaled")
    assert tuple(pair.shape) == (1, 10, 8, 12)
    np.testing.assert_array_equal(pair[..., :6].numpy(), img)  # image in the first z-half
    np.testing.assert_allclose(pair[..., 6:].numpy(), lbl.astype(np.float32) - 1.0)  # mask [0,2] -> [-1,1]
    image, mask = split_image_mask(pair, "scaled")
    np.testing.assert_array_equal(image.numpy(), img)
    np.testing.assert_array_equal(mask.numpy(), lbl)


def test_stackd_inverse_is_split_and_restores_history(rng):
    img, lbl = _pair(rng)
    hu = (img + 1) / 2 * 1624 - 1024  # HU inside [-1024, 600]
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    t = Compose(
        [
            HUWindowd("image", -1024, 600, -1, 1),
            StackImageMaskd("image", "label", "pair", mask_encoding="binary", delete_inputs=True),
        ]
    )
    binary = (lbl > 0).astype(np.uint8)
    out = t({"image": MetaTensor(hu, affine=affine), "label": MetaTensor(binary, affine=affine)})
    assert set(out) == {"pair"} and tuple(out["pair"].shape) == (1, 10, 8, 12)
    assert set(np.unique(out["pair"][..., 6:].numpy()).tolist()) == {-1.0, 1.0}
    back = t.inverse(out)
    assert "pair" not in back
    np.testing.assert_allclose(back["image"].numpy(), hu, atol=1e-3)  # back to HU through the traced window
    np.testing.assert_array_equal(back["label"].numpy(), binary)
    assert back["label"].dtype == torch.uint8
    np.testing.assert_array_equal(back["label"].affine.numpy(), affine)


def test_splitd_largest_component(rng):
    img = np.zeros((1, 12, 12, 6), dtype=np.float32)
    mask = np.full((1, 12, 12, 6), -1.0, dtype=np.float32)
    mask[0, 2:6, 2:6, 1:4] = 0.9  # big blob
    mask[0, 10, 10, 5] = 0.4  # speck
    d = {"pair": MetaTensor(np.concatenate([img, mask], axis=-1))}
    plain = SplitImageMaskd("pair", mask_encoding="binary")(d)
    assert int(plain["label"].sum()) == 49
    cleaned = SplitImageMaskd("pair", mask_encoding="binary", keep_largest_component=True)(d)
    assert int(cleaned["label"].sum()) == 48 and cleaned["label"].dtype == torch.uint8
    assert tuple(cleaned["image"].shape) == (1, 12, 12, 6)


def test_errors(rng):
    img, lbl = _pair(rng)
    with pytest.raises(ValueError, match="image shape \\(1, 10, 8, 6\\) and mask shape \\(1, 10, 8, 5\\) differ"):
        stack_image_mask(img, lbl[..., :5])
    with pytest.raises(ValueError, match="must be windowed to \\[-1, 1\\] first"):
        StackImageMaskd()({"image": img * 600, "label": lbl})
    with pytest.raises(ValueError, match="unknown mask encoding 'onehot'"):
        StackImageMaskd(mask_encoding="onehot")
    with pytest.raises(ValueError, match="unknown mask encoding 'x'"):
        decode_mask(torch.zeros(2), "x")
    with pytest.raises(ValueError, match="odd number of z slices \\(7\\)"):
        split_image_mask(np.zeros((1, 2, 2, 7), np.float32))
    with pytest.raises(ValueError, match="key 'image' shape .* and key 'label' shape"):
        StackImageMaskd()({"image": img, "label": lbl[:, :5]})
