"""Tests of the CT-SGAN core of the chest_ct_sgan bundle: networks (parameter counts derived by hand), volume assembly,
slab sampling, the training step (losses, penalties, slab-only decoding), configs through ``monai.bundle`` on chest
phantoms with the smoke overlay (train, baseline, inference, DDP), metadata and config properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ctsynth.data.io import load_volume

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "chest_ct_sgan"
CONFIGS = BUNDLE / "configs"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def runner(bundle_runner):
    return bundle_runner("chest_ct_sgan")


@pytest.fixture(scope="module")
def sg(runner):
    """The bundle's ``scripts`` package (networks, data, gan, sampling)."""
    with runner.scripts() as scripts:
        import scripts.data
        import scripts.evaluation
        import scripts.gan
        import scripts.networks
        import scripts.sampling

        yield scripts


# ---------------------------------------------------------------- networks: parameter counts by hand


def _lstm_params(d: int, h: int) -> int:
    """Bidirectional one-layer LSTM: per direction W_ih (4h x d), W_hh (4h x h), b_ih and b_hh (4h each)."""
    return 2 * (4 * h * d + 4 * h * h + 8 * h)


def _slice_generator_params(in_dim: int, size: int, ch: list[int]) -> int:
    b = size // 2 ** len(ch)
    total = in_dim * ch[0] * b * b + ch[0] * b * b + 2 * ch[0]  # Linear (+ bias) and BatchNorm2d
    for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
        total += c_in * c_out * 16 + 2 * c_out  # ConvTranspose2d k4 without bias + BatchNorm2d
    return total + ch[-1] * 3 * 16 + 3  # last ConvTranspose2d with bias


