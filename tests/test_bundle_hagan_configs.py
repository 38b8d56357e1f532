"""The ct_pair_hagan configs through ``monai.bundle`` on abdominal phantom pairs with the smoke overlay: train (+
resume), inference (pairs in HU with a real spacing, deterministic), the channels pair mode, evaluation, metadata,
check_properties, the DDP overlay (2-process gloo run, slow)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ctsynth.data.io import load_volume, spacing_from_affine

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "ct_pair_hagan"
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def runner(bundle_runner):
    return bundle_runner("ct_pair_hagan")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """3 abdominal phantoms, 48^3 at 3 mm (pancreas = 1, tumour = 2)."""
    from ctsynth.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("hagan")
    return write_phantom_dataset(root / "phantoms", kind="abdomen", n=3, size=48, spacing=3.0, seed=0).parent


@pytest.fixture(scope="module")
def train_run(runner, phantoms):
    """2 iterations of the smoke HA-GAN (128^3, z-stacked pairs)."""
    out = phantoms.parent / "run"
    runner.run("train.json", dataset_dir=str(phantoms), output_dir=str(out))
    return out


def test_train_writes_checkpoint_losses_and_tensorboard(train_run):
    state = torch.load(train_run / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    nets = {"generator", "discriminator", "encoder", "sub_encoder"}
    opts = {"g_optimizer", "d_optimizer", "e_optimizer", "sub_e_optimizer"}
    assert set(state) == nets | opts | {"trainer", "rng", "network_definitions", "run_info"}
    assert state["trainer"]["iteration"] == 2
    definitions = json.loads(state["network_definitions"])
    assert definitions["generator"] == {
        "_target_": "scripts.networks.HAGANGenerator",
        "size": 128,
        "latent_dim": 32,
        "channel": 16,
        "out_channels": 1,
    }
    assert definitions["encoder"]["channel"] == 32 and definitions["sub_encoder"]["channel"] == 128
    info = json.loads(state["run_info"])
    assert (info["pair_mode"], info["mask_encoding"], info["lr_preset"]) == ("z_stack", "interp_0_2", "hpo17")
    # 48 voxels of 3 mm over 128 (x, y) and over 64 (the image half of z)
    assert info["spacing_mm"] == [1.125, 1.125, 2.25]
    for group, lr in ((state["g_optimizer"], 2e-4), (state["d_optimizer"], 4e-4), (state["sub_e_optimizer"], 2e-4)):
        assert group["param_groups"][0]["lr"] == lr and tuple(group["param_groups"][0]["betas"]) == (0.0, 0.999)
    log = (train_run / "losses.csv").read_text().splitlines()
    assert log[0] == "epoch,d_loss,d_real,d_fake,g_loss,e_loss,sub_e_loss" and log[1].startswith("1,")
    assert all(math.isfinite(float(v)) for v in log[1].split(",")[1:])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((train_run / "tensorboard").glob("events.out.tfevents.*"))))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"iteration/d_loss", "iteration/sub_e_loss", "iteration/crop_idx", "g_loss"} <= tags
    assert [e.step for e in acc.Scalars("iteration/g_loss")] == [1, 2]


def test_train_resumes_and_counts_iterations(runner, train_run, phantoms, caplog):
    out = phantoms.parent / "run_resume"
    shutil.copytree(train_run, out)
    first = (out / "losses.csv").read_text().splitlines()[1]
    caplog.set_level("INFO")
    runner.run("train.json", dataset_dir=str(phantoms), output_dir=str(out), iterations=4, seed=1)
    assert "resumed from" in caplog.text
    rows = (out / "losses.csv").read_text().splitlines()
    assert rows[1] == first and rows[2].startswith("2,") and len(rows) == 3
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4


def test_iteration_arithmetic_and_lr_presets():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    assert parser.get_parsed_content("max_epochs") == 80 and parser.get_parsed_content("save_interval") == 20
    assert parser["batch_size"] == 4 and parser["latent_dim"] == 1024 and parser["iterations"] == 80000
    parser["lr_preset"] = "original"
    parser.parse()
    assert parser.get_parsed_content("lr") == {"generator": 1e-4, "discriminator": 4e-4, "encoder": 1e-4}


def _check_pairs(folder: Path, n: int, size: int = 128, depth: int = 64) -> list[np.ndarray]:
    manifest = json.loads((folder / "samples.json").read_text())
    assert [r["image"] for r in manifest["samples"]] == [f"hagan_{i:04d}.nii.gz" for i in range(n)]
    images = []
    for record in manifest["samples"]:
        img, affine = load_volume(folder / record["image"])
        lbl, laffine = load_volume(folder / record["label"])
        assert img.shape == lbl.shape == (size, size, depth) and img.dtype == np.float32
        np.testing.assert_allclose(spacing_from_affine(affine), (1.125, 1.125, 2.25 * 64 / depth), atol=1e-5)
        np.testing.assert_allclose(affine, laffine)
        assert img.min() >= -1024.0 - 1e-2 and img.max() <= 600.0 + 1e-2
        assert lbl.dtype == np.uint8 and set(np.unique(lbl)) == {0, 1}
        images.append(img)
    return images


def test_inference_writes_deterministic_pairs_in_hu(runner, train_run):
    ckpt = str(train_run / "checkpoints" / "checkpoint_epoch=1.pt")
    out = train_run.parent / "samples"
    runner.run("inference.json", ckpt_path=ckpt, output_dir=str(out / "a"), num_previews=2)
    first = _check_pairs(out / "a", 3)
    assert len(list((out / "a" / "previews").glob("*.png"))) == 2
    dataset = json.loads((out / "a" / "dataset.json").read_text())
    assert dataset["numTraining"] == 3 and dataset["training"][1]["label"] == "./labels/hagan_0001.nii.gz"
    runner.run("inference.json", ckpt_path=ckpt, output_dir=str(out / "b"), batch_size=3, num_previews=0)
    for a, b in zip(first, _check_pairs(out / "b", 3), strict=True):
        np.testing.assert_allclose(a, b, atol=0.5)
    assert not np.allclose(first[0], first[1])


def test_inference_without_weights_says_how_to_train(runner, tmp_path):
    proc = runner.run_cli("inference.json", args=("--ckpt_path", str(tmp_path / "model.pt")), check=False)
    assert proc.returncode != 0
    assert "no checkpoint file at" in proc.stderr and "configs/train.json --dataset_dir" in proc.stderr


@pytest.mark.slow
def test_channels_pair_mode_trains_in_bf16_and_samples(runner, phantoms):
    out = phantoms.parent / "run_channels"
    runner.run(
        "train.json",
        dataset_dir=str(phantoms),
        output_dir=str(out),
        pair_mode="channels",
        mask_encoding="binary_pm1",
        lr_preset="original",
        amp="bf16",
    )
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert json.loads(state["network_definitions"])["generator"]["out_channels"] == 2
    assert json.loads(state["run_info"])["spacing_mm"] == [1.125, 1.125, 1.125]
    assert state["g_optimizer"]["param_groups"][0]["lr"] == 1e-4
    row = (out / "losses.csv").read_text().splitlines()[1]
    assert all(math.isfinite(float(v)) for v in row.split(",")[1:])
    samples = out / "samples"
    runner.run("inference.json", ckpt_path=str(out / "checkpoints" / "checkpoint_epoch=1.pt"), output_dir=str(samples),
               num_samples=1, num_previews=0, min_component_voxels=1)  # fmt: skip
    img, affine = load_volume(samples / "hagan_0000.nii.gz")
    assert img.shape == (128, 128, 128)
    np.testing.assert_allclose(spacing_from_affine(affine), (1.125, 1.125, 1.125), atol=1e-5)


def test_metadata_validates(bundle_runner, schema_dir, tmp_path):
    meta = bundle_runner("ct_pair_hagan").verify_metadata(schema_dir, tmp_path)
    assert meta["version"] in meta["changelog"]


def test_config_properties(runner, train_run, phantoms, tmp_path):
    with runner.scripts():
        train = runner.workflow(
            "train.json",
            workflow_type="train",
            dataset_dir=str(phantoms),
            output_dir=str(tmp_path / "run"),
            num_workers=0,
            cache_rate=0.0,
            generator_channel=16,
        )
        assert train.check_properties() == []
        assert train.max_epochs == 80
        infer = runner.workflow(
            "inference.json", workflow_type="infer", ckpt_path=str(train_run / "checkpoints" / "checkpoint_epoch=1.pt")
        )
        assert infer.check_properties() == []


def test_multi_gpu_overlay_parses(monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.setenv("LOCAL_RANK", "1")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    parser.parse()
    expected = torch.device("cuda:1") if torch.cuda.is_available() else torch.device("cpu")
    assert parser.get_parsed_content("device") == expected
    for role in ("generator", "discriminator", "encoder", "sub_encoder"):
        assert parser[role]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
        assert parser["train"]["checkpointer"]["objects"][role] == f"$ctsynth.engines.unwrap(@{role})"
    assert parser["train"]["sampler"]["_target_"] == "DistributedSampler"


@pytest.mark.slow
def test_evaluate_writes_thesis_tables_for_images_and_masks(runner, train_run, phantoms):
    ckpt = train_run / "checkpoints" / "checkpoint_epoch=1.pt"
    samples = train_run.parent / "samples_eval"
    runner.run("inference.json", ckpt_path=str(ckpt), output_dir=str(samples), num_previews=0)
    out = train_run.parent / "eval"
    runner.run("evaluate.json", ckpt_path=str(ckpt), samples_dir=str(samples), dataset_dir=str(phantoms),
               output_dir=str(out), allow_random_weights=True)  # fmt: skip
    summary = json.loads((out / "thesis_tables.json").read_text())
    ours = summary["ours"]
    assert all(ours[k] is not None and math.isfinite(ours[k]) for k in ("image_fid", "mask_fid", "image_is_softmax"))
    assert summary["flags"] and "random weights" in summary["flags"][0]
    table = (out / "thesis_tables.md").read_text()
    assert "| thesis: HPO17 (interp_0_2, Table 5.14 'Baseline') | 0.00282 | 0.00001 | 1.01891 | 1.00010 |" in table
    assert "FLAGS" in table
    images = json.loads((out / "images" / "metrics.json").read_text())
    assert {"fid3d_medicalnet", "is", "is_softmax", "masks", "memorisation"} <= set(images["metrics"])
    assert images["n_real"] == 3 and images["volume_shape"] == [128, 128, 64]
    assert (out / "images" / "embedding_medicalnet3d.png").is_file()
    assert (out / "masks" / "metrics.json").is_file()
    ref, _ = load_volume(out / "reference" / "labels" / f"{_first_case(phantoms)}.nii.gz")
    assert ref.shape == (128, 128, 64) and ref.max() == 1


def _first_case(phantoms: Path) -> str:
    from ctsynth.data.io import nifti_stem

    return nifti_stem(json.loads((phantoms / "dataset.json").read_text())["training"][0]["image"])


@pytest.mark.slow
def test_two_process_ddp_training(runner, phantoms, tmp_path):
    """torchrun, 2 CPU processes (gloo): training finishes, both ranks hold the same weights of all four networks,
    only rank 0 writes checkpoints and logs."""
    out = tmp_path / "ddp"
    dump = (
        "$torch.save({n + '.' + k: v.detach().clone() for n, net in (('g', @generator), ('d', @discriminator), "
        "('e', @encoder), ('se', @sub_encoder)) for k, v in ctsynth.engines.unwrap(net).named_parameters()}, "
        f"'{tmp_path}/rank' + str(dist.get_rank()) + '.pt')"
    )
    proc = runner.run_torchrun(
        "train.json",
        "multi_gpu_train.json",
        args=("--dataset_dir", str(phantoms), "--output_dir", str(out), "--batch_size", "1"),
        finalize_first=(dump,),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys() and [k for k in w0 if not torch.equal(w0[k], w1[k])] == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt"]
    assert len(list((out / "tensorboard").glob("events.*"))) == 1
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2


def test_loss_plot_smooths_with_the_thesis_ema(runner, train_run, tmp_path):
    with runner.scripts():
        import scripts.loss_plot as lp

        np.testing.assert_allclose(lp.ema([1.0, 0.0, 0.0], alpha=0.5), [1.0, 0.5, 0.25])
        with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 0"):
            lp.ema([1.0], alpha=0)
        curves = lp.read_iteration_losses(train_run)
        assert set(curves) == set(lp.LOSSES) and list(curves["g_loss"][0]) == [1, 2]
        assert lp.plot_losses(train_run, tmp_path / "ema.png").stat().st_size > 0
        with pytest.raises(FileNotFoundError, match="no event file"):
            lp.read_iteration_losses(tmp_path)
