"""abdomen_ct_ldm: networks at the thesis's sizes (parameter counts derived by hand), losses, the stage-2 pieces for
MONAI's SupervisedTrainer, the seeded sampling function, crop regimes, rating kit, TotalSegmentator messages."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "abdomen_ct_ldm"


@pytest.fixture(scope="module")
def ldm(bundle_runner):
    with bundle_runner("abdomen_ct_ldm").scripts() as scripts:
        import scripts.autoencoder
        import scripts.data
        import scripts.evaluation
        import scripts.latent
        import scripts.networks
        import scripts.rating
        import scripts.totalseg

        yield scripts


# ---------------------------------------------------------------- parameter counts by hand (BraTS LDM layer list)


def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k**3 + (cout if bias else 0)


def group_norm(c: int) -> int:
    return 2 * c


def ae_resblock(cin: int, cout: int) -> int:
    skip = conv(cin, cout, 1) if cin != cout else 0
    return group_norm(cin) + conv(cin, cout) + group_norm(cout) + conv(cout, cout) + skip


def autoencoder_count(in_ch: int, latent: int, channels: list[int], blocks: int = 2) -> int:
    """Encoder: conv_in, per level `blocks` res blocks (+ stride-2 conv between levels), norm, conv_out;
    1x1 convs for mu, log sigma and post-quantisation; decoder mirrored (conv_in, res blocks, upsample convs)."""
    n = conv(in_ch, channels[0])
    prev = channels[0]
    for i, c in enumerate(channels):
        for _ in range(blocks):
            n += ae_resblock(prev, c)
            prev = c
        n += conv(c, c) if i < len(channels) - 1 else 0
    n += group_norm(prev) + conv(prev, latent)
    n += 3 * conv(latent, latent, 1)
    rev = channels[::-1]
    n += conv(latent, rev[0])
    prev = rev[0]
    for i, c in enumerate(rev):
        for _ in range(blocks):
            n += ae_resblock(prev, c)
            prev = c
        n += conv(c, c) if i < len(rev) - 1 else 0
    return n + group_norm(prev) + conv(prev, in_ch)


def unet_count(ch: int, channels: list[int], attention: list[bool], blocks: int = 2) -> int:
    """conv_in, time MLP (c0 -> 4c0 -> 4c0), res blocks with a time projection, self-attention (norm + q/k/v, no
    output projection with include_fc=False), stride-2 convs, mid block (res, attention, res), up blocks of
    `blocks + 1` res blocks on concatenated skips, upsampling convs, norm + conv_out."""
    temb = 4 * channels[0]

    def res(cin: int, cout: int) -> int:
        skip = conv(cin, cout, 1) if cin != cout else 0
        lin = temb * cout + cout
        return group_norm(cin) + conv(cin, cout) + lin + group_norm(cout) + conv(cout, cout) + skip

    def attn(c: int) -> int:
        return group_norm(c) + 3 * (c * c + c)

    n = conv(ch, channels[0]) + (channels[0] * temb + temb) + (temb * temb + temb)
    prev = channels[0]
    for i, c in enumerate(channels):
        for _ in range(blocks):
            n += res(prev, c) + (attn(c) if attention[i] else 0)
            prev = c
        n += conv(c, c) if i < len(channels) - 1 else 0
    n += 2 * res(prev, prev) + attn(prev)
    rev, rev_att = channels[::-1], attention[::-1]
    prev_out = rev[0]
    for i, c in enumerate(rev):
        skip_in = rev[min(i + 1, len(rev) - 1)]
        for j in range(blocks + 1):
            skip = skip_in if j == blocks else c
            n += res((prev_out if j == 0 else c) + skip, c) + (attn(c) if rev_att[i] else 0)
        prev_out = c
        n += conv(c, c) if i < len(rev) - 1 else 0
    return n + group_norm(channels[0]) + conv(channels[0], ch)


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_autoencoder_and_discriminator_counts_match_the_layer_list():
    ae = AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, latent_channels=8, channels=(64, 128, 256),
        num_res_blocks=2, norm_num_groups=32, norm_eps=1e-6, attention_levels=(False, False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False, include_fc=False,
    )  # fmt: skip
    assert count(ae) == autoencoder_count(1, 8, [64, 128, 256]) == 21_000_353
    pair = AutoencoderKL(
        spatial_dims=3, in_channels=2, out_channels=2, latent_channels=8, channels=(64, 128, 256), num_res_blocks=2,
        attention_levels=(False, False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    )  # fmt: skip
    assert count(pair) == autoencoder_count(2, 8, [64, 128, 256])
    disc = PatchDiscriminator(spatial_dims=3, num_layers_d=3, channels=32, in_channels=1, norm="INSTANCE")
    # 4^3 convs 1->32 (bias), 32->64, 64->128, 128->256 (no bias: instance norm follows), 256->1 (bias)
    by_hand = conv(1, 32, 4) + conv(32, 64, 4, False) + conv(64, 128, 4, False) + conv(128, 256, 4, False)
    assert count(disc) == by_hand + conv(256, 1, 4) == 2_770_977


def test_diffusion_unet_count_matches_the_layer_list():
    unet = DiffusionModelUNet(
        spatial_dims=3, in_channels=8, out_channels=8, channels=(256, 256, 512), attention_levels=(False, True, True),
        num_head_channels=(0, 64, 64), num_res_blocks=2, include_fc=False, use_combined_linear=False,
    )  # fmt: skip
    assert count(unet) == unet_count(8, [256, 256, 512], [False, True, True]) == 189_325_576


def test_small_unet_count_matches_the_layer_list():
    unet = DiffusionModelUNet(
        spatial_dims=3, in_channels=2, out_channels=2, channels=(8, 16), attention_levels=(False, True),
        num_head_channels=(0, 4), num_res_blocks=2, norm_num_groups=4, include_fc=False,
    )  # fmt: skip
    assert count(unet) == unet_count(2, [8, 16], [False, True])


# ---------------------------------------------------------------- stage 1


def test_kl_divergence_analytic(ldm):
    kl = ldm.autoencoder.kl_divergence
    assert float(kl(torch.zeros(2, 3, 4, 4, 4), torch.ones(2, 3, 4, 4, 4))) == pytest.approx(0.0, abs=1e-7)
    # one element mu=1, sigma=e: 0.5 * (1 + e^2 - 2 - 1) per sample, batch mean
    mu, sigma = torch.ones(1, 1, 1, 1, 1), torch.full((1, 1, 1, 1, 1), math.e)
    assert float(kl(mu, sigma)) == pytest.approx(0.5 * (math.e**2 - 2), rel=1e-6)


def test_perceptual_weights_missing_names_the_file_and_the_download(ldm, tmp_path):
    build = ldm.autoencoder.build_perceptual_loss
    assert build(0.0, tmp_path / "absent.pth") is None
    with pytest.raises(FileNotFoundError) as info:
        build(0.1, tmp_path / "absent.pth")
    msg = str(info.value)
    assert str(tmp_path / "absent.pth") in msg and "python -m monai.bundle download_large_files" in msg
    assert "--perceptual_weight 0" in msg


def test_perceptual_loss_without_torchvision_says_so(ldm, tmp_path):
    from monai.utils import optional_import

    if optional_import("torchvision")[1]:
        pytest.skip("torchvision is installed here")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"0")
    with pytest.raises(ImportError, match=r"needs torchvision .*--perceptual_weight 0"):
        ldm.autoencoder.build_perceptual_loss(0.1, weights)


def test_large_files_declares_the_perceptual_weights_with_a_hash():
    """large_files.yml (read by `python -m monai.bundle download_large_files`, which needs PyYAML): one entry per
    file with path, url, hash_val, hash_type; parsed here line by line so the test needs no YAML package."""
    import re

    text = (BUNDLE / "large_files.yml").read_text()
    entries = [dict(re.findall(r'(\w+): "([^"]*)"', block)) for block in text.split("  - ")[1:]]
    entry = {e["path"]: e for e in entries}["models/perceptual_resnet50.pth"]
    assert entry["url"].startswith("https://") and entry["hash_type"] == "sha256"
    assert re.fullmatch(r"[0-9a-f]{64}", entry["hash_val"])
    # torchvision names its files <name>-<first 8 hex digits of the sha256>.pth
    assert entry["url"].rsplit("-", 1)[1] == entry["hash_val"][:8] + ".pth"
    train = json.loads((BUNDLE / "configs" / "train_autoencoder.json").read_text())
    assert train["perceptual_weights_path"].endswith("'/models/perceptual_resnet50.pth'")


def test_old_format_autoencoder_loads_and_channels_are_checked(ldm, tmp_path):
    import functools

    definition = functools.partial(
        AutoencoderKL, spatial_dims=3, in_channels=1, out_channels=1, latent_channels=2, channels=(8, 8),
        num_res_blocks=1, norm_num_groups=4, attention_levels=(False, False), with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )  # fmt: skip
    source = definition()
    torch.save(source.state_dict(), tmp_path / "old.pt")
    net = ldm.networks.load_autoencoder(tmp_path / "old.pt", "cpu", definition, old_format=True, in_channels=1)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), net.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="takes 1 channel\\(s\\) but this run feeds 2"):
        ldm.networks.load_autoencoder(tmp_path / "old.pt", "cpu", definition, old_format=True, in_channels=2)
    with pytest.raises(FileNotFoundError, match="no autoencoder weights at .*nope.pt; train stage 1"):
        ldm.networks.load_autoencoder(tmp_path / "nope.pt", "cpu", definition, missing_hint="train stage 1")


# ---------------------------------------------------------------- stage 2 pieces


def test_latent_shape_of_the_thesis(ldm):
    assert ldm.latent.latent_shape_of(8, [144, 176, 112], [64, 128, 256]) == [8, 36, 44, 28]
    with pytest.raises(ValueError, match="divisible by the autoencoder's downsampling 4"):
        ldm.latent.latent_shape_of(8, [146, 176, 112], [64, 128, 256])


def _tiny_ae(channels: int = 1) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        spatial_dims=3, in_channels=channels, out_channels=channels, latent_channels=2, channels=(8, 8),
        num_res_blocks=1, norm_num_groups=4, attention_levels=(False, False), with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()  # fmt: skip


def _tiny_unet() -> DiffusionModelUNet:
    torch.manual_seed(1)
    return DiffusionModelUNet(
        spatial_dims=3, in_channels=2, out_channels=2, channels=(8, 8), attention_levels=(False, True),
        num_head_channels=(0, 4), num_res_blocks=1, norm_num_groups=4,
    ).eval()  # fmt: skip


def test_prepare_batch_draws_latent_shaped_noise_and_the_bound_inferer_matches_monai(ldm):
    from monai.inferers import LatentDiffusionInferer

    prep = ldm.latent.LatentNoisePrepareBatch(1000, [2, 8, 8, 4])
    images = torch.rand(3, 1, 16, 16, 8)
    x, target, args, kwargs = prep({"image": images}, "cpu")
    assert x.shape == images.shape and target.shape == (3, 2, 8, 8, 4) and args == ()
    assert torch.equal(kwargs["noise"], target) and kwargs["timesteps"].shape == (3,)
    assert int(kwargs["timesteps"].max()) < 1000
    ae, unet, sched = _tiny_ae(), _tiny_unet(), DDPMScheduler(1000, schedule="scaled_linear_beta")
    bound = ldm.latent.BoundLatentDiffusionInferer(sched, ae, scale_factor=0.7)
    reference = LatentDiffusionInferer(sched, scale_factor=0.7)
    with torch.no_grad():
        a = bound(x, unet, **kwargs)
        b = reference(x, ae, unet, kwargs["noise"], kwargs["timesteps"])
    assert torch.allclose(a, b)


def test_scale_factor_is_one_over_std_of_the_first_batch_in_order(ldm):
    ae = _tiny_ae()
    data = [{"image": torch.rand(1, 16, 16, 8)} for _ in range(3)]
    torch.manual_seed(5)
    got = ldm.latent.compute_scale_factor(ae, data, "cpu", batch_size=2, seed=3)
    after = torch.rand(1)
    torch.manual_seed(3)
    with torch.no_grad():
        z = ae.encode_stage_2_inputs(torch.stack([d["image"] for d in data[:2]]))
    assert got == pytest.approx(1.0 / float(torch.std(z)))
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), after)  # the caller's RNG stream is untouched
    torch.manual_seed(123)
    assert ldm.latent.compute_scale_factor(ae, data, "cpu", batch_size=2, seed=3) == got  # whatever the global seed
    with pytest.raises(ValueError, match="dataset is empty"):
        ldm.latent.compute_scale_factor(ae, [], "cpu", 2)


def _sample_fn(ldm, **kwargs):
    sched = DDIMScheduler(1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195, clip_sample=False)
    defaults = dict(latent_shape=[2, 8, 8, 4], scale_factor=0.5, num_inference_steps=3)
    return ldm.latent.LatentDiffusionSampleFn(_tiny_ae(kwargs.pop("channels", 1)), _tiny_unet(), sched, **{
        **defaults, **kwargs})  # fmt: skip


def test_sampling_depends_only_on_seed_and_index(ldm):
    from ctsynth.engines import sample_generators

    fn = _sample_fn(ldm)
    both = fn(sample_generators(0, [0, 1]), torch.device("cpu"))
    second = fn(sample_generators(0, [1]), torch.device("cpu"))
    again = fn(sample_generators(0, [0, 1]), torch.device("cpu"))
    assert both.shape == (2, 1, 16, 16, 8)
    assert torch.equal(both, again)  # DDIM with eta 0 adds no noise
    assert torch.allclose(both[1:], second, atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_decoding_flag_and_tiled_decoding(ldm):
    from ctsynth.engines import sample_generators

    gens = lambda: sample_generators(3, [0])  # noqa: E731
    divided = _sample_fn(ldm)(gens(), torch.device("cpu"))
    thesis = _sample_fn(ldm, divide_by_scale_factor=False)(gens(), torch.device("cpu"))
    assert not torch.allclose(divided, thesis)
    # the thesis's decoding of z equals the divided decoding of z * scale_factor: check through decode()
    fn = _sample_fn(ldm)
    z = torch.randn(1, 2, 8, 8, 4)
    assert torch.allclose(fn.decode(z), fn.autoencoder.decode_stage_2_outputs(z))
    whole_window = _sample_fn(ldm, decode_roi_size=[8, 8, 4])
    assert torch.allclose(whole_window.decode(z), fn.decode(z), atol=1e-5)
    tiled = _sample_fn(ldm, decode_roi_size=[4, 4, 4], decode_overlap=0.5).decode(z)
    assert tiled.shape == (1, 1, 16, 16, 8) and torch.isfinite(tiled).all()


def test_pair_mode_sample_splits_and_thresholds_the_mask(ldm):
    from ctsynth.engines import sample_generators

    out = _sample_fn(ldm, channels=2, pair_mode=True)(sample_generators(0, [0]), torch.device("cpu"))
    assert out["image"].shape == (1, 1, 16, 16, 8) and out["label"].dtype == torch.uint8
    assert set(out["label"].unique().tolist()) <= {0, 1}


# ---------------------------------------------------------------- data


def test_crop_regimes_and_bad_arguments(ldm):
    crops = ldm.data.crop_regime_transforms
    assert crops("full_body", ["image"]) == []
    assert type(crops("pancreas", ["image", "label"])[0]).__name__ == "PancreasBBoxCropd"
    assert crops("semi", ["image"])[0].spatial_size == (240, 240, 155)
    with pytest.raises(ValueError, match="crop_regime must be one of .*'full_body', 'pancreas', 'semi'.*got 'liver'"):
        crops("liver", ["image"])
    with pytest.raises(ValueError, match="pancreas crop needs the label"):
        crops("pancreas", ["image"])
    with pytest.raises(ValueError, match="body_source must be"):
        crops("semi", ["image"], body_source="atlas")


def test_semi_crop_with_totalsegmentator_missing_says_how_to_fall_back(ldm):
    from monai.utils import optional_import

    if optional_import("totalsegmentator")[1]:
        pytest.skip("TotalSegmentator is installed here")
    with pytest.raises(ImportError, match=r"TotalSegmentator is not installed .*--semi_body_source threshold"):
        ldm.data.crop_regime_transforms("semi", ["image"], body_source="totalsegmentator")
    with pytest.raises(ImportError, match="--totalsegmentator false"):
        ldm.totalseg.PancreasCheck({"real": "."}, ".").run()


def test_unlabelled_cases_refused_when_labels_are_needed(ldm, tmp_path):
    import nibabel as nib

    (tmp_path / "imagesTr").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "imagesTr" / "a.nii.gz")
    assert ldm.data.load_cases(tmp_path) == [{"image": str(tmp_path / "imagesTr" / "a.nii.gz")}]
    with pytest.raises(ValueError, match=r"1 image\(s\) have no label \(e.g. .*a.nii.gz\); the pancreas crop"):
        ldm.data.load_cases(tmp_path, need_labels=True)


def test_dataset_intensity_range_is_the_mean_of_percentiles(ldm):
    cases = [{"image": torch.arange(0, 201, dtype=torch.float32)[None]}, {"image": torch.full((1, 10), 7.0)}]
    lo, hi = ldm.data.dataset_intensity_range(cases, lambda d: d, 0.0, 50.0)
    assert (lo, hi) == pytest.approx(((0 + 7) / 2, (100 + 7) / 2))
    with pytest.raises(ValueError, match="no training cases"):
        ldm.data.dataset_intensity_range([], lambda d: d)


# ---------------------------------------------------------------- evaluation pieces


def test_cohen_kappa_by_hand(ldm):
    kappa = ldm.rating.cohen_kappa
    assert kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # 4 items, agreement on 2: p_o = 0.5; marginals a: {0: .5, 1: .5}, b: {0: .5, 1: .5} -> p_e = 0.5 -> kappa 0
    assert kappa([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # p_o = 0.75, a = {0: .5, 1: .5}, b = {0: .25, 1: .75} -> p_e = .5 -> kappa 0.5
    assert kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    assert math.isnan(kappa([2, 2], [2, 2]))
    with pytest.raises(ValueError, match="equally long"):
        kappa([1], [1, 2])


def _fill(path: Path, scores: dict[tuple[str, str], int]) -> None:
    rows = list(csv.DictReader(path.open()))
    for r in rows:
        r["score"] = str(scores[(r["sample"], r["plane"])])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["sample", "plane", "score", "comment"])
        w.writeheader()
        w.writerows(rows)


def test_rating_kit_and_summary(ldm, tmp_path):
    from ctsynth.data.io import save_volume

    for i in range(2):
        save_volume(np.full((8, 10, 6), 40.0 * i, np.float32), np.diag([1.1, 1.1, 1.1, 1]), tmp_path / f"s{i}.nii.gz")
    kit = ldm.rating.make_rating_kit(tmp_path, tmp_path / "kit")
    assert kit["samples"] == ["s0", "s1"]
    assert sorted(p.name for p in (tmp_path / "kit" / "images").iterdir())[:3] == [
        "s0_axial.png", "s0_coronal.png", "s0_sagittal.png"]  # fmt: skip
    assert "Perfectly realistic" in Path(kit["rubric"]).read_text()
    a, b = (tmp_path / "kit" / "ratings_rater1.csv"), (tmp_path / "kit" / "ratings_rater2.csv")
    _fill(a, {("s0", "axial"): 2, ("s0", "coronal"): 1, ("s0", "sagittal"): 0,
              ("s1", "axial"): 3, ("s1", "coronal"): 3, ("s1", "sagittal"): 1})  # fmt: skip
    _fill(b, {("s0", "axial"): 3, ("s0", "coronal"): 1, ("s0", "sagittal"): 0,
              ("s1", "axial"): 3, ("s1", "coronal"): 2, ("s1", "sagittal"): 1})  # fmt: skip
    summary = ldm.rating.summarise_ratings([a, b], tmp_path / "summary.json")
    assert summary["per_sample"]["s0"]["axial"] == 2.5 and summary["per_sample"]["s1"]["mean"] == pytest.approx(13 / 6)
    assert summary["per_plane_mean"] == {"axial": 2.75, "coronal": 1.75, "sagittal": 0.5}
    assert summary["kappa"]["sagittal"] == pytest.approx(1.0) and summary["kappa"]["axial"] == pytest.approx(0.0)
    # coronal: [1, 3] vs [1, 2]: p_o = 0.5, p_e = 0.5 * 0.5 (both say 1) = 0.25 -> kappa 1/3
    assert json.loads((tmp_path / "summary.json").read_text())["kappa"]["coronal"] == pytest.approx(1 / 3)
    rows = a.read_text().replace("s1,sagittal,1", "s1,sagittal,7")
    a.write_text(rows)
    with pytest.raises(ValueError, match=r"ratings_rater1.csv, row 7: score '7' is not an integer from 0 to 5"):
        ldm.rating.summarise_ratings([a, b])


def test_pancreas_stats_volume_and_centroid(ldm):
    mask = np.zeros((10, 10, 10), bool)
    mask[2:4, 2:4, 2:4] = True
    stats = ldm.totalseg.pancreas_stats(mask, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert stats["found"] and stats["voxels"] == 8 and stats["volume_ml"] == pytest.approx(8 * 8 / 1000)
    assert stats["centroid_mm"] == [5.0, 5.0, 5.0]
    assert ldm.totalseg.pancreas_stats(np.zeros((3, 3, 3)), np.eye(4))["found"] is False


def test_fid_is_marked_unreliable(ldm, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"metrics": {"fid2d_slices": {"value": 3.0}, "histogram": {}}}))
    doc = ldm.evaluation.mark_fid_unreliable(path)
    assert list(doc["ldm_notes"]) == ["fid2d_slices"] and "Table 2" in doc["ldm_notes"]["fid2d_slices"]
    assert json.loads(path.read_text())["ldm_notes"] == doc["ldm_notes"]