def test_default_network_parameter_counts(sg):
    n = sg.networks
    gen = n.CTSGANGenerator()
    # R_v: 2 * (4*32*32 + 4*32*32 + 8*32) = 16,896
    assert n.count_parameters(gen.rnn) == _lstm_params(32, 32) == 16_896
    # G_slice: Linear 192 -> 512*7*7 (4,841,984) + BN 1,024 + ConvT 512>256>128>64>32 with BN + ConvT 32 -> 3
    assert n.count_parameters(gen.slice_generator) == _slice_generator_params(192, 224, [512, 256, 128, 64, 32])
    assert n.count_parameters(gen) == 16_896 + 7_630_787
    # D_slice: Conv2d 4>64>128>256>512>512 (k4, bias) + head Conv2d(512 -> 1, k7)
    widths = [4, 64, 128, 256, 512, 512]
    expect = sum(a * b * 16 + b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 512 * 49 + 1
    assert n.count_parameters(n.SliceCritic()) == expect == 6_977_473
    # D_slab: Conv3d k(3,4,4) 1>32>64>128>256>512 + Linear(512 -> 1)
    widths = [1, 32, 64, 128, 256, 512]
    expect = sum(a * b * 48 + b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 513
    assert n.count_parameters(n.SlabCritic()) == expect == 8_358_881
    # baseline G: Linear 200 -> 256*8^3, BN, ConvT3d 256>128>64>32 (no bias) + BN, ConvT3d 32 -> 1 (bias)
    expect = 200 * 256 * 512 + 256 * 512 + 512 + (256 * 128 + 128 * 64 + 64 * 32) * 64 + 2 * (128 + 64 + 32) + 32 * 64
    assert n.count_parameters(n.Baseline3DGenerator()) == expect + 1 == 29_100_993
    # baseline critic: Conv3d 1>32>64>128>256 (k4, bias) + Conv3d(256 -> 1, k8)
    widths = [1, 32, 64, 128, 256]
    expect = sum(a * b * 64 + b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 256 * 512 + 1
    assert n.count_parameters(n.Baseline3DCritic()) == expect == 2_886_113


def test_small_network_shapes_and_counts(sg):
    n = sg.networks
    gen = n.CTSGANGenerator(size=32, depth=20, content_dim=8, noise_dim=4, hidden_size=4, channels=[16, 8])
    assert n.count_parameters(gen) == _lstm_params(4, 4) + _slice_generator_params(16, 32, [16, 8])
    assert gen.input_shapes() == {"content": (8,), "noise": (18, 4), "state": (2, 2, 4)}
    inputs = gen.random_inputs(2)
    assert gen(*inputs).shape == (2, 1, 32, 32, 20)
    assert gen(*inputs, steps=torch.tensor([[0, 1, 2], [15, 16, 17]])).shape == (2, 3, 3, 32, 32)
    assert n.SliceCritic(32, [8, 8])(torch.zeros(5, 3, 32, 32), torch.zeros(5)).shape == (5, 1)
    assert n.SlabCritic([4, 8])(torch.zeros(2, 1, 6, 32, 32)).shape == (2, 1)
    base = n.Baseline3DGenerator(latent_dim=8, gen_size=16, output_size=32, channels=[8, 4])
    assert base(torch.zeros(2, 8)).shape == (2, 1, 16, 16, 16)
    assert base.generate_volume(torch.zeros(3, 8)).shape == (3, 1, 32, 32, 32)


def test_network_bad_arguments(sg):
    n = sg.networks
    with pytest.raises(ValueError, match="size 200 must be a positive multiple of 2\\*\\*5"):
        n.SliceGenerator(10, size=200)
    with pytest.raises(ValueError, match="depth must be >= 3"):
        n.CTSGANGenerator(size=32, depth=2, channels=[8])
    with pytest.raises(ValueError, match="expected 3D slices"):
        n.assemble_volume(torch.zeros(1, 4, 2, 8, 8))


def test_volume_is_the_centre_slices_plus_both_outer_slices(sg):
    gen = sg.networks.CTSGANGenerator(size=16, depth=12, content_dim=4, noise_dim=3, hidden_size=3, channels=[8, 4])
    gen.chunk_size = 4  # 10 steps in chunks of 4, 4, 2
    gen.eval()
    inputs = gen.random_inputs(2)
    with torch.no_grad():
        vol = gen(*inputs)
        slices = gen(*inputs, steps=torch.arange(10).repeat(2, 1))
    assert vol.shape == (2, 1, 16, 16, 12)
    for k in range(1, 11):
        torch.testing.assert_close(vol[:, 0, :, :, k], slices[:, k - 1, 1])
    torch.testing.assert_close(vol[:, 0, :, :, 0], slices[:, 0, 0])
    torch.testing.assert_close(vol[:, 0, :, :, 11], slices[:, 9, 2])


def test_patient_code_is_shared_and_slice_codes_vary(sg):
    gen = sg.networks.CTSGANGenerator(size=16, depth=10, content_dim=5, noise_dim=3, hidden_size=2, channels=[8, 4])
    codes = gen.codes(*gen.random_inputs(2))
    assert codes.shape == (2, 8, 9)
    assert torch.equal(codes[:, :1, :5].expand(-1, 8, -1), codes[:, :, :5])  # z_C repeated at every step
    assert not torch.allclose(codes[:, 0, 5:], codes[:, 1, 5:])  # R_v codes differ between steps


# ---------------------------------------------------------------- data


def test_rand_slab_crops_t_plus_2_slices_and_records_the_start(sg):
    vol = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 2, 2, 10)
    t = sg.data.RandSlabd("image", slab_slices=3)
    t.set_random_state(0)
    starts = set()
    for _ in range(30):
        out = t({"image": vol})
        s = int(out["slab_start"])
        starts.add(s)
        assert out["image"].shape == (1, 2, 2, 5) and torch.equal(out["image"][0, 0, 0], torch.arange(s, s + 5.0))
    assert starts == set(range(6))  # every start 0 .. 10 - 5
    crop = out["image"][None]
    assert torch.equal(sg.data.real_slab(crop)[0, 0, :, 0, 0], torch.arange(s + 1, s + 4.0))
    three = sg.data.real_slices(crop, torch.tensor([[2, 0]]))
    assert torch.equal(three[0, 0, :, 0, 0], torch.arange(s + 2, s + 5.0))
    assert torch.equal(three[0, 1, :, 0, 0], torch.arange(s, s + 3.0))


def test_rand_slab_refuses_short_volumes_naming_them(sg):
    from monai.data import MetaTensor

    vol = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "short.nii.gz"})
    with pytest.raises(ValueError, match="short.nii.gz: 4 axial slices, fewer than slab_slices \\+ 2 = 6"):
        sg.data.RandSlabd("image", slab_slices=4)({"image": vol})
    with pytest.raises(ValueError, match="slab_slices must be >= 1"):
        sg.data.RandSlabd("image", slab_slices=0)


# ---------------------------------------------------------------- training step


