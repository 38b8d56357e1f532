"""Tests of the ct_pair_hagan networks, pair data helpers, training step and sampling post-processing (in-process).

Parameter counts are derived layer by layer from the HA-GAN architecture (Sun et al. 2022; the thesis's Sec. 3.6.5)
and compared with the modules; the literal totals of the full-size networks are asserted as well.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def hagan(bundle_runner):
    with bundle_runner("ct_pair_hagan").scripts() as scripts:
        import scripts.data
        import scripts.evaluation
        import scripts.hagan
        import scripts.networks
        import scripts.sampling

        yield scripts


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parameter counts by hand


def conv(cin: int, cout: int, kernel: tuple[int, int, int] | int) -> int:
    """Conv3d with bias: cin * cout * prod(kernel) + cout (spectral norm adds buffers, not parameters)."""
    k = kernel**3 if isinstance(kernel, int) else math.prod(kernel)
    return cin * cout * k + cout


def gn(c: int) -> int:
    """GroupNorm(8, c): weight + bias."""
    return 2 * c


def linear(i: int, o: int) -> int:
    return i * o + o


def generator_count(size: int, c: int = 32, latent: int = 1024, out: int = 1) -> int:
    # G^A: Linear(latent, 16c*4^3); conv 16c->16c, 16c->16c, 16c->8c, 8c->4c, 4c->2c (k3, + GN); same list for 128
    # and 256 (the 256 model only upsamples once more)
    g_a = linear(latent, 16 * c * 64)
    for cin, cout in ((16 * c, 16 * c), (16 * c, 16 * c), (16 * c, 8 * c), (8 * c, 4 * c), (4 * c, 2 * c)):
        g_a += conv(cin, cout, 3) + gn(cout)
    # G^L (width c/2 ... c): conv 2c->c + GN, c->c/2 + GN, c/2->out
    g_l = conv(2 * c, c, 3) + gn(c) + conv(c, c // 2, 3) + gn(c // 2) + conv(c // 2, out, 3)
    # G^H: conv 2c->c + GN, c->out
    g_h = conv(2 * c, c, 3) + gn(c) + conv(c, out, 3)
    return g_a + g_l + g_h


def discriminator_count(size: int, c: int = 512, cl: int = 256, cin: int = 1) -> int:
    # D^H: [256: 1->c/32 k4] 1(or c/32)->c/16 k4, c/16->c/8 k4, c/8->c/4 k(2,4,4), c/4->c/2 k(2,4,4),
    # c/2->c k(1,4,4), c->c/4 k(1,4,4); fc (c/4+1)->c/8, c/8->1
    first = cin
    d_h = 0
    if size == 256:
        d_h += conv(cin, c // 32, 4)
        first = c // 32
    d_h += conv(first, c // 16, 4) + conv(c // 16, c // 8, 4)
    d_h += conv(c // 8, c // 4, (2, 4, 4)) + conv(c // 4, c // 2, (2, 4, 4))
    d_h += conv(c // 2, c, (1, 4, 4)) + conv(c, c // 4, (1, 4, 4))
    d_h += linear(c // 4 + 1, c // 8) + linear(c // 8, 1)
    # D^L: [256: 1->cl/8] 1(or cl/8)->cl/4, cl/4->cl/2, cl/2->cl (k4), cl->1 (k4)
    first = cin
    d_l = 0
    if size == 256:
        d_l += conv(cin, cl // 8, 4)
        first = cl // 8
    d_l += conv(first, cl // 4, 4) + conv(cl // 4, cl // 2, 4) + conv(cl // 2, cl, 4) + conv(cl, 1, 4)
    return d_h + d_l


def encoder_count(c: int = 64, cin: int = 1) -> int:
    # E^H: conv in->c/2 k4 + GN, c/2->c/2 k3 + GN, c/2->c k4 + GN
    return conv(cin, c // 2, 4) + gn(c // 2) + conv(c // 2, c // 2, 3) + gn(c // 2) + conv(c // 2, c, 4) + gn(c)


def sub_encoder_count(size: int, c: int = 256, latent: int = 1024) -> int:
    # E^G: [256: c/4->c/8 + GN] c/4(or c/8)->c/4, c/4->c/2, c/2->c (k4 + GN), c->latent k4
    total, first = 0, c // 4
    if size == 256:
        total += conv(c // 4, c // 8, 4) + gn(c // 8)
        first = c // 8
    for cin, cout in ((first, c // 4), (c // 4, c // 2), (c // 2, c)):
        total += conv(cin, cout, 4) + gn(cout)
    return total + conv(c, latent, 4)


# literal totals of the full-size networks (from the formulas above; 1 channel)
EXPECTED = {
    128: {"G": 52_518_210, "D": 7_241_442, "E": 161_152, "SE": 19_663_168},
    256: {"G": 52_518_210, "D": 7_402_258, "E": 161_152, "SE": 19_663_264},
}


@pytest.mark.parametrize("size", [128, 256])
def test_parameter_counts_match_the_layer_list(hagan, size):
    nets = hagan.networks
    counts = {
        "G": n_params(nets.HAGANGenerator(size)),
        "D": n_params(nets.HAGANDiscriminator(size)),
        "E": n_params(nets.HAGANEncoder()),
        "SE": n_params(nets.HAGANSubEncoder(size)),
    }
    derived = {
        "G": generator_count(size),
        "D": discriminator_count(size),
        "E": encoder_count(),
        "SE": sub_encoder_count(size),
    }
    assert counts == derived == EXPECTED[size]


@pytest.mark.parametrize("size", [128, 256])
def test_channels_mode_parameter_counts(hagan, size):
    nets = hagan.networks
    assert n_params(nets.HAGANGenerator(size, out_channels=2)) == generator_count(size, out=2)
    assert n_params(nets.HAGANDiscriminator(size, in_channels=2)) == discriminator_count(size, cin=2)
    assert n_params(nets.HAGANEncoder(in_channels=2)) == encoder_count(cin=2)


@pytest.mark.parametrize("size", [128, pytest.param(256, marks=pytest.mark.slow)])
def test_output_shapes_in_both_modes(hagan, size):
    nets = hagan.networks
    torch.manual_seed(0)
    g = nets.HAGANGenerator(size, latent_dim=16, channel=16, out_channels=2)
    z = torch.randn(2, 16)
    crop = nets.crop_range(size)
    assert crop == size * 7 // 8
    sub, low = g(z, crop)
    assert sub.shape == (2, 2, size // 8, size, size) and low.shape == (2, 2, size // 4, size // 4, size // 4)
    assert sub.abs().max() <= 1 and low.abs().max() <= 1
    with torch.no_grad():
        whole = g.eval()(z)
    assert whole.shape == (2, 2, size, size, size)
    d = nets.HAGANDiscriminator(size, channel=64, low_channel=32, in_channels=2)
    assert d(sub, low, crop).shape == (2, 1)
    e = nets.HAGANEncoder(channel=32, in_channels=2)
    assert e(sub).shape == (2, 32, size // 32, size // 4, size // 4)
    se = nets.HAGANSubEncoder(size, channel=128, latent_dim=16)
    assert se(torch.randn(2, 32, size // 4, size // 4, size // 4)).shape == (2, 16)


def test_train_mode_decodes_the_feature_slab_under_the_crop(hagan):
    """Train mode: G^H on the feature slab [crop_idx // 4, + S/32) and G^L on the whole feature volume. (The slab is
    not the eval volume's slab: GroupNorm statistics are taken over the slab, as in the HA-GAN code.)"""
    nets = hagan.networks
    torch.manual_seed(0)
    g = nets.HAGANGenerator(128, latent_dim=8, channel=16).eval()
    z = torch.randn(1, 8)
    with torch.no_grad():
        sub, low = g(z, 50)
        h = g.features(z)
        np.testing.assert_allclose(low, g.low_res(h), atol=1e-6)
        np.testing.assert_allclose(sub, g.high_res(h[:, :, 12:16]), atol=1e-6)
        assert not torch.allclose(sub, g.high_res(h[:, :, 13:17]))


def test_fused_upsample_conv_equals_upsample_then_conv(hagan):
    nets = hagan.networks
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4, 6)
    for c_out in (7, nets.TRANSPOSED_MIN_OUT_CHANNELS):  # phase form, transposed-convolution form
        w, b = torch.randn(c_out, 5, 3, 3, 3), torch.randn(c_out)
        ref = F.conv3d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
        np.testing.assert_allclose(nets.upsample_conv3d(x, w, b), ref, atol=1e-4)
        cl = x.to(memory_format=torch.channels_last_3d)
        np.testing.assert_allclose(nets.upsample_conv3d(cl, w, b, kernel=nets.upsample_kernel(w)), ref, atol=1e-4)
    g = nets.HAGANGenerator(128, latent_dim=8, channel=16).eval()
    z = torch.randn(1, 8)
    with torch.no_grad():
        fused = g(z)
        g.set_fused_upsample(False)
        plain = g(z)
    np.testing.assert_allclose(fused, plain, atol=1e-5)
    # gradients agree too (the fused form is used in training)
    g.train()
    grads = []
    for flag in (True, False):
        g.set_fused_upsample(flag)
        g.zero_grad()
        g(z, 16)[0].square().mean().backward()
        grads.append(g.high[0][0].weight.grad.clone())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_sampling_reuses_upsample_kernels_until_the_weights_change(hagan):
    nets = hagan.networks
    torch.manual_seed(0)
    g = nets.HAGANGenerator(128, latent_dim=8, channel=16).eval()
    block = g.high[0]
    z = torch.randn(1, 8)
    with torch.inference_mode():
        first = g(z)
        kernel = block._kernel_cache[1]
        assert torch.equal(g(z), first) and block._kernel_cache[1] is kernel  # reused
    other = nets.HAGANGenerator(128, latent_dim=8, channel=16).eval()
    g.load_state_dict(other.state_dict())  # new weights: the cached kernels must not be used
    with torch.inference_mode():
        np.testing.assert_allclose(g(z), other(z), atol=1e-6)
    assert block._kernel_cache[1] is not kernel
    assert "_kernel_cache" not in "".join(g.state_dict())
    # with gradients the kernel is derived from the weight every time (it must carry the weight's gradient)
    g.train()
    g(z, 16)[0].mean().backward()
    assert block[0].weight.grad is not None and block[0].weight.grad.abs().sum() > 0


