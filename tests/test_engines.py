"""Tests of ctsynth.engines: seeding, checkpoint I/O, loss log and blow-up detection (trainer: test_engine_trainer)."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from ctsynth.engines import (
    EpochLossLogger,
    choose_checkpoint_epoch,
    detect_blowup,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    per_index_seed,
    read_loss_log,
    rolling_median,
    save_checkpoint,
    seed_everything,
    seed_worker,
    seeded_noise,
    select_checkpoint,
)

# ---------------------------------------------------------------- seeding


def test_seed_everything_repeats_all_generators():
    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    with pytest.raises(ValueError, match="non-negative"):
        seed_everything(-1)


def test_seed_worker_follows_torch_seed():
    torch.manual_seed(11)
    seed_worker(0)
    a = np.random.rand()
    torch.manual_seed(11)
    seed_worker(5)
    assert np.random.rand() == a  # the worker id is already part of torch's per-worker seed
    torch.manual_seed(12)
    seed_worker(0)
    assert np.random.rand() != a


def test_seeded_noise_is_per_index():
    full = seeded_noise((2, 3), seed=7, indices=[0, 1, 2, 3])
    part = seeded_noise((2, 3), seed=7, indices=[2, 3])
    assert full.shape == (4, 2, 3)
    torch.testing.assert_close(full[2:], part)  # sample i does not depend on the batch it is drawn in
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(seeded_noise((2, 3), seed=8, indices=[0])[0], full[0])
    assert per_index_seed(1, 2) != per_index_seed(2, 1)
    big = seeded_noise((20000,), seed=0, indices=[0], std=0.33)
    assert abs(big.std().item() - 0.33) < 0.01


# ---------------------------------------------------------------- checkpoints


def test_save_load_checkpoint_roundtrip(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = save_checkpoint({"net": net, "opt": opt, "extra": {"epoch": 4}}, tmp_path / "sub" / "c.pt")
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left behind
    state = torch.load(path, weights_only=True)
    assert state["extra"] == {"epoch": 4}
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    load_checkpoint(path, {"net": net2, "opt": opt2})
    torch.testing.assert_close(net2.weight, net.weight)
    assert opt2.state_dict()["state"][0]["step"] == 1


def test_load_checkpoint_errors_and_bare_state_dict(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*missing.pt; train first"):
        load_checkpoint(tmp_path / "missing.pt", {"net": net}, missing_hint="train first")
    save_checkpoint({"a": net}, tmp_path / "c.pt")
    with pytest.raises(KeyError, match=r"no entry 'b' in checkpoint \(it has \['a'\]\)"):
        load_checkpoint(tmp_path / "c.pt", {"b": net, "c": net})
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    net2 = torch.nn.Linear(2, 2)
    load_checkpoint(tmp_path / "bare.pt", {"generator": net2})
    torch.testing.assert_close(net2.bias, net.bias)


def test_save_checkpoint_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = save_checkpoint({"x": {"v": 1}}, tmp_path / "c.pt")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"x": {"v": 2}}, path)
    assert torch.load(path, weights_only=True) == {"x": {"v": 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_find_latest_checkpoint(tmp_path):
    assert find_latest_checkpoint(tmp_path / "nope") is None
    assert find_latest_checkpoint(tmp_path) is None
    for name in ["checkpoint_epoch=20.pt", "checkpoint_epoch=100.pt", "checkpoint_epoch=40.pt", "model_final.pt"]:
        save_checkpoint({"w": {"v": torch.ones(3)}}, tmp_path / name)
    (tmp_path / "checkpoint_epoch=999.pt.tmp").write_bytes(b"x")  # an unfinished write is never picked
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=100.pt")
    assert list(list_checkpoints(tmp_path)) == [20, 40, 100]


def test_find_latest_checkpoint_skips_a_truncated_newest(tmp_path, caplog):
    for epoch in (1, 2):
        save_checkpoint({"w": {"v": torch.full((1000,), float(epoch))}}, tmp_path / f"checkpoint_epoch={epoch}.pt")
    newest = tmp_path / "checkpoint_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy that died half-way
    with caplog.at_level("WARNING"):
        assert find_latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=1.pt")
    assert "checkpoint_epoch=2.pt is truncated or corrupt" in caplog.text
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"garbage")
    assert find_latest_checkpoint(tmp_path) is None


# ---------------------------------------------------------------- loss log


def _run_logger(tmp_path, epochs, start_epoch=0):
    """A toy engine whose metric g_loss = epoch * 10 + 1 and d_loss = 2 (as GenerativeTrainer's epoch means)."""
    logger = EpochLossLogger(tmp_path / "losses.csv", keys=("g_loss", "d_loss"))
    engine = Engine(lambda e, b: b)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics.update(g_loss=e.state.epoch * 10 + 1.0, d_loss=torch.tensor([1.0, 3.0]))

    logger.attach(engine)
    if start_epoch:

        @engine.on(Events.STARTED)
        def _resume(e):
            e.state.epoch = start_epoch
            e.state.iteration = start_epoch * 3

    engine.run([0, 1, 2], max_epochs=epochs)
    return logger


def test_epoch_loss_logger_writes_means_and_truncates_on_resume(tmp_path):
    _run_logger(tmp_path, 3)
    log = read_loss_log(tmp_path / "losses.csv")
    np.testing.assert_array_equal(log["epoch"], [1, 2, 3])
    np.testing.assert_allclose(log["g_loss"], [11.0, 21.0, 31.0])
    np.testing.assert_allclose(log["d_loss"], [2.0, 2.0, 2.0])
    # resume from a checkpoint of epoch 1: epochs 2.. are re-run and their old rows replaced, not duplicated
    _run_logger(tmp_path, 4, start_epoch=1)
    log = read_loss_log(tmp_path / "losses.csv")
    np.testing.assert_array_equal(log["epoch"], [1, 2, 3, 4])
    with open(tmp_path / "losses.csv") as f:
        assert next(csv.reader(f)) == ["epoch", "g_loss", "d_loss"]


def test_loss_log_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no loss log at"):
        read_loss_log(tmp_path / "x.csv")
    logger = EpochLossLogger(tmp_path / "l.csv", keys=("g_loss",))
    engine = Engine(lambda e, b: {"loss": 1.0})
    logger.attach(engine)
    with pytest.raises(KeyError, match=r"engine has no metric\(s\) \['g_loss'\]"):
        engine.run([0], max_epochs=1)


# ---------------------------------------------------------------- blow-up detection and selection


def test_rolling_median():
    np.testing.assert_allclose(rolling_median([1, 9, 2, 8, 3], 3), [1, 5, 2, 8, 3])
    with pytest.raises(ValueError, match="window must be >= 1"):
        rolling_median([1.0], 0)


def test_detect_blowup_flat_then_jump():
    rng = np.random.default_rng(0)
    g = 1.0 + 0.02 * rng.standard_normal(100)
    g[70:] += 4.0  # the generator loss jumps at epoch 71
    assert detect_blowup(g) == 71
    assert choose_checkpoint_epoch(range(20, 101, 20), 71) == 60


def test_detect_blowup_never_blows_up():
    rng = np.random.default_rng(1)
    g = 1.0 + 0.1 * rng.standard_normal(300)
    g[[50, 120, 121, 250]] = [4.0, 3.5, 5.0, 6.0]  # isolated spikes (at most 2 in a row) are noise, not a blow-up
    assert detect_blowup(g) is None
    slow = np.linspace(1.0, 1.4, 300) + 0.02 * rng.standard_normal(300)  # slow drift is no blow-up either
    assert detect_blowup(slow) is None
    assert choose_checkpoint_epoch([20, 40, 60], None) == 60


def test_detect_blowup_nan_and_epochs():
    g = np.ones(60)
    g[45] = np.nan
    g[46:] = np.inf
    assert detect_blowup(g, epochs=np.arange(101, 161)) == 146
    with pytest.raises(ValueError, match="differ in length"):
        detect_blowup([1.0, 2.0], epochs=[1])


def test_choose_checkpoint_errors():
    with pytest.raises(ValueError, match="no checkpoints"):
        choose_checkpoint_epoch([], None)
    with pytest.raises(ValueError, match="blows up at epoch 15, before the first checkpoint"):
        choose_checkpoint_epoch([20, 40], 15)


def test_select_checkpoint_on_a_run_folder(tmp_path):
    logger = EpochLossLogger(tmp_path / "losses.csv", keys=("g_loss", "d_loss"))
    rng = np.random.default_rng(2)
    for epoch in range(1, 121):
        g = 0.8 + 0.05 * rng.standard_normal() + (3.0 if epoch >= 87 else 0.0)
        logger.write_row(epoch, {"g_loss": g, "d_loss": 0.5})
    ckpts = tmp_path / "ckpt"
    for epoch in range(20, 121, 20):
        save_checkpoint({"generator": {"w": torch.zeros(1)}}, ckpts / f"checkpoint_epoch={epoch}.pt")
    choice = select_checkpoint(tmp_path / "losses.csv", ckpts)
    assert (choice.epoch, choice.blowup_epoch) == (80, 87)
    assert choice.path == ckpts / "checkpoint_epoch=80.pt"
    assert "blows up at epoch 87" in choice.reason
    with pytest.raises(KeyError, match="no column 'x'"):
        select_checkpoint(tmp_path / "losses.csv", ckpts, key="x")
    with pytest.raises(FileNotFoundError, match="no '\\*_epoch=<n>.pt' checkpoints in"):
        select_checkpoint(tmp_path / "losses.csv", tmp_path / "empty")


def test_non_finite_losses_are_blow_ups_even_in_warm_up():
    assert detect_blowup([np.nan] * 30) == 1  # NaN from the start: flagged, not "no blow-up"
    g = np.ones(80)
    g[3] = np.inf
    assert detect_blowup(g) == 4  # inside the warm-up
    with pytest.raises(ValueError, match="blows up at epoch 1, before the first checkpoint"):
        choose_checkpoint_epoch([20, 40], detect_blowup([np.nan] * 40))
    rng = np.random.default_rng(3)
    g = 1.0 + 0.01 * rng.standard_normal(100)
    g[60:] += 3.0
    g[58] = np.nan  # a NaN just before a real rise is the onset, it does not delay the detection
    assert detect_blowup(g) == 59