def _trainer(sg, depth=16, loss="wgan", penalty="wgan_gp", n_critic=2, batch=2, t=4, amp=None, checkpoint=False):
    n = sg.networks
    torch.manual_seed(0)
    gen = n.CTSGANGenerator(16, depth, content_dim=4, noise_dim=3, hidden_size=3, channels=[8, 4])
    gen.checkpoint_slices = checkpoint
    nets = {
        "generator": gen,
        "slice_critic": n.SliceCritic(16, [4, 4]),
        "slab_critic": n.SlabCritic([4]),
    }
    opts = {k: torch.optim.Adam(v.parameters(), 1e-3, betas=(0.0, 0.9)) for k, v in nets.items()}
    data = [{"image": torch.rand(1, 16, 16, t + 2) * 2 - 1, "slab_start": torch.tensor(i)} for i in range(batch)]
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    trainer = sg.gan.CTSGANTrainer(
        "cpu", 1, loader, nets, opts, loss=loss, penalty=penalty, n_critic=n_critic, slices_per_slab=2, amp=amp
    )
    return trainer, nets


@pytest.mark.parametrize("loss,penalty", [("wgan", "wgan_gp"), ("wgan", "r1"), ("js", "r1"), ("js", "none")])
def test_training_step_options_update_every_network(sg, loss, penalty):
    trainer, nets = _trainer(sg, loss=loss, penalty=penalty)
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in nets.items()}
    trainer.run()
    metrics = trainer.state.metrics
    assert set(metrics) >= {"slice_critic", "slab_critic", "g_loss"}
    assert all(math.isfinite(metrics[k]) for k in ("slice_critic", "slab_critic", "g_loss"))
    for name, net in nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters(), strict=True)), name


def test_training_decodes_only_the_slab_whatever_the_depth(sg):
    """G_slice sees B x T codes per call (n_critic + 1 calls) for a 16- and a 200-slice volume alike."""
    for depth in (16, 200):
        trainer, nets = _trainer(sg, depth=depth, n_critic=2, batch=2, t=4)
        seen: list[int] = []
        nets["generator"].slice_generator.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.shape[0]))
        trainer.run()
        assert seen == [8, 8, 8], depth


def test_checkpointed_slab_decoding_trains_exactly_like_the_plain_one(sg, monkeypatch):
    """train.json's checkpoint_slices: same weights, BatchNorm statistics and losses after two iterations."""
    calls: list[int] = []
    original = sg.networks.checkpoint_module

    def counting(module, *inputs):
        calls.append(inputs[0].shape[0])
        return original(module, *inputs)

    monkeypatch.setattr(sg.networks, "checkpoint_module", counting)
    runs = []
    for checkpoint in (False, True):
        trainer, nets = _trainer(sg, n_critic=2, checkpoint=checkpoint)
        trainer.run()
        state = {f"{k}.{n}": v.detach().clone() for k, net in nets.items() for n, v in net.state_dict().items()}
        runs.append((state, dict(trainer.state.metrics)))
    (plain, plain_metrics), (ckpt, ckpt_metrics) = runs
    assert calls == [8, 8, 8]  # every decode of the checkpointed run (n_critic 2 + 1), none of the plain one
    assert plain.keys() == ckpt.keys()
    for key in plain:
        np.testing.assert_allclose(ckpt[key].float(), plain[key].float(), rtol=1e-4, atol=1e-6, err_msg=key)
    for key in ("slice_critic", "slab_critic", "g_loss"):
        assert ckpt_metrics[key] == pytest.approx(plain_metrics[key], rel=1e-4, abs=1e-6)


def test_trainer_refuses_unknown_options(sg):
    with pytest.raises(ValueError, match="loss must be one of \\('wgan', 'js'\\), got 'hinge'"):
        _trainer(sg, loss="hinge")
    with pytest.raises(ValueError, match="penalty must be one of \\('wgan_gp', 'r1', 'none'\\), got 'r2'"):
        _trainer(sg, penalty="r2")
    with pytest.raises(ValueError, match="n_critic and slices_per_slab must be >= 1"):
        _trainer(sg, n_critic=0)


def test_bf16_training_step(sg):
    trainer, _ = _trainer(sg, amp="bf16")
    trainer.run()
    assert math.isfinite(trainer.state.metrics["g_loss"])


# ---------------------------------------------------------------- configs end to end on chest phantoms


@pytest.fixture(scope="module")
def chest_dir(tmp_path_factory):
    from ctsynth.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("ctsgan")
    return write_phantom_dataset(root / "chest", kind="chest", n=3, size=40, spacing=8.0, seed=0).parent


@pytest.fixture(scope="module")
def train_run(runner, chest_dir):
    out = chest_dir.parent / "run"
    runner.run("train.json", dataset_dir=str(chest_dir), output_dir=str(out))
    return out


