"""Tests of the shared training engine: GenerativeTrainer, losses, CheckpointHandler, network definitions, and the
toy bundle (two WGAN-GP critics + an encoder) that shows HA-GAN- and CT-SGAN-style steps fit on it."""

from __future__ import annotations

import functools
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from torch import nn
from torch.utils.data import DataLoader

from ctsynth.engines import (
    CheckpointHandler,
    EpochLossLogger,
    GenerativeTrainer,
    NonFiniteLossError,
    all_ranks_agree,
    build_network,
    gradient_penalty,
    load_network,
    network_definition,
    r1_penalty,
    read_loss_log,
    save_checkpoint,
    seed_everything,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

TOY_BUNDLE = Path(__file__).parent / "toy_bundle"


class ToyGAN(GenerativeTrainer):
    """A minimal adversarial step on vectors (BCE), used to test the engine plumbing."""

    LOSS_KEYS = ("g_loss", "d_loss")

    def __init__(self, *args, nan_at: int | None = None, record_dtype: list | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_at, self.record_dtype = nan_at, record_dtype

    def train_step(self, batch):
        from ctsynth.engines import bce_discriminator_loss, bce_generator_loss

        G, D = self.networks["generator"], self.networks["discriminator"]
        reals = batch["image"]
        z = torch.randn(reals.shape[0], 3)
        with torch.no_grad():
            fakes = G(z)
        with self.autocast():
            logits = D(reals)
            if self.record_dtype is not None:
                self.record_dtype.append(logits.dtype)
            d_loss = bce_discriminator_loss(logits, D(fakes))
        self.update("discriminator", d_loss)
        with self.frozen("discriminator"):
            with self.autocast():
                g_loss = bce_generator_loss(D(G(torch.randn(reals.shape[0], 3))))
            self.update("generator", g_loss)
        if self.nan_at is not None and self.state.iteration >= self.nan_at:
            g_loss = g_loss * float("nan")
        return {"g_loss": g_loss, "d_loss": d_loss.item()}


def _networks():
    return {"generator": nn.Linear(3, 5), "discriminator": nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1))}


def _make(max_epochs=2, data=None, **kwargs):
    seed_everything(0)
    nets = _networks()
    opts = {k: torch.optim.Adam(v.parameters(), 1e-2) for k, v in nets.items()}
    data = data if data is not None else [{"image": torch.randn(5)} for _ in range(8)]
    loader = DataLoader(data, batch_size=3, shuffle=True)
    trainer = ToyGAN(
        device="cpu", max_epochs=max_epochs, train_data_loader=loader, networks=nets, optimizers=opts, **kwargs
    )
    return trainer, nets, opts


# ---------------------------------------------------------------- trainer


def test_epoch_means_land_in_state_metrics():
    trainer, _, _ = _make(max_epochs=1)
    seen: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    assert len(seen) == 3  # 8 samples, batch 3
    for key in ("g_loss", "d_loss"):
        assert trainer.state.metrics[key] == pytest.approx(np.mean([o[key] for o in seen]))


def test_frozen_blocks_gradients_and_restores():
    trainer, nets, _ = _make()
    d = nets["discriminator"]
    with trainer.frozen("discriminator"):
        assert not any(p.requires_grad for p in d.parameters())
    assert all(p.requires_grad for p in d.parameters())
    with pytest.raises(KeyError, match=r"no network\(s\) \['critic'\]"):
        with trainer.frozen("critic"):
            pass
    with pytest.raises(KeyError, match="no optimiser 'critic'"):
        trainer.update("critic", torch.zeros(()))


def test_frozen_backward_raises_without_grad():
    trainer, nets, _ = _make()
    with trainer.frozen("discriminator"), pytest.raises(RuntimeError, match="does not require grad"):
        nets["discriminator"](torch.randn(2, 5)).sum().backward()


def test_update_clips_gradients():
    net = nn.Linear(4, 1, bias=False)
    nn.init.zeros_(net.weight)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    trainer = ToyGAN(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": torch.zeros(5)}],
        networks={"net": net},
        optimizers={"net": opt},
        grad_clip=0.5,
    )
    trainer.update("net", 100.0 * net(torch.ones(1, 4)).sum())
    assert float(net.weight.norm()) == pytest.approx(0.5, rel=1e-5)  # SGD lr 1: step = clipped gradient