def test_network_bad_arguments(hagan):
    nets = hagan.networks
    with pytest.raises(ValueError, match=r"HA-GAN exists in the sizes \(128, 256\), got size=64"):
        nets.HAGANGenerator(64)
    with pytest.raises(ValueError, match="channel must be a multiple of 16"):
        nets.HAGANGenerator(128, channel=24)
    g = nets.HAGANGenerator(128, latent_dim=8, channel=16)
    with pytest.raises(ValueError, match=r"crop_idx must be in \[0, 112\], got 113"):
        g(torch.randn(1, 8), 113)


def test_discriminator_position_input_changes_the_logit(hagan):
    nets = hagan.networks
    torch.manual_seed(0)
    d = nets.HAGANDiscriminator(128, channel=64, low_channel=32).eval()
    sub, low = torch.randn(1, 1, 16, 128, 128), torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(d(sub, low, 0), d(sub, low, 112))


# ---------------------------------------------------------------- pair data


def test_mask_encodings_and_pair_decoding(hagan):
    data = hagan.data
    assert data.shared_encoding("interp_0_2") == "scaled" and data.shared_encoding("binary_pm1") == "binary"
    with pytest.raises(
        ValueError, match=r"unknown mask_encoding 'same'; expected one of \['binary_pm1', 'interp_0_2'\]"
    ):
        data.shared_encoding("same")
    image = torch.linspace(-1, 1, 4 * 4 * 4).reshape(1, 4, 4, 4)
    label = torch.zeros(1, 4, 4, 4)
    label[0, 1, 1, 1], label[0, 2, 2, 2] = 1, 2
    for mode, encoding in (("z_stack", "interp_0_2"), ("z_stack", "binary_pm1"), ("channels", "interp_0_2")):
        d = data.pairing_transform(mode, encoding)({"image": image.clone(), "label": label.clone()})
        pair = d["pair"]
        assert pair.shape == ((1, 4, 4, 8) if mode == "z_stack" else (2, 4, 4, 4))
        enc = pair[..., 4:] if mode == "z_stack" else pair[1:]
        expected = {"interp_0_2": label - 1.0, "binary_pm1": torch.where(label > 0, 1.0, -1.0)}[encoding]
        np.testing.assert_allclose(enc, expected)
        img, mask = data.decode_pair(torch.as_tensor(pair), mode, encoding)
        np.testing.assert_allclose(img, image)
        np.testing.assert_array_equal(mask, (label > 0).to(torch.uint8))
    with pytest.raises(ValueError, match="a channels pair has 2 channels, got shape"):
        data.decode_pair(torch.zeros(1, 4, 4, 4), "channels", "interp_0_2")
    with pytest.raises(ValueError, match="unknown pair_mode 'slices'"):
        data.pairing_transform("slices", "interp_0_2")