def test_train_writes_checkpoint_with_definitions_and_losses(train_run, sg):
    from ctsynth.engines import read_checkpoint_info

    log = (train_run / "losses.csv").read_text().splitlines()
    assert log[0] == "epoch,slice_critic,slab_critic,g_loss" and len(log) == 2
    definitions, info, state = read_checkpoint_info(train_run / "checkpoints" / "checkpoint_epoch=1.pt")
    assert definitions["generator"]["_target_"] == "scripts.networks.CTSGANGenerator"
    assert definitions["generator"]["size"] == 32 and definitions["generator"]["depth"] == 32
    assert info["hu_window"] == [-1000.0, 400.0] and info["model"] == "ctsgan"
    assert {"generator", "slice_critic", "slab_critic", "opt_generator", "trainer"} <= set(state)


def test_inference_writes_deterministic_volumes_in_hu(runner, train_run):
    ckpt = str(train_run / "checkpoints" / "checkpoint_epoch=1.pt")
    dest = train_run.parent / "samples"
    runner.run("inference.json", ckpt_path=ckpt, output_dir=str(dest / "a"), num_samples=2, batch_size=2)
    runner.run("inference.json", ckpt_path=ckpt, output_dir=str(dest / "b"), num_samples=2, chunk_size=5)
    arrays = []
    for sub in ("a", "b"):
        manifest = json.loads((dest / sub / "samples.json").read_text())
        assert [s["image"] for s in manifest["samples"]] == ["ctsgan_0000.nii.gz", "ctsgan_0001.nii.gz"]
        arrays.append([load_volume(dest / sub / s["image"])[0] for s in manifest["samples"]])
    img = arrays[0][0]
    assert img.shape == (32, 32, 32) and img.min() >= -1000.5 and img.max() <= 400.5
    assert (dest / "a" / "previews" / "ctsgan_0000.png").is_file()
    assert not np.array_equal(arrays[0][0], arrays[0][1])
    for x, y in zip(arrays[0], arrays[1], strict=True):  # batch size and chunking do not change a sample
        np.testing.assert_allclose(x, y, atol=0.5)


def test_bf16_sampling_through_the_amp_switch(runner, train_run, tmp_path):
    ckpt = str(train_run / "checkpoints" / "checkpoint_epoch=1.pt")
    runner.run("inference.json", ckpt_path=ckpt, output_dir=str(tmp_path / "bf16"), num_samples=1, amp="bf16")
    img = load_volume(tmp_path / "bf16" / "ctsgan_0000.nii.gz")[0]
    assert img.shape == (32, 32, 32) and np.isfinite(img).all() and -1000.5 <= img.min() <= img.max() <= 400.5


def test_baseline_trains_and_samples_at_the_output_size(runner, chest_dir, tmp_path):
    out = tmp_path / "base"
    runner.run("train.json", "baseline_3dgan.json", dataset_dir=str(chest_dir), output_dir=str(out))
    assert (out / "losses.csv").read_text().splitlines()[0] == "epoch,critic,g_loss"
    ckpt = str(out / "checkpoints" / "checkpoint_epoch=1.pt")
    with pytest.raises(RuntimeError) as info:
        runner.run("inference.json", ckpt_path=ckpt, output_dir=str(tmp_path / "x"))
    assert "trained with model='baseline_3dgan', but this run asks for model='ctsgan'" in str(info.value.__cause__)
    runner.run("inference.json", ckpt_path=ckpt, model="baseline_3dgan", output_dir=str(tmp_path / "s"))
    assert load_volume(tmp_path / "s" / "baseline_3dgan_0000.nii.gz")[0].shape == (32, 32, 32)


def test_inference_without_weights_says_how_to_train(runner, tmp_path):
    with pytest.raises(RuntimeError) as info:
        runner.run("inference.json", ckpt_path=str(tmp_path / "none.pt"), output_dir=str(tmp_path / "s"))
    assert "no checkpoint file at" in str(info.value.__cause__) and "configs/train.json" in str(info.value.__cause__)


def test_metadata_validates(bundle_runner, schema_dir, tmp_path):
    meta = bundle_runner("chest_ct_sgan").verify_metadata(schema_dir, tmp_path)
    assert meta["version"] in meta["changelog"]


def test_config_properties(runner, chest_dir, train_run, tmp_path):
    with runner.scripts():
        train = runner.workflow(
            "train.json",
            workflow_type="train",
            smoke=True,
            dataset_dir=str(chest_dir),
            output_dir=str(tmp_path / "run"),
        )
        assert train.check_properties() == []
        infer = runner.workflow(
            "inference.json",
            workflow_type="infer",
            smoke=True,
            ckpt_path=str(train_run / "checkpoints" / "checkpoint_epoch=1.pt"),
            output_dir=str(tmp_path / "samples"),
        )
        assert infer.check_properties() == []


