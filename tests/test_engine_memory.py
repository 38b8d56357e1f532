"""ctsynth.engines.memory: activation checkpointing that leaves a BatchNorm network as an ordinary step would."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ctsynth.engines import checkpoint_module, held_batchnorm_statistics


def _generator() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 4 * 8 * 8),
        nn.Unflatten(1, (4, 8, 8)),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(4, 3, 4, 2, 1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),
        nn.Conv2d(3, 1, 3, 1, 1),
        nn.Tanh(),
    )


def _saved_bytes(fn) -> tuple[torch.Tensor, int]:
    """Output of ``fn()`` and the bytes autograd saved for the backward pass while it ran."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved[0]


def test_checkpointed_step_equals_plain_step_including_batchnorm_statistics():
    plain, ckpt = _generator().train(), _generator().train()
    z = torch.randn(5, 6)
    for _ in range(2):  # two steps: the running statistics and counters must match after each
        out_plain = plain(z)
        out_ckpt = checkpoint_module(ckpt, z)
        np.testing.assert_allclose(out_ckpt.detach(), out_plain.detach(), atol=1e-6)
        out_plain.square().mean().backward()
        out_ckpt.square().mean().backward()
        for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
            np.testing.assert_allclose(b.grad, a.grad, rtol=1e-5, atol=1e-7, err_msg=name)
        for (name, a), b in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
            assert torch.equal(a, b), name  # updated once per step, not twice
    assert int(ckpt[2].num_batches_tracked) == 2


def test_checkpointing_keeps_only_the_inputs_for_backward():
    z = torch.randn(16, 6)
    _, plain = _saved_bytes(lambda: _generator().train()(z))
    _, ckpt = _saved_bytes(lambda: checkpoint_module(_generator().train(), z))
    assert ckpt < 0.2 * plain, (ckpt, plain)


def test_without_gradients_it_is_a_plain_call():
    net = _generator().eval()
    z = torch.randn(3, 6)
    with torch.no_grad():
        np.testing.assert_array_equal(checkpoint_module(net, z), net(z))


def test_held_batchnorm_statistics_restores_momentum_and_counter():
    net = _generator().train()
    before = copy.deepcopy(net.state_dict())
    with held_batchnorm_statistics(net):
        assert net[2].momentum == 0.0
        net(torch.randn(4, 6))
    assert net[2].momentum == 0.1 and net[5].momentum == 0.1
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