def test_channel_pair_rejects_different_grids(hagan):
    t = hagan.data.ChannelPaird()
    with pytest.raises(ValueError, match=r"image shape \(1, 4, 4, 4\) and label shape \(1, 4, 4, 5\) differ"):
        t({"image": torch.zeros(1, 4, 4, 4), "label": torch.zeros(1, 4, 4, 5)})


def test_z_crop_table_drops_leading_slices_of_matching_cases(hagan, tmp_path):
    from monai.data import MetaTensor

    t = hagan.data.ZCropTabled(["image", "label"], {"CHUP-*": 3, "MDA-001*": 2})
    affine = torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0]))
    img = MetaTensor(
        torch.arange(40.0).reshape(1, 2, 2, 10), affine=affine, meta={"filename_or_obj": "/d/CHUP-007.nii.gz"}
    )
    out = t({"image": img, "label": img.clone()})
    assert out["image"].shape == (1, 2, 2, 7) and out["label"].shape == (1, 2, 2, 7)
    np.testing.assert_allclose(out["image"][0, 0, 0], np.arange(3.0, 10.0))
    assert float(out["image"].affine[2, 3]) == pytest.approx(7.5)  # the origin moved by 3 slices of 2.5 mm
    assert t.slices_for("HGJ-001.nii.gz") == 0 and t.slices_for("MDA-001.nii.gz") == 2
    with pytest.raises(ValueError, match="CHUP-007.nii.gz: z-crop of 3 slices leaves nothing of its 3 slices"):
        small = MetaTensor(torch.zeros(1, 2, 2, 3), meta={"filename_or_obj": "/d/CHUP-007.nii.gz"})
        t({"image": small, "label": small.clone()})
    with pytest.raises(ValueError, match="z-crop counts must be >= 0"):
        hagan.data.ZCropTabled("image", {"X*": -1})


