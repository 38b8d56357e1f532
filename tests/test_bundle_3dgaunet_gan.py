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
import shutil
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
def gan_scripts():
    """The bundle's ``scripts`` package, imported with the bundle root on ``sys.path`` (restored afterwards)."""
    saved = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(BUNDLE))
    try:
        import scripts.augmentation
        import scripts.checkpoint_selection
        import scripts.gan
        import scripts.networks
        import scripts.prepare
        import scripts.sampling

        yield scripts
    finally:
        # ConfigWorkflow.run also puts the bundle root on sys.path: remove every copy
        sys.path[:] = [p for p in sys.path if not (p and Path(p).resolve() == BUNDLE)]
        for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[k]
        sys.modules.update(saved)


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


def test_gan_losses_match_analytic_values(gan_scripts):
    gan = gan_scripts.gan
    zero = torch.zeros(4, 1)
    assert math.isclose(gan.discriminator_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(gan.generator_loss(zero).item(), math.log(2), rel_tol=1e-6)
    p = 0.8  # D(x) = 0.8 on reals, D(G(z)) = 0.3 on fakes
    real, fake = torch.full((2, 1), math.log(p / (1 - p))), torch.full((2, 1), math.log(0.3 / 0.7))
    assert math.isclose(gan.discriminator_loss(real, fake).item(), -math.log(0.8) - math.log(0.7), rel_tol=1e-5)
    assert math.isclose(gan.generator_loss(fake).item(), -math.log(0.3), rel_tol=1e-5)  # non-saturating
    assert gan.generator_loss(torch.full((1, 1), 1e4)).item() < 1e-6  # no overflow with large logits


def test_prepare_reals_latents_and_gate(gan_scripts):
    gan = gan_scripts.gan
    x = torch.rand(2, 1, 4, 4, 4)
    assert torch.equal(gan.prepare_reals({"image": x, "label": ["a", "b"]}, "cpu"), x)
    assert torch.equal(gan.prepare_reals((x, None)), x)
    with pytest.raises(KeyError, match="batch has no 'image'"):
        gan.prepare_reals({"img": x})
    torch.manual_seed(0)
    z = gan.latent_maker(0.33)(num_latents=2000, latent_size=(256,), device="cpu", non_blocking=False)
    assert z.shape == (2000, 256) and abs(z.std().item() - 0.33) < 0.01
    assert gan.make_d_update_gate(None) is None
    gate = gan.make_d_update_gate(0.7)
    assert gate(torch.tensor([[1.0]]), torch.tensor([[1.0]])) and not gate(
        torch.tensor([[1.0]]), torch.tensor([[-1.0]])
    )


# ---------------------------------------------------------------- offline augmentation


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


def test_load_generator_missing_weights_says_how_to_train(gan_scripts, tmp_path):
    g = gan_scripts.networks.UNetGenerator3D(32, channels=(8, 16, 32))
    with pytest.raises(FileNotFoundError, match="no trained weights at .*model_tumor.pt; train first with"):
        gan_scripts.sampling.load_generator(g, tmp_path / "model_tumor.pt")


# ---------------------------------------------------------------- metadata and configs


def test_metadata_validates(schema_dir, tmp_path):
    from monai.bundle import verify_metadata

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    schema = tmp_path / "schema.json"
    shutil.copy(schema_dir / meta["schema"].rsplit("/", 1)[-1], schema)
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    assert meta["version"] in meta["changelog"]


def test_multi_gpu_overlay_parses(monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.setenv("LOCAL_RANK", "1")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    parser.parse()
    assert parser.get_parsed_content("device") == torch.device("cuda:1")
    assert parser["gnet"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["train"]["sampler"]["_target_"] == "DistributedSampler"
    assert parser["train"]["checkpoint_objects"]["generator"] == "$@gnet.module"
    assert "$import torch.distributed as dist" in parser["imports"] and "$import scripts" in parser["imports"]
    assert any("init_process_group" in s for s in parser["initialize"])
    assert any("destroy_process_group" in s for s in parser["finalize"])


# ---------------------------------------------------------------- end to end: prepare -> train -> resume -> sample
# Configs run in-process through ``monai.bundle.run`` (the function behind ``python -m monai.bundle run``), which saves
# the interpreter start-up and imports of a subprocess per run; ``test_inference_cli_subprocess`` runs the CLI itself.

TINY = {"network_def#channels": [8, 16, 32], "discriminator_def#channels": [4, 8, 8]}


def run_config(config: str, **overrides) -> None:
    """``monai.bundle.run`` of a config of this bundle (the ``gan_scripts`` fixture puts the bundle on sys.path)."""
    from monai.bundle import run

    run(config_file=str(CONFIGS / config), meta_file=str(CONFIGS / "metadata.json"), logging_file=False, **overrides)


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
    overrides = dict(
        dataset_dir=str(cube_dir / "tumor"), output_dir=str(out), batch_size=2, num_workers=0, save_interval=1, **TINY
    )
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
            assert img.max() <= 200.0 + 1e-3  # markers above 200 HU were replaced
            assert img.min() >= -1100.0 and lbl.dtype == np.uint8
        first, _ = load_volume(cube_dir / kind / items[0]["image"])
        first_lbl, _ = load_volume(cube_dir / kind / items[0]["label"])
        if kind == "tumor":  # outside the tumour: the window floor; inside: hypo-attenuating soft tissue
            assert np.all(first[first_lbl == 0] == -100.0)
            assert -50.0 < float(first[first_lbl == 1].mean()) < 120.0
        else:  # the cube is centred on pancreas tissue
            assert (first_lbl == 1).mean() > 0.05
            assert 0.0 < float(first[first_lbl == 1].mean()) < 200.0


def test_train_one_epoch_writes_loadable_checkpoint_and_loss_log(train_run):
    out, _ = train_run
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert set(state) == {"generator", "discriminator", "g_optimizer", "d_optimizer", "trainer"}
    assert state["trainer"]["iteration"] == 3  # 6 cubes, batch 2
    assert state["generator"]["unet.model.0.conv.weight"].shape == (8, 1, 3, 3, 3)
    log = (out / "losses.csv").read_text().splitlines()
    assert log[0] == "epoch,g_loss,d_loss" and log[1].startswith("1,")
    assert any((out / "tensorboard").iterdir())


def test_train_writes_loss_curves_to_tensorboard(train_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = train_run
    events = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"g_loss", "d_loss", "d_accuracy", "d_updated"} <= tags
    assert [e.step for e in acc.Scalars("g_loss")] == [1, 2, 3]  # one point per iteration (6 cubes, batch 2)
    rows = (out / "losses.csv").read_text().splitlines()
    epoch_mean = float(rows[1].split(",")[1])
    assert np.mean([e.value for e in acc.Scalars("g_loss")]) == pytest.approx(epoch_mean, rel=1e-5)


def test_train_stats_handler_prints_epoch_losses(gan_scripts, tmp_path, capsys):
    """train.json's StatsHandler prints the epoch-mean losses (its default prints engine.state.metrics, which a GAN
    trainer never fills); the printer is built before the StatsHandler, as the config parser does."""
    from ignite.engine import Engine
    from monai.bundle import ConfigParser
    from monai.handlers import StatsHandler

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["output_dir"] = str(tmp_path / "run")
    stats = next(h for h in parser["train"]["handlers"] if isinstance(h, dict) and h["_target_"] == "StatsHandler")
    assert "epoch_loss_printer(@train#handlers#0" in stats["epoch_print_logger"]
    handlers = parser.get_parsed_content("train#handlers", instantiate=True)
    # the printer reads the very EpochLossLogger that writes losses.csv, attached before it (epoch sums complete)
    assert isinstance(handlers[0], EpochLossLogger)
    assert handlers[1].epoch_print_logger.__closure__[0].cell_contents is handlers[0]

    outputs = iter([{"g_loss": 1.0, "d_loss": 0.5}, {"g_loss": 3.0, "d_loss": 1.5}])
    engine = Engine(lambda e, b: next(outputs))
    logger = EpochLossLogger(tmp_path / "losses.csv", output_keys=("g_loss", "d_loss"))
    name = f"test_gan_epoch_print_{os.getpid()}"
    printer = gan_scripts.gan.epoch_loss_printer(logger, name)
    logger.attach(engine)
    StatsHandler(name=name, iteration_log=False, epoch_print_logger=printer).attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert "Epoch[1] g_loss: 2.0000 d_loss: 1.0000" in capsys.readouterr().out


def test_train_resumes_from_latest_checkpoint(train_run, caplog):
    out, overrides = train_run
    first_row = (out / "losses.csv").read_text().splitlines()[1]
    caplog.set_level("INFO")
    # another seed: had epoch 1 been re-run, its loss row would change
    run_config("train.json", max_epochs=2, seed=1, **overrides)
    assert "Restored all variables from" in caplog.text and "checkpoint_epoch=1.pt" in caplog.text
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
            {"generator": {"w": torch.full((1,), float(epoch))}, "trainer": {"epoch": epoch}},
            run / "checkpoints" / f"checkpoint_epoch={epoch}.pt",
        )
    record = gan_scripts.checkpoint_selection.select_and_export(run, out=tmp_path / "models" / "model_tumor.pt")
    assert (record["epoch"], record["blowup_epoch"]) == (60, 63)
    exported = torch.load(tmp_path / "models" / "model_tumor.pt", weights_only=True)
    assert set(exported) == {"generator"} and exported["generator"]["w"].item() == 60.0
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
    common = {"ckpt_path": str(ckpt), "num_samples": 3, "network_def#channels": [8, 16, 32]}
    run_config("inference.json", output_dir=str(samples / "a"), batch_size=2, **common)
    arrays = _check_samples(samples / "a", 3)
    assert not np.array_equal(arrays[0], arrays[1])
    index = json.loads((samples / "a" / "samples.json").read_text())
    assert index["num_samples"] == 3 and len(index["previews"]) == 3
    assert all((samples / "a" / p).is_file() for p in index["previews"])
    # same seed, another batch size: sample i is identical (its noise depends on (seed, i) only)
    run_config("inference.json", output_dir=str(samples / "b"), batch_size=3, num_previews=0, **common)
    for a, b in zip(arrays, _check_samples(samples / "b", 3), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    run_config("inference.json", output_dir=str(samples / "c"), batch_size=3, num_previews=0, seed=5, **common)
    assert not np.allclose(arrays[0], _check_samples(samples / "c", 3)[0])


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
        "--network_def#channels",
        "[8,16,32]",
    )
    assert len(_check_samples(dest, 2)) == 2 and (dest / "previews" / "tumor_0000.png").is_file()


def test_config_properties(cube_dir, tmp_path):
    from monai.bundle import ConfigWorkflow

    train = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        dataset_dir=str(cube_dir / "tumor"),
        output_dir=str(tmp_path / "run"),
        num_workers=0,
        cache_rate=0.0,
        **{"network_def#channels": [8, 16, 32]},
    )
    train.initialize()
    assert train.check_properties() == []
    assert train.max_epochs == 2000
    infer = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
    )
    infer.initialize()
    assert infer.check_properties() == []


def test_pancreas_model_and_3dgan_baseline_train(cube_dir):
    """``--model pancreas`` switches to 64^3 cubes; the baseline overlay swaps in the 3D-GAN networks."""
    out = cube_dir.parent / "run_pancreas"
    common = dict(output_dir=str(out), max_epochs=1, batch_size=3, num_workers=0, save_interval=1)
    run_config("train.json", model="pancreas", dataset_dir=str(cube_dir / "pancreas"), **common, **TINY)
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["discriminator"]["head.weight"].shape == (1, 8 * 7**3)  # 64 -> 31 -> 15 -> 7
    from monai.bundle import run

    base = cube_dir.parent / "run_baseline"
    run(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "baseline_3dgan.json")],
        logging_file=False,
        meta_file=str(CONFIGS / "metadata.json"),
        dataset_dir=str(cube_dir / "tumor"),
        **dict(common, output_dir=str(base)),
        **{"network_def#channels": [16, 8, 8, 4], "discriminator_def#channels": [4, 8, 8, 8]},
    )
    state = torch.load(base / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["generator"]["net.0.weight"].shape == (256, 16, 4, 4, 4)  # ConvTranspose3d from z (256)