def _one_net_trainer(net, amp=None):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return ToyGAN(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": torch.zeros(5)}],
        networks={"net": net},
        optimizers={"net": opt},
        amp=amp,
    )


@pytest.mark.parametrize("amp", [None, "fp16"])
def test_update_with_loss_terms_equals_update_with_their_sum(amp):
    """Terms are built and back-propagated one at a time (the first graph is gone when the second is built); the
    step and the returned loss are those of the sum."""
    x = torch.randn(6, 4)
    results = []
    for as_terms in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        trainer = _one_net_trainer(net, amp=amp)
        alive: list[bool] = []

        def adversarial(net=net):
            return net(x).mean()

        def penalty(net=net, alive=alive):
            # the first term's graph was freed by its backward pass before this one is built
            alive.append(net[0].weight.grad is not None)
            return 3.0 * net(x).square().mean()

        loss = [adversarial, penalty] if as_terms else adversarial() + penalty()
        total = trainer.update("net", loss)
        results.append((float(total), [p.detach().clone() for p in net.parameters()]))
        if as_terms:
            assert alive == [True]
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_update_refuses_an_empty_list_of_terms():
    trainer = _one_net_trainer(nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"update\('net'\): no loss terms"):
        trainer.update("net", [])


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), (None, torch.float32)])
def test_amp_switch_autocasts_the_step(amp, dtype):
    dtypes: list = []
    trainer, _, _ = _make(max_epochs=1, amp=amp, record_dtype=dtypes)
    trainer.run()
    assert dtypes and all(d == dtype for d in dtypes)
    assert all(math.isfinite(v) for v in trainer.state.metrics.values())


def test_fp16_uses_a_scaler_per_optimiser():
    trainer, _, _ = _make(max_epochs=1, amp="fp16")
    assert set(trainer.scalers) == {"generator", "discriminator"}
    trainer.run()
    assert math.isfinite(trainer.state.metrics["g_loss"])


def test_trainer_argument_errors():
    with pytest.raises(ValueError, match="amp must be one of"):
        _make(amp="int8")
    with pytest.raises(ValueError, match=r"grad_clip names optimisers \['critic'\]"):
        _make(grad_clip={"critic": 1.0})
    with pytest.raises(ValueError, match="needs loss_keys"):
        GenerativeTrainer(device="cpu", max_epochs=1, train_data_loader=[0], networks={}, optimizers={})


def test_missing_loss_key_is_named():
    trainer, _, _ = _make(max_epochs=1, loss_keys=("g_loss", "e_loss"))
    with pytest.raises(KeyError, match=r"returned no \['e_loss'\]"):
        trainer.run()


def test_non_finite_loss_stops_with_iteration_and_last_checkpoint(tmp_path):
    trainer, nets, opts = _make(max_epochs=3, nan_at=5)
    CheckpointHandler(tmp_path / "ckpt", {**nets, "trainer": trainer}).attach(trainer)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.run()
    msg = str(err.value)
    assert "iteration 5 (epoch 2)" in msg and "g_loss=nan" in msg
    assert "checkpoint_epoch=1.pt" in msg


def test_all_ranks_agree_single_process():
    assert all_ranks_agree(True) and not all_ranks_agree(False, "any")
    with pytest.raises(ValueError, match="mode must be"):
        all_ranks_agree(True, "most")


# ---------------------------------------------------------------- losses


def test_gradient_penalty_and_r1_on_a_linear_critic():
    w = torch.tensor([[3.0, 4.0]])  # |w| = 5 everywhere: GP = (5 - 1)^2, R1 = 25
    critic = functools.partial(torch.nn.functional.linear, weight=w)
    reals, fakes = torch.randn(6, 2), torch.randn(6, 2)
    assert float(gradient_penalty(critic, reals, fakes)) == pytest.approx(16.0)
    assert float(r1_penalty(critic, reals)) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="must have the same shape"):
        gradient_penalty(critic, reals, fakes[:3])


def test_gradient_penalty_is_differentiable_wrt_the_critic():
    critic = nn.Linear(2, 1)
    gp = gradient_penalty(critic, torch.randn(4, 2), torch.randn(4, 2))
    gp.backward()
    assert critic.weight.grad is not None and float(critic.weight.grad.abs().sum()) > 0


def test_wasserstein_losses():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert float(wasserstein_critic_loss(real, fake)) == pytest.approx(-1.0 - 2.0)
    assert float(wasserstein_generator_loss(fake)) == pytest.approx(1.0)