def test_training_pairs_need_labels(hagan, tmp_path):
    import json

    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "a.nii.gz"}]}))
    with pytest.raises(ValueError, match=r"a.nii.gz: no label in the datalist; HA-GAN pairs need image \+ mask"):
        hagan.data.training_pairs(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="b.nii.gz: listed in .* but not found"):
        hagan.data.training_pairs(tmp_path)


# ---------------------------------------------------------------- training step


def _tiny_trainer(hagan, size: int = 128, batch: int = 1, amp: str | None = None):
    nets = hagan.networks
    torch.manual_seed(0)
    networks = {
        "generator": nets.HAGANGenerator(size, latent_dim=8, channel=16),
        "discriminator": nets.HAGANDiscriminator(size, channel=64, low_channel=32),
        "encoder": nets.HAGANEncoder(channel=32),
        "sub_encoder": nets.HAGANSubEncoder(size, channel=128, latent_dim=8),
    }
    optimizers = {k: torch.optim.Adam(v.parameters(), lr=1e-3, betas=(0.0, 0.999)) for k, v in networks.items()}
    data = [{"pair": torch.rand(batch, 1, size, size, size) * 2 - 1}]
    trainer = hagan.hagan.HAGANTrainer(
        device="cpu", max_epochs=1, train_data_loader=data, networks=networks, optimizers=optimizers, amp=amp
    )
    return trainer, networks, data