def test_multi_gpu_overlay_wraps_every_network(monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.setenv("LOCAL_RANK", "1")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert "DistributedDataParallel" in parser["wrap"]
    assert all(v.startswith("$@wrap(") for v in parser["networks"].values())
    assert parser["train"]["sampler"]["_target_"] == "DistributedSampler"
    base = ConfigParser()
    base.read_config([str(CONFIGS / f) for f in ("train.json", "baseline_3dgan.json", "multi_gpu_train.json")])
    assert sorted(base["networks"]) == ["critic", "generator"]
    assert all(v.startswith("$@wrap(") for v in base["networks"].values())


@pytest.mark.slow
def test_two_process_ddp_training(runner, chest_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo): both ranks end with the same weights; rank 0 alone writes checkpoints."""
    out = tmp_path / "ddp"
    dump = (
        "$torch.save({n + '.' + k: v.detach().clone() for n, net in @networks.items() "
        "for k, v in ctsynth.engines.unwrap(net).named_parameters()}, "
        f"'{tmp_path}/rank' + str(dist.get_rank()) + '.pt')"
    )
    finalize = json.loads((CONFIGS / "multi_gpu_train.json").read_text())["finalize"]
    assert finalize[0] == "$dist.is_initialized() and dist.barrier()"  # no rank tears the group down early
    proc = runner.run_torchrun(
        "train.json",
        "multi_gpu_train.json",
        args=("--dataset_dir", str(chest_dir), "--output_dir", str(out), "--max_epochs", "2"),
        finalize_first=(dump,),
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys() and [k for k in w0 if not torch.equal(w0[k], w1[k])] == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    state = torch.load(out / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2  # 3 volumes over 2 ranks (padded to 4), batch 2: 1 iteration per epoch


# ---------------------------------------------------------------- evaluation (Table 1 protocol)


def test_slice_wise_fid_pairs_and_is_per_scan(sg, tmp_path):
    """Pairs are of two different scans for the real row; identical scans give FID 0; IS has one value per scan."""
    from ctsynth.data.io import save_volume

    ev = sg.evaluation
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(
            save_volume(rng.uniform(-1000, 400, (16, 16, 8)).astype(np.float32), np.eye(4), tmp_path / f"{i}.nii.gz")
        )
    inception = ev.SliceInception(allow_random_weights=True, batch_size=8, every_k=4)
    assert inception.note == "random weights: not comparable to published numbers"
    feats, logits = inception(np.zeros((16, 16, 8), np.float32))
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    protocol = ev.SliceWiseProtocol(inception, n_pairs=6, seed=0)
    assert all(v > 0 for v in protocol.fid_pairs(paths, paths, same_set=True))  # never a scan with itself
    assert protocol.fid_pairs(paths[:1], paths[:1], same_set=False) == [0.0] * 6
    assert len(protocol.inception_scores(paths)) == 3
    with pytest.raises(ValueError, match="needs at least 2 real scans, got 1"):
        protocol.fid_pairs(paths[:1], paths[:1], same_set=True)
    with pytest.raises(FileNotFoundError, match="needs a pretrained weights file"):
        ev.SliceInception()


def test_evaluate_config_writes_table1_beside_the_papers(runner, chest_dir, train_run, tmp_path):
    ckpt = str(train_run / "checkpoints" / "checkpoint_epoch=1.pt")
    runner.run("inference.json", ckpt_path=ckpt, output_dir=str(tmp_path / "ctsgan"))
    out = tmp_path / "eval"
    runner.run(
        "evaluate.json",
        real_dir=str(chest_dir),
        ctsgan_dir=str(tmp_path / "ctsgan"),
        baseline_dir=str(tmp_path / "missing"),
        output_dir=str(out),
        allow_random_weights=True,
        suite_metrics=["histogram"],
        every_k=16,
    )
    result = json.loads((out / "table1.json").read_text())
    assert list(result["table1"]) == ["Real Data", "CT-SGAN (224³)"]  # the missing baseline row is skipped
    assert result["table1"]["Real Data"]["fid"][2] == 3 and result["note"].startswith("random weights")
    table = (out / "table1.md").read_text()
    assert "| Real Data |" in table and "130.72 ± 31.05" in table and "145.18 ± 25.97" in table
    assert len(list((out / "real_cubes" / "imagesTr").glob("*.nii.gz"))) == 3
    assert load_volume(next((out / "real_cubes" / "imagesTr").glob("*.nii.gz")))[0].shape == (32, 32, 32)
    assert (out / "suite" / "CT_SGAN__224" / "metrics.json").is_file()