# ---------------------------------------------------------------- checkpoints: resume, final epoch, definitions


def _weights(nets):
    return {k: [p.detach().clone() for p in v.parameters()] for k, v in nets.items()}


def _run_with_checkpoints(folder, max_epochs, save_interval=1, definitions=None):
    trainer, nets, opts = _make(max_epochs=max_epochs)
    objects = {**nets, **{f"opt_{k}": v for k, v in opts.items()}, "trainer": trainer}
    handler = CheckpointHandler(folder, objects, network_definitions=definitions, save_interval=save_interval)
    handler.attach(trainer)
    trainer.run()
    return trainer, nets, handler


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    _, full_nets, _ = _run_with_checkpoints(tmp_path / "full", 4)
    _run_with_checkpoints(tmp_path / "split", 2)  # "killed" after epoch 2 ...
    trainer, nets, handler = _run_with_checkpoints(tmp_path / "split", 4)  # ... and started again
    assert handler.resumed_from.endswith("checkpoint_epoch=2.pt") and trainer.state.epoch == 4
    for key, params in _weights(full_nets).items():
        for a, b in zip(params, _weights(nets)[key], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_last_epoch_is_always_saved_and_old_ones_pruned(tmp_path):
    _run_with_checkpoints(tmp_path, 5, save_interval=2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [f"checkpoint_epoch={e}.pt" for e in (2, 4, 5)]
    trainer, nets, _ = _make(max_epochs=3)
    CheckpointHandler(tmp_path / "pruned", nets, n_saved=1, resume=False).attach(trainer)
    trainer.run()
    assert [p.name for p in (tmp_path / "pruned").glob("*.pt")] == ["checkpoint_epoch=3.pt"]
    with pytest.raises(ValueError, match="save_interval and n_saved must be >= 1"):
        CheckpointHandler(tmp_path, nets, save_interval=0)


def test_resume_refuses_another_architecture(tmp_path):
    defs = {"generator": functools.partial(nn.Linear, in_features=3, out_features=5)}
    _run_with_checkpoints(tmp_path, 1, definitions=defs)
    other = {"generator": functools.partial(nn.Linear, in_features=3, out_features=7)}
    with pytest.raises(ValueError, match=r"cannot resume, the \['generator'\] architecture differs"):
        _run_with_checkpoints(tmp_path, 2, definitions=other)


def test_network_definitions_travel_with_the_checkpoint(tmp_path):
    defs = {"generator": functools.partial(nn.Linear, in_features=3, out_features=5)}
    _, nets, _ = _run_with_checkpoints(tmp_path, 1, definitions=defs)
    g = load_network(tmp_path / "checkpoint_epoch=1.pt", "generator")
    assert isinstance(g, nn.Linear) and not g.training
    torch.testing.assert_close(g.weight, nets["generator"].weight)
    assert network_definition(defs["generator"]) == {
        "_target_": "torch.nn.modules.linear.Linear",
        "in_features": 3,
        "out_features": 5,
    }
    # a config defining another architecture is told which argument differs
    with pytest.raises(ValueError, match=r"another architecture .*differs in \['out_features'\]"):
        load_network(
            tmp_path / "checkpoint_epoch=1.pt",
            "generator",
            definition=functools.partial(nn.Linear, in_features=3, out_features=6),
        )


def test_load_network_checks_model_kind_and_weights(tmp_path):
    definition = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2}
    net = nn.Linear(2, 2)
    extra = {"network_definitions": json.dumps({"generator": definition}), "run_info": json.dumps({"model": "tumor"})}
    save_checkpoint({"generator": net, **extra}, tmp_path / "ok.pt")
    with pytest.raises(ValueError, match=r"trained with model='tumor', but this run asks for model='pancreas'"):
        load_network(tmp_path / "ok.pt", "generator", expect={"model": "pancreas"})
    with pytest.raises(KeyError, match="no 'encoder' entry"):
        load_network(tmp_path / "ok.pt", "encoder")
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    save_checkpoint({"generator": net, **extra}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"nan.pt:generator.weight holds NaN"):
        load_network(tmp_path / "nan.pt", "generator")
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*; train first"):
        load_network(tmp_path / "none.pt", "generator", missing_hint="train first")
    save_checkpoint({"generator": nn.Linear(2, 2)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="stores no definition of the generator"):
        load_network(tmp_path / "bare.pt", "generator")
    assert isinstance(load_network(tmp_path / "bare.pt", "generator", definition=definition), nn.Linear)


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_crafted_checkpoints_are_refused(tmp_path, capsys):
    crafted = tmp_path / "crafted.pt"
    torch.save({"generator": _Payload()}, crafted, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ValueError, match="not a readable weights-only checkpoint"):
        load_network(crafted, "generator")
    assert "payload ran" not in capsys.readouterr().out
    # a definition naming a non-network callable is never called
    evil = {"network_definitions": json.dumps({"generator": {"_target_": "os.system", "command": "echo hacked"}})}
    save_checkpoint({"generator": {}, **evil}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing to build network 'os.system'"):
        load_network(tmp_path / "evil.pt", "generator")
    with pytest.raises(ValueError, match="is not an importable torch.nn.Module class"):
        build_network({"_target_": "torch.nn.functional.relu"})


def test_network_definition_errors():
    with pytest.raises(TypeError, match="give network arguments by name"):
        network_definition(functools.partial(nn.Linear, 3, 4))
    with pytest.raises(TypeError, match="cannot be stored with a checkpoint"):
        network_definition(functools.partial(nn.Linear, in_features=torch.ones(1)))
    with pytest.raises(TypeError, match="must be a config component with '_mode_': 'callable'"):
        network_definition(nn.Linear(2, 2))


# ---------------------------------------------------------------- the toy bundle: two critics + encoder


def test_toy_bundle_trains_two_wgan_gp_critics_and_an_encoder(bundle_runner, tmp_path):
    toy = bundle_runner(TOY_BUNDLE)
    with toy.scripts() as scripts:
        import scripts.toy  # noqa: F401

        gen = scripts.toy.ToyGenerator()
        before = {k: v.clone() for k, v in gen.state_dict().items()}
    toy.run("train.json", output_dir=str(tmp_path))
    log = read_loss_log(tmp_path / "losses.csv")
    assert list(log["epoch"]) == [1, 2]
    assert set(log) == {"epoch", "critic_full", "critic_crop", "g_loss", "e_loss"}
    assert all(np.isfinite(v).all() for v in log.values())
    state = torch.load(tmp_path / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"generator", "critic_full", "critic_crop", "encoder", "opt_encoder", "rng"} <= set(state)
    assert any(not torch.equal(before[k], state["generator"][k]) for k in before)  # G was trained
    with toy.scripts():  # the definition names the bundle's own class
        enc = load_network(tmp_path / "checkpoints" / "checkpoint_epoch=2.pt", "encoder")
    assert enc(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_toy_bundle_bf16(bundle_runner, tmp_path):
    bundle_runner(TOY_BUNDLE).run("train.json", output_dir=str(tmp_path), amp="bf16", max_epochs=1)
    assert np.isfinite(read_loss_log(tmp_path / "losses.csv")["g_loss"]).all()


def test_epoch_loss_logger_on_the_trainer(tmp_path):
    trainer, _, _ = _make(max_epochs=2)
    EpochLossLogger(tmp_path / "l.csv").attach(trainer)
    trainer.run()
    log = read_loss_log(tmp_path / "l.csv")
    assert list(log["epoch"]) == [1, 2] and log["g_loss"][-1] == pytest.approx(trainer.state.metrics["g_loss"])


def _critic_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _terms_update_in_process_group(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net = nn.parallel.DistributedDataParallel(_critic_net())
        trainer = _one_net_trainer(net)
        x = torch.randn(6, 4, generator=torch.Generator().manual_seed(rank))
        # the R1 term does not reach the output bias: under DDP it must not be synchronised on its own
        trainer.update("net", [lambda: r1_penalty(net, x), lambda: net(x).mean()])
        torch.save({k: v.detach() for k, v in net.module.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_loss_terms_under_ddp_step_with_the_mean_gradient_of_their_sum(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_terms_update_in_process_group, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # reference: one process, the gradient of the summed loss averaged over the two ranks' data, one SGD step
    net = _critic_net()
    grads = []
    for rank in range(2):
        net.zero_grad()
        x = torch.randn(6, 4, generator=torch.Generator().manual_seed(rank))
        (r1_penalty(net, x) + net(x).mean()).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    with torch.no_grad():
        for p, g0, g1 in zip(net.parameters(), *grads, strict=True):
            p -= 0.1 * (g0 + g1) / 2
    for key, value in net.state_dict().items():
        for state in ranks:
            np.testing.assert_allclose(state[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