def test_train_step_updates_each_network_from_its_own_loss(hagan):
    trainer, networks, data = _tiny_trainer(hagan)
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in networks.items()}
    seen = {}

    def record(name):
        def hook(module, args, kwargs=None):
            seen.setdefault(name, []).append(torch.is_grad_enabled())

        return hook

    networks["sub_encoder"].register_forward_pre_hook(record("sub_encoder"))
    trainer.run()
    out = trainer.state.output
    assert set(trainer.LOSS_KEYS) <= set(out) and 0 <= out["crop_idx"] <= 112
    assert out["d_loss"] == pytest.approx(out["d_real"] + out["d_fake"], rel=1e-5)
    for name, params in before.items():
        assert any(not torch.equal(a, b) for a, b in zip(params, networks[name].parameters(), strict=True)), name
    # frozen networks keep requires_grad restored after the step
    assert all(p.requires_grad for net in networks.values() for p in net.parameters())
    assert seen["sub_encoder"] == [True]


def test_encoder_step_reconstructs_through_the_frozen_high_res_generator(hagan):
    """The E^H loss is L1(G^H(E^H(x_r)), x_r), with G^H's weights untouched by the encoder update."""
    trainer, networks, data = _tiny_trainer(hagan)
    g = networks["generator"]
    real_sub = data[0]["pair"][:, :, :16]
    with torch.no_grad():
        loss = F.l1_loss(g.high_res(networks["encoder"](real_sub)), real_sub)
    assert 0 < float(loss) < 2
    low = hagan.hagan.low_resolution(data[0]["pair"])
    np.testing.assert_allclose(low, data[0]["pair"][:, :, ::4, ::4, ::4])


def test_bf16_step_is_finite(hagan):
    trainer, _, _ = _tiny_trainer(hagan, amp="bf16")
    trainer.run()
    assert all(math.isfinite(v) for v in trainer.state.output.values())


def test_trainer_rejects_bad_g_iter(hagan):
    nets = hagan.networks
    g = nets.HAGANGenerator(128, latent_dim=8, channel=16)
    with pytest.raises(ValueError, match="g_iter must be >= 1, got 0"):
        hagan.hagan.HAGANTrainer(
            device="cpu", max_epochs=1, train_data_loader=[], networks={"generator": g}, optimizers={}, g_iter=0
        )


# ---------------------------------------------------------------- sampling post-processing


def test_small_components_removed_and_empty_masks_rejected(hagan):
    s = hagan.sampling
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[0:6, 0:6, 0:6] = 1  # 216 voxels: kept
    mask[10:15, 10:15, 10:15] = 1  # 125 voxels: removed
    mask[19, 19, 19] = 1
    out = s.remove_small_components(mask, 200)
    assert out.sum() == 216 and out.dtype == np.uint8
    post = s.RemoveSmallComponents(200)
    sample = {"image": torch.zeros(1, 20, 20, 20), "label": torch.from_numpy(mask[None])}
    assert post(sample)["label"].sum() == 216
    small = mask.copy()
    small[0:6, 0:6, 0:6] = 0
    assert post({"image": sample["image"], "label": torch.from_numpy(small[None])}) is None


