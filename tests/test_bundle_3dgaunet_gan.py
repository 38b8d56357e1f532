"""Tests of the GAN core of the pancreas_ct_3dgaunet bundle: networks, losses, offline augmentation, data preparation,
training (1 epoch + resume), checkpoint selection, sampling, metadata and config properties.

The bundle's ``scripts`` package is imported in-process through the ``gan_scripts`` fixture (bundle root on
``sys.path``, restored afterwards, since every bundle has a package named ``scripts``); whole configs run through
``python -m monai.bundle run`` in subprocesses on a tiny phantom dataset.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from ctsynth.data.io import load_volume, save_volume, spacing_from_affine
from ctsynth.engines import EpochLossLogger, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "pancreas_ct_3dgaunet"
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def gan_scripts(bundle_runner):
    """The bundle's ``scripts`` package (the shared ``bundle_runner`` fixture restores ``sys.modules``/``sys.path``)."""
    with bundle_runner("pancreas_ct_3dgaunet").scripts() as scripts:
        import scripts.augmentation
        import scripts.checkpoint_selection
        import scripts.gan
        import scripts.networks
        import scripts.prepare

        yield scripts


def run_bundle(config: str | list[str], *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` in the bundle folder; fails the test with the output tail on error."""
    files = config if isinstance(config, str) else "[" + ",".join(f"'{c}'" for c in config) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *overrides]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BUNDLE), str(REPO / "common")]), OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


# ---------------------------------------------------------------- networks


def _unet_params(channels: tuple[int, ...]) -> int:
    """Parameters of MONAI's UNet(num_res_units=0, kernel 3, BATCH norm) counted layer by layer by hand."""
    k = 27
    total, c_in = 0, 1
    for c in channels:  # encoder convs (incl. the stride-1 bottom): weights + bias + BN (gamma, beta)
        total += c_in * c * k + c + 2 * c
        c_in = c
    ups = list(reversed(channels[:-1]))
    c_in = channels[-1] + channels[-2]  # the bottom output is concatenated with the deepest skip
    for i in range(len(ups)):
        out = ups[i + 1] if i + 1 < len(ups) else 1
        total += c_in * out * k + out + (0 if i + 1 == len(ups) else 2 * out)  # the top up-conv is conv-only
        c_in = out + (ups[i + 1] if i + 1 < len(ups) else 0)
    return total


@pytest.mark.parametrize("size", [32, 64])
def test_unet_generator_shapes_and_params(gan_scripts, size):
    nets = gan_scripts.networks
    g = nets.UNetGenerator3D(size, noise="volume")
    assert g.latent_shape == (1, size, size, size) and g.latent_std == 1.0
    y = g(torch.randn(2, *g.latent_shape))
    assert y.shape == (2, 1, size, size, size) and 0.0 <= y.min() and y.max() <= 1.0
    assert nets.count_parameters(g) == _unet_params((32, 64, 128, 256)) == 1_939_681
    gv = nets.UNetGenerator3D(size, noise="vector", channels=(8, 16, 32))
    assert gv.latent_shape == (256,) and gv.latent_std == 0.33
    assert gv(torch.randn(2, 256)).shape == (2, 1, size, size, size)
    assert nets.count_parameters(gv) == _unet_params((8, 16, 32)) + 256 * size**3 + size**3


@pytest.mark.parametrize("size, flat", [(32, 128 * 3**3), (64, 128 * 7**3)])
def test_discriminator_shape_and_params(gan_scripts, size, flat):
    d = gan_scripts.networks.Discriminator3D(size)
    assert d.flat_features == flat
    assert d(torch.rand(3, 1, size, size, size)).shape == (3, 1)
    convs = (1 * 32 * 8 + 32) + (32 * 64 * 8 + 64) + (64 * 128 * 8 + 128)
    bns = 2 * (32 + 64 + 128)
    assert gan_scripts.networks.count_parameters(d) == convs + bns + flat + 1


@pytest.mark.parametrize("size", [32, 64])
def test_3dgan_baseline_shapes_and_params(gan_scripts, size):
    nets = gan_scripts.networks
    g, d = nets.ThreeDGANGenerator(size), nets.ThreeDGANDiscriminator(size)
    assert g(torch.randn(2, 256)).shape == (2, 1, size, size, size)
    assert d(torch.rand(2, 1, size, size, size)).shape == (2, 1)
    g_convs = 64 * (256 * 256 + 256 * 128 + 128 * 64 + 64 * 32 + 32 * 1)
    assert nets.count_parameters(g) == g_convs + 2 * (256 + 128 + 64 + 32)
    d_convs = 64 * (1 * 32 + 32 * 64 + 64 * 128 + 128 * 256) + (256 * 64 + 1)
    assert nets.count_parameters(d) == d_convs + 2 * (32 + 64 + 128 + 256)


def test_network_bad_arguments(gan_scripts):
    nets = gan_scripts.networks
    with pytest.raises(ValueError, match="noise must be one of"):
        nets.UNetGenerator3D(32, noise="image")
    with pytest.raises(ValueError, match="positive multiple of 8"):
        nets.UNetGenerator3D(36)
    with pytest.raises(ValueError, match="len\\(strides\\) == len\\(channels\\) - 1"):
        nets.UNetGenerator3D(32, channels=(8, 16), strides=(2, 2))
    with pytest.raises(ValueError, match="too small for 3 blocks"):
        nets.Discriminator3D(8)
    with pytest.raises(ValueError, match="must be 32 or 64"):
        nets.ThreeDGANGenerator(48)
    with pytest.raises(ValueError, match="must be 32 or 64"):
        nets.ThreeDGANDiscriminator(16)


# ---------------------------------------------------------------- losses and batch helpers


def test_gan_losses_match_analytic_values():
    from ctsynth.engines import bce_discriminator_loss, bce_generator_loss

    zero = torch.zeros(4, 1)
    assert math.isclose(bce_discriminator_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(bce_generator_loss(zero).item(), math.log(2), rel_tol=1e-6)
    p = 0.8  # D(x) = 0.8 on reals, D(G(z)) = 0.3 on fakes
    real, fake = torch.full((2, 1), math.log(p / (1 - p))), torch.full((2, 1), math.log(0.3 / 0.7))
    assert math.isclose(bce_discriminator_loss(real, fake).item(), -math.log(0.8) - math.log(0.7), rel_tol=1e-5)
    assert math.isclose(bce_generator_loss(fake).item(), -math.log(0.3), rel_tol=1e-5)  # non-saturating
    assert bce_generator_loss(torch.full((1, 1), 1e4)).item() < 1e-6  # no overflow with large logits


def test_discriminator_accuracy_and_trainer_arguments(gan_scripts):
    gan = gan_scripts.gan
    real, fake = torch.tensor([[2.0], [-1.0]]), torch.tensor([[-3.0], [-0.5]])
    assert gan.discriminator_accuracy(real, fake) == 0.75
    g, d = gan_scripts.networks.UNetGenerator3D(32, channels=(4, 8)), gan_scripts.networks.Discriminator3D(32)
    kwargs = dict(
        device="cpu", max_epochs=1, train_data_loader=[0], networks={"generator": g, "discriminator": d}, optimizers={}
    )
    with pytest.raises(ValueError, match=r"d_accuracy_threshold must be in \(0, 1\]"):
        gan.GaUNetTrainer(d_accuracy_threshold=0.0, **kwargs)
    with pytest.raises(ValueError, match="d_train_steps must be >= 1"):
        gan.GaUNetTrainer(d_train_steps=0, **kwargs)


def _reference_trajectory(g, d, batches, threshold, lr=2e-4, betas=(0.5, 0.999)):
    """The 3DGAUnet iteration written out as a plain loop (as the former MONAI-GanTrainer-based trainer did it):
    latents -> fakes; D step on reals and detached fakes unless D's batch accuracy >= threshold; fresh latents;
    G step on D(G(z)) with the non-saturating loss. Returns the (g_loss, d_loss, d_updated) of each iteration."""
    from ctsynth.engines import bce_discriminator_loss, bce_generator_loss

    opt_g, opt_d = torch.optim.Adam(g.parameters(), lr, betas), torch.optim.Adam(d.parameters(), lr, betas)
    out = []
    for reals in batches:
        fakes = g(torch.randn(reals.shape[0], *g.latent_shape))
        real_logits, fake_logits = d(reals), d(fakes.detach())
        d_loss = bce_discriminator_loss(real_logits, fake_logits)
        acc = ((real_logits > 0).sum() + (fake_logits <= 0).sum()).item() / (2 * reals.shape[0])
        updated = threshold is None or acc < threshold
        if updated:
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        fakes = g(torch.randn(reals.shape[0], *g.latent_shape))
        opt_g.zero_grad()
        g_loss = bce_generator_loss(d(fakes))
        g_loss.backward()
        opt_g.step()
        out.append((g_loss.item(), d_loss.item(), float(updated)))
    return out


@pytest.mark.parametrize("threshold", [None, 0.7])
def test_train_step_reproduces_the_reference_loss_trajectory(gan_scripts, threshold):
    from ignite.engine import Events

    nets = gan_scripts.networks
    data = [torch.rand(2, 1, 32, 32, 32) for _ in range(4)]

    def fresh():
        torch.manual_seed(11)
        return nets.UNetGenerator3D(32, channels=(4, 8, 8)), nets.Discriminator3D(32, channels=(4, 4, 8))

    g, d = fresh()
    torch.manual_seed(5)
    expected = _reference_trajectory(g, d, data, threshold)
    g, d = fresh()
    opts = {
        k: torch.optim.Adam(v.parameters(), 2e-4, (0.5, 0.999)) for k, v in (("generator", g), ("discriminator", d))
    }
    trainer = gan_scripts.gan.GaUNetTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": x} for x in data],
        networks={"generator": g, "discriminator": d},
        optimizers=opts,
        d_accuracy_threshold=threshold,
    )
    got = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: got.append(tuple(e.state.output[k] for k in ("g_loss", "d_loss", "d_updated"))),
    )
    torch.manual_seed(5)
    trainer.run()
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-5, atol=1e-6)
    if threshold is not None:
        assert {u for _, _, u in expected} == {0.0, 1.0}  # the gate both opened and closed in these iterations


def test_augmentation_variants_are_the_papers(gan_scripts):
    aug = gan_scripts.augmentation
    variants = aug.augmentation_variants()
    assert len(variants) == 18
    assert [v.name for v in variants[:5]] == ["rot0_12", "rot0_24", "rot0_36", "rot0_48", "rot0_72"]
    assert [v.name for v in variants[-3:]] == ["flip0", "flip1", "flip2"]
    with pytest.raises(ValueError, match="axes must be in"):
        aug.augmentation_variants(axes=(3,))


def test_apply_variant_against_numpy_and_scipy(gan_scripts, rng):
    aug = gan_scripts.augmentation
    vol = rng.normal(size=(1, 17, 17, 17)).astype(np.float32)
    flipped = aug.apply_variant(torch.from_numpy(vol), aug.Variant("flip", 1))
    np.testing.assert_array_equal(flipped.numpy(), vol[:, :, ::-1, :])
    # 90 degrees about axis 0 is an exact permutation of the (y, z) plane
    rot90 = aug.apply_variant(torch.from_numpy(vol), aug.Variant("rot", 0, 90.0)).numpy()
    candidates = [np.rot90(vol, k, axes=(2, 3)) for k in (1, 3)]
    assert any(np.allclose(rot90, c, atol=1e-4) for c in candidates)
    # 24 degrees about axis 2: trilinear rotation about the centre, as scipy's order-1 rotate (interior voxels)
    smooth = ndimage.gaussian_filter(vol[0], 2.0)
    out = aug.apply_variant(torch.from_numpy(smooth[None]), aug.Variant("rot", 2, 24.0)).numpy()[0]
    refs = [ndimage.rotate(smooth, a, axes=(0, 1), reshape=False, order=1) for a in (24.0, -24.0)]
    inner = (slice(5, 12),) * 3
    assert min(np.abs(out[inner] - r[inner]).max() for r in refs) < 1e-3
    # labels: nearest neighbour keeps the label set and the dtype
    lbl = np.zeros((1, 17, 17, 17), np.uint8)
    lbl[0, 5:12, 6:11, 4:13] = 2
    out_lbl = aug.apply_variant(torch.from_numpy(lbl), aug.Variant("rot", 1, 36.0), is_label=True)
    assert out_lbl.dtype == torch.uint8 and set(out_lbl.unique().tolist()) == {0, 2}
    assert abs(int((out_lbl == 2).sum()) - int((lbl == 2).sum())) < 0.1 * (lbl == 2).sum()


def test_offline_augmenter_is_deterministic(gan_scripts):
    aug = gan_scripts.augmentation
    a = aug.OfflineAugmenter(num_per_volume=4, seed=3)
    assert [v.name for v in a.select(7)] == [v.name for v in aug.OfflineAugmenter(num_per_volume=4, seed=3).select(7)]
    assert len(a.select(0)) == 4 and len(set(a.select(0))) == 4
    assert len(aug.OfflineAugmenter().select(0)) == 18
    img = torch.rand(1, 8, 8, 8)
    copies = a(img, (img > 0.5).to(torch.uint8), volume_index=2)
    assert len(copies) == 4 and all(c[1].shape == img.shape and c[2].dtype == torch.uint8 for c in copies)
    with pytest.raises(ValueError, match="num_per_volume must be"):
        aug.OfflineAugmenter(num_per_volume=-1)


# ---------------------------------------------------------------- bad inputs


def test_prepare_rejects_missing_or_unlabelled_dataset(gan_scripts, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        gan_scripts.prepare.find_labelled_cases(tmp_path / "nope")
    (tmp_path / "ds" / "imagesTr").mkdir(parents=True)
    save_volume(np.zeros((4, 4, 4), np.int16), np.eye(4), tmp_path / "ds" / "imagesTr" / "a.nii.gz")
    with pytest.raises(ValueError, match=f"{tmp_path / 'ds'}: 1 image\\(s\\) without a label map"):
        gan_scripts.prepare.find_labelled_cases(tmp_path / "ds")


def _phantoms_with(tmp_path: Path, change: str) -> tuple[Path, Path]:
    """Two small abdominal phantoms; the second case's image gets a NaN voxel or its label a value 3."""
    from ctsynth.data.phantoms import write_phantom_dataset

    dataset = write_phantom_dataset(tmp_path / "phantoms", kind="abdomen", n=2, size=32, spacing=4.0, seed=0)
    case = json.loads(dataset.read_text())["training"][1]
    key = "image" if change == "nan" else "label"
    path = dataset.parent / case[key]
    array, affine = load_volume(path)
    if change == "nan":
        array = array.astype(np.float32)
        array[5, 6, 7] = np.nan
    else:
        array[array == 1] = 3
    save_volume(array, affine, path)
    return dataset, path


@pytest.mark.parametrize(
    "change, message",
    [("nan", r"image has NaN or infinite values \(1 NaN, 0 inf\)"), ("label", r"label values \[3\] not in allowed")],
)
def test_prepare_runs_the_shared_input_checks_first(gan_scripts, tmp_path, change, message):
    from ctsynth.data.validation import DataValidationError

    dataset, bad_file = _phantoms_with(tmp_path, change)
    (tmp_path / "cubes").mkdir()
    (tmp_path / "cubes" / "previous.txt").write_text("kept")
    with pytest.raises(RuntimeError, match="check_inputs") as info:  # monai.bundle wraps what the expression raised
        run_config("prepare_data.json", dataset_dir=str(dataset.parent), output_dir=str(tmp_path / "cubes"))
    assert isinstance(info.value.__cause__, DataValidationError)
    assert re.fullmatch(re.escape(str(bad_file)) + ": " + message + ".*", str(info.value.__cause__))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cubes", "phantoms"]
    assert [p.name for p in (tmp_path / "cubes").iterdir()] == ["previous.txt"]


def _tiny_preprocessing(fail_on: str | None = None, nan_in: str | None = None):
    def run(case: dict) -> dict:
        if fail_on and case["image"].endswith(fail_on):
            raise RuntimeError(f"disk full while preparing {case['image']}")
        image, _ = load_volume(case["image"], dtype=np.float32)
        label, _ = load_volume(case["label"])
        if nan_in and case["image"].endswith(nan_in):
            image[0, 0, 0] = np.inf
        return {"image": torch.as_tensor(image)[None], "label": torch.as_tensor(label)[None]}

    return run


def _corner_cube(data: dict) -> dict:
    return {k: v[:, :8, :8, :8] for k, v in data.items()}


def test_prepare_replaces_its_output_as_a_whole(gan_scripts, tmp_path):
    from ctsynth.data.phantoms import write_phantom_dataset

    dataset = write_phantom_dataset(tmp_path / "phantoms", kind="abdomen", n=3, size=16, spacing=8.0, seed=0)
    cases = gan_scripts.prepare.find_labelled_cases(dataset.parent)
    out = tmp_path / "cubes"
    (out / "tumor").mkdir(parents=True)
    (out / "tumor" / "datalist.json").write_text('{"training": ["previous run"]}')
    stale = tmp_path / f".cubes.partial-{2**22 + 1}-abc"  # left by a run killed with kill -9 (its pid is gone)
    (stale / "tumor").mkdir(parents=True)
    prepare = gan_scripts.prepare.prepare_cubes
    with pytest.raises(RuntimeError, match="disk full while preparing .*_001"):  # fails midway, on the 2nd case
        prepare(cases, _tiny_preprocessing(fail_on="_001.nii.gz"), {"tumor": _corner_cube}, out)
    assert (out / "tumor" / "datalist.json").read_text() == '{"training": ["previous run"]}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cubes", "phantoms"]  # no partial folder, stale one gone
    with pytest.raises(ValueError, match=r"_002.nii.gz: image \(after preprocessing\) has 0 NaN and 1 infinite"):
        prepare(cases, _tiny_preprocessing(nan_in="_002.nii.gz"), {"tumor": _corner_cube}, out)
    assert (out / "tumor" / "datalist.json").read_text() == '{"training": ["previous run"]}'

    written = prepare(cases, _tiny_preprocessing(), {"tumor": _corner_cube}, out)
    assert written == {"tumor": out / "tumor" / "datalist.json"}
    items = json.loads(written["tumor"].read_text())["training"]
    assert len(items) == 3 and all((out / "tumor" / i["image"]).is_file() for i in items)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cubes", "phantoms"]


def test_cube_datalist_missing_names_the_file_and_the_fix(gan_scripts, tmp_path):
    load = gan_scripts.prepare.load_cube_datalist
    with pytest.raises(
        FileNotFoundError, match=f"{tmp_path / 'cubes'}/datalist.json: cube datalist not found.*prepare_data"
    ):
        load(tmp_path / "cubes" / "datalist.json")
    (tmp_path / "cubes" / "images").mkdir(parents=True)
    save_volume(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "cubes" / "images" / "a.nii.gz")
    items = [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"}, {"image": "images/b.nii.gz"}]
    (tmp_path / "cubes" / "datalist.json").write_text(json.dumps({"training": items}))
    with pytest.raises(FileNotFoundError, match=r"1 listed cube\(s\) not found \(e.g. .*images/b.nii.gz\)"):
        load(tmp_path / "cubes" / "datalist.json")
    items.pop()
    (tmp_path / "cubes" / "datalist.json").write_text(json.dumps({"training": items}))
    assert load(tmp_path / "cubes" / "datalist.json")[0]["image"] == str(tmp_path / "cubes" / "images" / "a.nii.gz")


def test_corrupt_or_mixed_size_cubes_are_named_before_training(gan_scripts, tmp_path):
    load = gan_scripts.prepare.load_cube_datalist
    images = tmp_path / "images"
    images.mkdir()
    save_volume(np.zeros((4, 4, 4), np.float32), np.eye(4), images / "a.nii.gz")
    save_volume(np.zeros((4, 4, 5), np.float32), np.eye(4), images / "b.nii.gz")
    (images / "c.nii.gz").write_bytes(b"not a nifti file")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "images/a.nii.gz"}, {"image": "images/b.nii.gz"}]}))
    with pytest.raises(ValueError, match=r"images/b.nii.gz: cube of shape \(4, 4, 5\), expected \(4, 4, 4\)"):
        load(datalist, cube_size=4)
    datalist.write_text(json.dumps({"training": [{"image": "images/a.nii.gz"}, {"image": "images/c.nii.gz"}]}))
    with pytest.raises(ValueError, match=r"images/c.nii.gz: cube cannot be read as NIfTI"):
        load(datalist, cube_size=4)


def test_inference_without_weights_says_how_to_train(bundle_runner, tmp_path):
    proc = bundle_runner("pancreas_ct_3dgaunet").run_cli(
        "inference.json", args=("--ckpt_path", str(tmp_path / "model_tumor.pt")), check=False
    )
    assert proc.returncode != 0
    assert "no checkpoint file at" in proc.stderr and "python -m scripts.checkpoint_selection" in proc.stderr


# ---------------------------------------------------------------- metadata and configs


def test_metadata_validates(bundle_runner, schema_dir, tmp_path):
    meta = bundle_runner("pancreas_ct_3dgaunet").verify_metadata(schema_dir, tmp_path)
    assert meta["version"] in meta["changelog"]


def test_multi_gpu_overlay_parses(monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.setenv("LOCAL_RANK", "1")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    parser.parse()
    expected = torch.device("cuda:1") if torch.cuda.is_available() else torch.device("cpu")
    assert parser.get_parsed_content("device") == expected
    assert parser["generator"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["train"]["sampler"]["_target_"] == "DistributedSampler"
    assert parser["train"]["checkpointer"]["objects"]["generator"] == "$ctsynth.engines.unwrap(@generator)"
    assert "$import torch.distributed as dist" in parser["imports"] and "$import scripts" in parser["imports"]
    assert any("init_process_group" in s for s in parser["initialize"])
    assert any("destroy_process_group" in s for s in parser["finalize"])


# ---------------------------------------------------------------- end to end: prepare -> train -> resume -> sample
# Configs run in-process through ``monai.bundle.run`` (the function behind ``python -m monai.bundle run``), which saves
# the interpreter start-up and imports of a subprocess per run; ``test_inference_cli_subprocess`` runs the CLI itself.


def run_config(config: str | list[str], smoke: bool = True, **overrides) -> None:
    """``monai.bundle.run`` of configs of this bundle, ``configs/smoke.json`` merged last (the ``gan_scripts``
    fixture puts the bundle on sys.path)."""
    from monai.bundle import run

    files = [str(CONFIGS / c) for c in ([config] if isinstance(config, str) else config)]
    files += [str(CONFIGS / "smoke.json")] if smoke else []
    run(config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False, **overrides)


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory, gan_scripts):
    """3 abdominal phantoms (64^3 at 2 mm) -> tumour and pancreas cubes with 1 augmented copy each."""
    from ctsynth.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("gaunet")
    dataset = write_phantom_dataset(root / "phantoms", kind="abdomen", n=3, size=64, spacing=2.0, seed=0)
    run_config(
        "prepare_data.json",
        dataset_dir=str(dataset.parent),
        output_dir=str(root / "cubes"),
        augment_per_volume=1,
        test_fraction=0.0,  # 3 phantoms: all of them GAN training patients (the split is tested downstream)
        n_folds=2,
    )
    return root / "cubes"


@pytest.fixture(scope="module")
def train_run(cube_dir):
    """One epoch of the tumour GAN with tiny networks; checkpoints every epoch."""
    out = cube_dir.parent / "run_tumor"
    overrides = dict(dataset_dir=str(cube_dir / "tumor"), output_dir=str(out))
    run_config("train.json", max_epochs=1, **overrides)
    return out, overrides


def test_prepare_data_writes_cubes_in_hu_at_1mm(cube_dir):
    for kind, size in (("tumor", 32), ("pancreas", 64)):
        datalist = json.loads((cube_dir / kind / "datalist.json").read_text())
        items = datalist["training"]
        assert len(items) == 6  # 3 cases x (original + 1 augmented copy)
        assert [i["augmentation"] for i in items][::2] == ["orig"] * 3
        for item in items:
            img, affine = load_volume(cube_dir / kind / item["image"])
            lbl, _ = load_volume(cube_dir / kind / item["label"])
            assert img.shape == lbl.shape == (size, size, size)
            np.testing.assert_allclose(spacing_from_affine(affine), (1.0, 1.0, 1.0), atol=1e-5)
            assert img.min() >= -1100.0 and lbl.dtype == np.uint8
            if kind == "pancreas":  # healthy tissue: no tumour voxel in any cube of the tumour-bearing phantoms
                assert not (lbl == 2).any(), item["image"]
        first, _ = load_volume(cube_dir / kind / items[0]["image"])
        first_lbl, _ = load_volume(cube_dir / kind / items[0]["label"])
        if kind == "tumor":  # outside the tumour: the window floor; inside: hypo-attenuating soft tissue
            assert np.all(first[first_lbl == 0] == -100.0)
            assert -50.0 < float(first[first_lbl == 1].mean()) < 120.0
        else:  # the cube is centred on pancreas tissue
            assert (first_lbl == 1).mean() > 0.05
            assert 0.0 < float(first[first_lbl == 1].mean()) < 200.0


def _parse_prepare(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "prepare_data.json"), str(CONFIGS / "smoke.json")])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def test_prepare_keeps_the_intensity_map_monotonic_by_default(gan_scripts, tmp_path):
    """Marker replacement is off by default (bone and contrast vessels keep their HU, so the map stays monotonic);
    turned on, it is the marker-only mode; the pancreas extractor keeps a 10 mm margin and rejects tumour boxes."""
    hu = np.linspace(-200.0, 1200.0, 16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16)
    label = np.zeros((16, 16, 16), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    save_volume(hu, np.eye(4), tmp_path / "img.nii.gz")
    save_volume(label, np.eye(4), tmp_path / "lbl.nii.gz")
    case = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lbl.nii.gz")}
    out = _parse_prepare().get_parsed_content("preprocessing")(dict(case))["image"].numpy()[0]
    np.testing.assert_allclose(out, hu, atol=1e-3)  # nothing above 200 HU rewritten: 180 HU < 450 HU < 1200 HU
    on = _parse_prepare(marker_replacement=True).get_parsed_content("preprocessing")
    markers = [t for t in on.transforms if type(t).__name__ == "ReplaceHighDensityd"]
    assert len(markers) == 1 and markers[0].mode == "markers"
    np.testing.assert_allclose(on(dict(case))["image"].numpy()[0], hu, atol=1e-3)  # a bright ramp is no marker
    pancreas = _parse_prepare().get_parsed_content("extractors#pancreas")
    assert pancreas.exclude_margin_mm == 10.0 and pancreas.reject_excluded


def test_prepare_accepts_a_healthy_only_dataset_and_cuts_the_negative_set(gan_scripts, tmp_path):
    """A dataset without tumours (NIH Pancreas-CT layout: pancreas label only) gives pancreas cubes and no tumour
    cubes instead of stopping; make_negative_cubes cuts random abdominal cubes of the non-test patients."""
    from ctsynth.data.phantoms import write_phantom_dataset

    dataset = write_phantom_dataset(tmp_path / "nih", kind="abdomen", n=2, size=48, spacing=2.0, seed=3,
                                    tumor_fraction=0.0)  # fmt: skip
    labels = [load_volume(p)[0] for p in sorted((tmp_path / "nih" / "labelsTr").glob("*.nii.gz"))]
    assert all(set(np.unique(lbl).tolist()) == {0, 1} for lbl in labels)
    common = dict(dataset_dir=str(dataset.parent), output_dir=str(tmp_path / "cubes"), test_fraction=0.0, n_folds=2)
    run_config("prepare_data.json", augment_per_volume=0, **common)
    assert not (tmp_path / "cubes" / "tumor").exists()
    items = json.loads((tmp_path / "cubes" / "pancreas" / "datalist.json").read_text())["training"]
    assert sorted(it["case"] for it in items) == ["phantom_abdomen_000", "phantom_abdomen_001"]
    negative = tmp_path / "negative"
    run_config("prepare_data.json", run_id="make_negative_cubes", negative_dir=str(negative), negative_count=3,
               negative_cube_size=16, **common)  # fmt: skip
    listed = json.loads((negative / "datalist.json").read_text())["training"]
    assert len(listed) == 3 and {it["case"] for it in listed} == {"phantom_abdomen_000", "phantom_abdomen_001"}
    for it in listed:
        cube, affine = load_volume(negative / it["image"])
        assert cube.shape == (16, 16, 16) and cube[8, 8, 8] > -500.0  # centred in the body, HU
        np.testing.assert_allclose(spacing_from_affine(affine), (1.0, 1.0, 1.0), atol=1e-5)


def test_train_one_epoch_writes_loadable_checkpoint_and_loss_log(train_run):
    out, _ = train_run
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert set(state) == {
        "generator",
        "discriminator",
        "g_optimizer",
        "d_optimizer",
        "trainer",
        "rng",
        "network_definitions",
        "run_info",
    }
    assert state["trainer"]["iteration"] == 3  # 6 cubes, batch 2
    assert state["generator"]["unet.model.0.conv.weight"].shape == (8, 1, 3, 3, 3)
    definitions = json.loads(state["network_definitions"])
    assert definitions["generator"]["_target_"] == "scripts.networks.UNetGenerator3D"
    assert definitions["generator"]["channels"] == [8, 16, 32] and definitions["discriminator"]["channels"] == [4, 8, 8]
    assert json.loads(state["run_info"])["model"] == "tumor"
    log = (out / "losses.csv").read_text().splitlines()
    assert log[0] == "epoch,g_loss,d_loss,d_accuracy,d_updated" and log[1].startswith("1,")
    assert any((out / "tensorboard").iterdir())


def test_train_writes_loss_curves_to_tensorboard(train_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = train_run
    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    keys = ("g_loss", "d_loss", "d_accuracy", "d_updated")
    assert {f"iteration/{k}" for k in keys} | set(keys) <= tags
    per_iteration = acc.Scalars("iteration/g_loss")
    assert [e.step for e in per_iteration] == [1, 2, 3]  # one point per iteration (6 cubes, batch 2)
    rows = (out / "losses.csv").read_text().splitlines()
    epoch_mean = float(rows[1].split(",")[1])
    assert np.mean([e.value for e in per_iteration]) == pytest.approx(epoch_mean, rel=1e-5)
    assert [(e.step, e.value) for e in acc.Scalars("g_loss")] == [(1, pytest.approx(epoch_mean, rel=1e-6))]


def test_train_prints_epoch_losses_from_state_metrics(train_run, gan_scripts, tmp_path, caplog):
    """The epoch means of the losses are ignite metrics, so MONAI's StatsHandler prints them unchanged."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    handlers = parser["train"]["handlers"]
    assert not any("#handlers#" in json.dumps(h) for h in handlers)  # no handler refers to another by position
    out, overrides = train_run
    caplog.set_level("INFO")
    run_config("train.json", max_epochs=1, **dict(overrides, output_dir=str(tmp_path / "run")))
    assert re.search(r"Epoch\[1\] Metrics -- d_accuracy: \S+ d_loss: \S+ d_updated: \S+ g_loss: \S+", caplog.text)


def test_train_resumes_from_latest_checkpoint(train_run, caplog):
    out, overrides = train_run
    first_row = (out / "losses.csv").read_text().splitlines()[1]
    caplog.set_level("INFO")
    # another seed: had epoch 1 been re-run, its loss row would change
    run_config("train.json", max_epochs=2, seed=1, **overrides)
    assert "resumed from" in caplog.text and "checkpoint_epoch=1.pt" in caplog.text
    rows = (out / "losses.csv").read_text().splitlines()
    assert rows[1] == first_row and rows[2].startswith("2,") and len(rows) == 3
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 6


def test_checkpoint_selection_cli_exports_generator(gan_scripts, tmp_path):
    run = tmp_path / "run"
    logger = EpochLossLogger(run / "losses.csv")
    for epoch in range(1, 101):
        logger.write_row(epoch, {"g_loss": 1.0 + 0.01 * (epoch % 3) + (5.0 if epoch >= 63 else 0.0), "d_loss": 1.0})
    for epoch in (20, 40, 60, 80, 100):
        save_checkpoint(
            {
                "generator": {"w": torch.full((1,), float(epoch))},
                "trainer": {"epoch": epoch},
                "network_definitions": '{"generator": {"_target_": "scripts.networks.UNetGenerator3D"}}',
                "run_info": '{"model": "tumor"}',
            },
            run / "checkpoints" / f"checkpoint_epoch={epoch}.pt",
        )
    record = gan_scripts.checkpoint_selection.select_and_export(run, out=tmp_path / "models" / "model_tumor.pt")
    assert (record["epoch"], record["blowup_epoch"]) == (60, 63)
    exported = torch.load(tmp_path / "models" / "model_tumor.pt", weights_only=True)
    assert set(exported) == {"generator", "network_definitions", "run_info"}  # inference rebuilds from this file
    assert exported["generator"]["w"].item() == 60.0
    assert json.loads((run / "selection.json").read_text())["epoch"] == 60


def _check_samples(folder: Path, n: int) -> list[np.ndarray]:
    files = sorted(folder.glob("tumor_*.nii.gz"))
    assert [f.name for f in files] == [f"tumor_{i:04d}.nii.gz" for i in range(n)]
    arrays = []
    for f in files:
        img, affine = load_volume(f)
        assert img.shape == (32, 32, 32) and img.dtype == np.float32
        np.testing.assert_allclose(affine, np.eye(4))
        assert img.min() >= -100.0 - 1e-3 and img.max() <= 170.0 + 1e-3
        arrays.append(img)
    return arrays


def test_inference_writes_deterministic_cubes_in_hu(train_run):
    out, _ = train_run
    ckpt = out / "checkpoints" / "checkpoint_epoch=1.pt"
    samples = out.parent / "samples"
    common = {"ckpt_path": str(ckpt), "num_samples": 3}  # no architecture override: the checkpoint has it
    run_config("inference.json", output_dir=str(samples / "a"), batch_size=2, num_previews=3, **common)
    arrays = _check_samples(samples / "a", 3)
    assert not np.array_equal(arrays[0], arrays[1])
    index = json.loads((samples / "a" / "samples.json").read_text())
    assert index["num_samples"] == 3 and [r["image"] for r in index["samples"]] == [
        f"tumor_{i:04d}.nii.gz" for i in range(3)
    ]
    assert index["run_info"]["model"] == "tumor" and index["run_info"]["checkpoint"] == str(ckpt)
    assert len(list((samples / "a" / "previews").glob("*.png"))) == 3
    # same seed, another batch size: sample i is identical (its noise depends on (seed, i) only)
    run_config("inference.json", output_dir=str(samples / "b"), batch_size=3, num_previews=0, **common)
    for a, b in zip(arrays, _check_samples(samples / "b", 3), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    run_config("inference.json", output_dir=str(samples / "c"), batch_size=3, num_previews=0, seed=5, **common)
    assert not np.allclose(arrays[0], _check_samples(samples / "c", 3)[0])


def test_inference_batchnorm_mode_is_an_option(train_run, gan_scripts):
    """bn_mode 'eval' (default) samples with the running statistics, 'train' with each batch's: different samples,
    recorded in samples.json; another value is refused."""
    out, _ = train_run
    common = {"ckpt_path": str(out / "checkpoints" / "checkpoint_epoch=1.pt"), "num_samples": 2, "num_previews": 0}
    samples = out.parent / "samples_bn"
    run_config("inference.json", output_dir=str(samples / "eval"), batch_size=2, **common)
    run_config("inference.json", output_dir=str(samples / "train"), batch_size=2, bn_mode="train", **common)
    a, b = _check_samples(samples / "eval", 2), _check_samples(samples / "train", 2)
    assert not np.allclose(a[0], b[0], atol=1e-3)
    for mode in ("eval", "train"):
        assert json.loads((samples / mode / "samples.json").read_text())["run_info"]["bn_mode"] == mode
    assert gan_scripts.networks.batchnorm_eval_mode("eval") and not gan_scripts.networks.batchnorm_eval_mode("train")
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        gan_scripts.networks.batchnorm_eval_mode("frozen")


@pytest.mark.slow
def test_inference_cli_subprocess(train_run):
    out, _ = train_run
    ckpt = out / "checkpoints" / "checkpoint_epoch=1.pt"
    dest = out.parent / "samples_cli"
    run_bundle(
        "configs/inference.json",
        "--ckpt_path",
        str(ckpt),
        "--num_samples",
        "2",
        "--output_dir",
        str(dest),
        "--num_previews",
        "1",
    )
    assert len(_check_samples(dest, 2)) == 2 and (dest / "previews" / "tumor_0000.png").is_file()


def test_config_properties(bundle_runner, cube_dir, tmp_path):
    runner = bundle_runner("pancreas_ct_3dgaunet")
    train = runner.workflow(
        "train.json",
        workflow_type="train",
        dataset_dir=str(cube_dir / "tumor"),
        output_dir=str(tmp_path / "run"),
        num_workers=0,
        cache_rate=0.0,
        **{"generator_channels": [8, 16, 32]},
    )
    assert train.check_properties() == []
    assert train.max_epochs == 2000
    infer = runner.workflow(
        "inference.json",
        workflow_type="infer",
        ckpt_path=str(cube_dir.parent / "run_tumor" / "checkpoints" / "checkpoint_epoch=1.pt"),
    )
    assert infer.check_properties() == []


def test_pancreas_model_and_3dgan_baseline_train(cube_dir):
    """``--model pancreas`` switches to 64^3 cubes; the baseline overlay swaps in the 3D-GAN networks."""
    out = cube_dir.parent / "run_pancreas"
    common = dict(output_dir=str(out), batch_size=3)
    run_config("train.json", model="pancreas", dataset_dir=str(cube_dir / "pancreas"), **common)
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["discriminator"]["head.weight"].shape == (1, 8 * 7**3)  # 64 -> 31 -> 15 -> 7
    base = cube_dir.parent / "run_baseline"
    run_config(
        ["train.json", "baseline_3dgan.json"], dataset_dir=str(cube_dir / "tumor"), **dict(common, output_dir=str(base))
    )
    state = torch.load(base / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["generator"]["net.0.weight"].shape == (256, 16, 4, 4, 4)  # ConvTranspose3d from z (256)


def _parse_train(*overlays: str, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *[str(CONFIGS / o) for o in overlays]])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def test_3dgan_baseline_overlay_has_its_published_settings(gan_scripts):
    """The baseline overlay trains with the settings of the 3DGAUnet authors' repository (the code of the paper's
    3D-GAN baseline); --baseline_settings shared gives train.json's settings (only the architecture differs)."""
    keys = ("lr_g", "lr_d", "betas", "batch_size", "d_accuracy_threshold", "adversarial_loss", "max_epochs")
    published = _parse_train("baseline_3dgan.json")
    assert [published.get_parsed_content(k) for k in keys] == [0.002, 1e-5, [0.25, 0.666], 8, 0.7, "mse", 500]
    assert published.get_parsed_content("save_interval") == 20
    shared = _parse_train("baseline_3dgan.json", baseline_settings="shared")
    plain = _parse_train()
    assert [shared.get_parsed_content(k) for k in keys] == [plain.get_parsed_content(k) for k in keys]
    assert plain.get_parsed_content("adversarial_loss") == "bce"
    logits_r, logits_f = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 0.0])
    d = gan_scripts.gan.mse_discriminator_loss(logits_r, logits_f)
    sig = torch.sigmoid
    expected = ((sig(logits_r) - 1) ** 2).mean() + (sig(logits_f) ** 2).mean()
    assert float(d) == pytest.approx(float(expected))
    assert float(gan_scripts.gan.mse_generator_loss(torch.zeros(3))) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="adversarial_loss must be one of"):
        gan_scripts.gan.GaUNetTrainer(adversarial_loss="hinge")


def test_inference_refuses_another_model_kind_and_an_existing_folder(train_run, gan_scripts):
    out, _ = train_run
    ckpt = str(out / "checkpoints" / "checkpoint_epoch=1.pt")
    with pytest.raises(RuntimeError) as info:
        run_config("inference.json", ckpt_path=ckpt, model="pancreas", output_dir=str(out.parent / "p"))
    assert "trained with model='tumor', but this run asks for model='pancreas'" in str(info.value.__cause__)
    dest = out.parent / "samples_twice"
    run_config("inference.json", ckpt_path=ckpt, output_dir=str(dest))
    with pytest.raises(RuntimeError) as info:
        run_config("inference.json", ckpt_path=ckpt, output_dir=str(dest))
    assert "already holds files; pass --overwrite true" in str(info.value.__cause__)
    run_config("inference.json", ckpt_path=ckpt, output_dir=str(dest), overwrite=True, num_samples=1)
    assert [p.name for p in dest.glob("*.nii.gz")] == ["tumor_0000.nii.gz"]


def test_bf16_training_step_through_the_config_switch(cube_dir, tmp_path):
    run_config("train.json", dataset_dir=str(cube_dir / "tumor"), output_dir=str(tmp_path / "bf16"), amp="bf16")
    log = (tmp_path / "bf16" / "losses.csv").read_text().splitlines()
    assert len(log) == 2 and all(math.isfinite(float(v)) for v in log[1].split(",")[1:])


@pytest.mark.slow
def test_two_process_ddp_training_with_the_d_gate(bundle_runner, cube_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo), D gate on: training finishes, both ranks hold the same weights (G and D), and
    only rank 0 writes checkpoints and logs."""
    out = tmp_path / "ddp"
    dump = (
        "$torch.save({k: v.detach().clone() for net in (@generator, @discriminator) "
        "for k, v in ctsynth.engines.unwrap(net).named_parameters()}, "
        f"'{tmp_path}/rank' + str(dist.get_rank()) + '.pt')"
    )
    proc = bundle_runner("pancreas_ct_3dgaunet").run_torchrun(
        "train.json",
        "multi_gpu_train.json",
        args=(
            "--dataset_dir",
            str(cube_dir / "tumor"),
            "--output_dir",
            str(out),
            "--max_epochs",
            "2",
            "--d_accuracy_threshold",
            "0.7",
        ),  # fmt: skip
        finalize_first=(dump,),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # parameters are equal; BatchNorm running statistics are local (DDP broadcasts rank 0's at each forward)
    assert w0.keys() == w1.keys() and [k for k in w0 if not torch.equal(w0[k], w1[k])] == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert len(list((out / "tensorboard").glob("events.*"))) == 1  # one writer: rank 0
    assert (out / "losses.csv").read_text().splitlines()[0] == "epoch,g_loss,d_loss,d_accuracy,d_updated"
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4  # 6 cubes over 2 ranks, batch 2: 2 iterations per epoch


def test_metadata_has_a_name_and_no_deprecated_keys():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["name"] == "pancreas_ct_3dgaunet"
    assert "optional_packages_version" not in meta and "ctsynth" in meta["required_packages_version"]


@pytest.mark.slow
def test_ckpt_export_of_the_generator_from_a_training_checkpoint(train_run, bundle_runner, tmp_path):
    """``python -m monai.bundle ckpt_export`` as the README documents it (TorchScript by tracing)."""
    out, _ = train_run
    ckpt = str(out / "checkpoints" / "checkpoint_epoch=1.pt")
    ts = tmp_path / "generator.ts"
    args = ["network_def", "--filepath", str(ts), "--ckpt_file", ckpt, "--ckpt_path", ckpt, "--key_in_ckpt",
            "generator", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
            "--use_trace", "True", "--input_shape", "[1,1,32,32,32]"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BUNDLE), str(REPO / "common")]), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "ckpt_export", *args], cwd=BUNDLE, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    exported = torch.jit.load(str(ts))
    from ctsynth.engines import load_network

    with bundle_runner("pancreas_ct_3dgaunet").scripts():
        generator = load_network(ckpt, "generator")
    z = torch.randn(2, 1, 32, 32, 32)
    torch.testing.assert_close(exported(z), generator(z))