def test_sampler_redraws_rejected_pairs_and_counts_them(hagan, tmp_path):
    from ctsynth.engines import SeededSampler

    s = hagan.sampling

    class FakeGenerator(torch.nn.Module):
        """Volumes whose mask half is empty unless the first latent is positive."""

        latent_shape, latent_std = (4,), 1.0

        def forward(self, z):
            vol = torch.full((z.shape[0], 1, 8, 8, 8), -1.0)
            vol[..., 4:] = torch.where(z[:, :1, None, None, None] > 0, 1.0, -1.0).expand(-1, 1, 8, 8, 4)
            return vol

    sampler = SeededSampler(
        s.PairSampleFn(FakeGenerator(), "z_stack", "binary_pm1", channels_last=False),
        tmp_path / "out",
        num_samples=4,
        seed=3,
        postprocess=s.RemoveSmallComponents(1),
        affine=[2.0, 2.0, 4.0],
        num_previews=0,
    )
    manifest = sampler.run()
    assert manifest["redraws"] > 0
    assert manifest["redraws"] == sum(r["attempt"] for r in manifest["samples"])
    path = s.write_msd_dataset(tmp_path / "out")
    import json

    ds = json.loads(path.read_text())
    assert ds["numTraining"] == 4 and ds["training"][0] == {
        "image": "./sample_0000.nii.gz",
        "label": "./labels/sample_0000.nii.gz",
    }


# ---------------------------------------------------------------- evaluation tables


def test_thesis_tables_put_ours_beside_the_thesis(hagan, tmp_path):
    import json

    ev = hagan.evaluation

    def metrics(fid, is_raw, is_soft, flag=None):
        entry = {"value": fid, "flag": flag}
        return {"metrics": {"fid3d_medicalnet": entry, "is": {"value": is_raw}, "is_softmax": {"value": is_soft}}}

    (tmp_path / "i.json").write_text(json.dumps(metrics(0.5, 1.02, 3.0, flag="random weights")))
    (tmp_path / "m.json").write_text(json.dumps(metrics(0.25, 1.001, 2.0)))
    evaluation = ev.HAGANEvaluation(tmp_path, tmp_path, tmp_path, 256, [], [], ev.EvaluationOptions())
    summary = evaluation.write_tables(tmp_path / "i.json", tmp_path / "m.json")
    assert summary["ours"] == {
        "image_fid": 0.5,
        "mask_fid": 0.25,
        "image_is_thesis": 1.02,
        "mask_is_thesis": 1.001,
        "image_is_softmax": 3.0,
        "mask_is_softmax": 2.0,
    }
    table = (tmp_path / "thesis_tables.md").read_text()
    assert "| thesis: Original LR (Table 5.16) | 0.04877 | 0.00007 | 1.13935 | 1.00014 | - | - |" in table
    assert "| this run | 0.5 | 0.25 | 1.02 | 1.001 | 3 | 2 |" in table
    assert "FLAGS" in table and "- random weights" in table
    assert json.loads((tmp_path / "thesis_tables.json").read_text())["flags"] == ["random weights"]


def test_masks_become_binary_pm1_volumes(hagan, tmp_path):
    from ctsynth.data.io import load_volume, save_volume

    ev = hagan.evaluation

    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = 2
    save_volume(mask, np.diag([2.0, 2.0, 3.0, 1.0]), tmp_path / "in" / "a.nii.gz")
    out = ev.masks_as_volumes([tmp_path / "in" / "a.nii.gz"], tmp_path / "out")
    vol, affine = load_volume(out / "a.nii.gz")
    assert vol[1, 1, 1] == 600.0 and vol[0, 0, 0] == -1024.0 and affine[2, 2] == 3.0


def test_hecktor_z_crop_overlay(hagan):
    import json
    from pathlib import Path

    overlay = Path(hagan.__file__).resolve().parents[1] / "configs" / "hecktor_z_crop.json"
    table = json.loads(overlay.read_text())["z_crop_table"]
    crop = hagan.data.ZCropTabled(["image", "label"], table)
    expected = {"CHUP-001": 340, "CHUM-013": 172, "CHUM-014": 0, "CHUS-101": 100, "CHUV-041": 172, "CHUV-042": 0,
                "HMR-028": 172, "MDA-200": 140, "MDA-002": 0, "HGJ-001": 0}  # fmt: skip
    assert {case: crop.slices_for(f"{case}__CT.nii.gz") for case in expected} == expected
    assert sum(1 for k in table if k.startswith("MDA-")) == 48
