"""The training engine every generator bundle builds on: MONAI's :class:`monai.engines.Trainer` with named networks
and named optimisers, where a bundle writes only ``train_step(batch) -> {loss name: scalar}``.

What the base class does so that each method's step reads on one screen:

- :meth:`GenerativeTrainer.update` - zero-grad, backward (with AMP scaling), optional gradient clipping, step;
- :meth:`GenerativeTrainer.frozen` - no gradients for the named networks (a discriminator during a generator step),
  DDP-safe;
- :meth:`GenerativeTrainer.autocast` - bf16 or fp16 autocast from one switch (``amp``), with a ``GradScaler`` per
  optimiser for fp16;
- :meth:`GenerativeTrainer.agree` / :meth:`GenerativeTrainer.mean_over_ranks` - rank-consistent decisions, so gated
  or skipped updates never diverge across DDP ranks;
- the epoch means of the step's losses land in ``engine.state.metrics`` (ignite ``Average`` metrics, averaged over
  ranks), so MONAI's ``StatsHandler``, ``TensorBoardStatsHandler`` and ``MetricsSaver`` work unchanged;
- training stops at the first non-finite loss with a message naming the iteration and the last good checkpoint;
- iteration-counted methods set ``epoch_length`` (one "epoch" = that many iterations; the loader is restarted when
  it runs out).

Losses that need networks (a gradient penalty, two critics, an encoder loss) are written in ``train_step`` with the
networks at hand (``self.networks[...]``); the shared ones are in :mod:`ctsynth.engines.losses`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from ignite.metrics import Average
from monai.engines import Trainer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ctsynth.engines.distributed import all_ranks_agree, get_world_size, is_distributed

__all__ = ["GenerativeTrainer", "NonFiniteLossError", "prepare_dict_batch", "unwrap"]

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the message names the iteration and the last good checkpoint."""


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (the network itself otherwise)."""
    return network.module if isinstance(network, (DistributedDataParallel, nn.DataParallel)) else network


def prepare_dict_batch(
    batchdata: Mapping[str, Any] | torch.Tensor | Sequence,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """``prepare_batch`` of :class:`GenerativeTrainer`: every tensor of a dict batch moved to ``device``.

    MetaTensors become plain tensors (their metadata is not needed for a training step and slows every op down).
    A tensor batch becomes ``{"image": tensor}``; a list/tuple batch ``{"image": batch[0], "label": batch[1]}``.

    Args:
        batchdata: a collated batch from a MONAI ``DataLoader``.
        device: target device.
        non_blocking: passed to ``Tensor.to``.
        kwargs: other ``Tensor.to`` arguments.

    Returns:
        A new dict; non-tensor entries (file names, metadata dicts) are kept as they are.
    """
    if isinstance(batchdata, torch.Tensor):
        batchdata = {"image": batchdata}
    elif isinstance(batchdata, (list, tuple)):
        batchdata = dict(zip(("image", "label"), batchdata, strict=False))
    out: dict[str, Any] = {}
    for key, value in batchdata.items():
        if isinstance(value, torch.Tensor):
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            value = value.to(device=device, non_blocking=non_blocking, **kwargs)
        out[key] = value
    return out


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


class GenerativeTrainer(Trainer):
    """A MONAI trainer for generative models with several named networks and optimisers.

    Subclasses implement :meth:`train_step`; the constructor stays the same for every method, so configs read alike:
    ``networks`` and ``optimizers`` name what the step uses, ``loss_keys`` name what it returns.

    Args:
        device: device of the networks and batches.
        max_epochs: number of epochs (for iteration-counted methods: ``ceil(iterations / epoch_length)``).
        train_data_loader: the training ``DataLoader``.
        networks: ``{role: module}``, e.g. ``{"generator": G, "discriminator": D}`` (modules may be DDP-wrapped).
        optimizers: ``{role: optimizer}``; the names are those given to :meth:`update`.
        loss_keys: names of the scalars :meth:`train_step` returns; each gets an epoch-mean metric in
            ``engine.state.metrics``. Default: the class attribute ``LOSS_KEYS``.
        epoch_length: iterations per epoch (default: the loader's length).
        prepare_batch: ``(batch, device, non_blocking, **to_kwargs) -> batch`` (default :func:`prepare_dict_batch`).
        amp: mixed precision: None (fp32), ``"bf16"`` (autocast to bfloat16, no scaler) or ``"fp16"`` (autocast to
            float16 with a ``GradScaler`` per optimiser).
        grad_clip: maximum gradient norm: one number for every optimiser, ``{name: norm}`` per optimiser, or None.
        train_handlers: MONAI/ignite handlers, attached after the loss metrics (so their epoch means are ready
            when ``StatsHandler`` and loggers read ``engine.state.metrics``).
        non_blocking: passed to ``prepare_batch``.
        to_kwargs: other ``Tensor.to`` arguments for ``prepare_batch``.
        check_finite: stop at the first non-finite loss (:class:`NonFiniteLossError`).

    Raises:
        ValueError: for an unknown ``amp`` value, an optimiser name in ``grad_clip`` that is not in ``optimizers``,
            or no loss keys.
    """

    LOSS_KEYS: tuple[str, ...] = ()

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        networks: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        loss_keys: Sequence[str] | None = None,
        epoch_length: int | None = None,
        prepare_batch: Callable = prepare_dict_batch,
        amp: str | None = None,
        grad_clip: float | Mapping[str, float] | None = None,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        to_kwargs: dict | None = None,
        check_finite: bool = True,
    ) -> None:
        amp_key = None if amp in (None, False, "none", "fp32", "") else str(amp).lower()
        if amp_key is not None and amp_key not in AMP_DTYPES:
            raise ValueError(f"amp must be one of None, 'bf16', 'fp16', got '{amp}'")
        clip = grad_clip if isinstance(grad_clip, Mapping) else dict.fromkeys(optimizers, grad_clip)
        unknown = set(clip) - set(optimizers)
        if unknown:
            raise ValueError(f"grad_clip names optimisers {sorted(unknown)} that are not in {sorted(optimizers)}")
        keys = tuple(loss_keys) if loss_keys is not None else tuple(self.LOSS_KEYS)
        if not keys:
            raise ValueError(f"{type(self).__name__} needs loss_keys (the names of the losses train_step returns)")
        super().__init__(
            device=device,
            max_epochs=int(max_epochs),
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=None,
            amp=False,
            decollate=False,
            to_kwargs=to_kwargs,
        )
        self.networks = dict(networks)
        self.optimizers = dict(optimizers)
        self.loss_keys = keys
        self.amp_dtype = AMP_DTYPES.get(amp_key) if amp_key else None
        self.grad_clip = {k: (None if v is None else float(v)) for k, v in clip.items()}
        self.check_finite = bool(check_finite)
        device_type = torch.device(device).type
        self.scalers = (
            {name: torch.amp.GradScaler(device_type) for name in self.optimizers}
            if self.amp_dtype is torch.float16
            else {}
        )
        for key in self.loss_keys:
            Average(output_transform=lambda out, k=key: out[k], device="cpu").attach(self, key)
        if train_handlers:
            self._register_handlers(train_handlers)

    # ------------------------------------------------------------------ what a bundle writes
    def train_step(self, batch: dict[str, Any]) -> Mapping[str, float | torch.Tensor]:
        """One training iteration of the method.

        Args:
            batch: the output of ``prepare_batch`` (a dict of tensors on ``self.state.device``).

        Returns:
            ``{loss name: scalar}`` with every name of ``loss_keys`` (more entries are logged per iteration only).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement train_step(batch)")

    # ------------------------------------------------------------------ helpers for train_step
    def autocast(self) -> torch.autocast:
        """Autocast context for forward passes: bf16/fp16 as configured by ``amp``, disabled for fp32."""
        return torch.autocast(
            device_type=torch.device(self.state.device).type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def update(
        self,
        optimizer: str,
        loss: torch.Tensor | Sequence[Callable[[], torch.Tensor]],
        retain_graph: bool = False,
    ) -> torch.Tensor:
        """Zero the optimiser's gradients, back-propagate ``loss``, clip, step.

        Only the parameters of this optimiser are zeroed; freeze the other networks (:meth:`frozen`) when the loss
        also depends on them, so no gradient is computed for them at all.

        ``loss`` may also be a sequence of loss terms given as zero-argument callables (for example the gradient
        penalty and the adversarial term of a critic): each term is built and back-propagated before the next one is
        built, so only one term's graph is in memory at a time. The gradients, and the value returned, are those of
        the terms' sum. Under DDP every term but the last is built and back-propagated with the networks' gradient
        synchronisation off (``no_sync``: the gradients accumulate locally) and the last term's backward pass
        all-reduces the accumulated sum, so the last term must reach every parameter the update trains (an
        adversarial term does; a gradient penalty does not reach the critic's output bias).

        Args:
            optimizer: name in ``optimizers``.
            loss: scalar loss (in autocast precision is fine: it is scaled for fp16), or loss terms as callables.
            retain_graph: keep the graph for a second backward pass through it.

        Returns:
            The loss (the terms' sum), detached.

        Raises:
            KeyError: for an unknown optimiser name.
            ValueError: for an empty sequence of terms.
        """
        if optimizer not in self.optimizers:
            raise KeyError(f"no optimiser '{optimizer}' (known: {sorted(self.optimizers)})")
        terms = [lambda: loss] if isinstance(loss, torch.Tensor) else list(loss)
        if not terms:
            raise ValueError(f"update('{optimizer}'): no loss terms to back-propagate")
        opt = self.optimizers[optimizer]
        scaler = self.scalers.get(optimizer)
        opt.zero_grad(set_to_none=True)
        total: torch.Tensor | None = None
        for index, build_term in enumerate(terms):
            with ExitStack() as stack:
                if index < len(terms) - 1:
                    for net in self.networks.values():
                        if isinstance(net, DistributedDataParallel):
                            stack.enter_context(net.no_sync())
                term = build_term()
                (scaler.scale(term) if scaler is not None else term).backward(retain_graph=retain_graph)
            total = term.detach() if total is None else total + term.detach()
        max_norm = self.grad_clip.get(optimizer)
        if max_norm is not None:
            if scaler is not None:
                scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return total

    @contextmanager
    def frozen(self, *names: str) -> Iterator[None]:
        """No gradients for the named networks inside the block (``requires_grad`` off, restored afterwards).

        A DDP-wrapped network is also run under ``no_sync()``, so its reducer does not wait for gradients that will
        never come (which would otherwise fail at its next forward pass).

        Args:
            names: roles in ``networks``.

        Raises:
            KeyError: for an unknown network name.
        """
        unknown = [n for n in names if n not in self.networks]
        if unknown:
            raise KeyError(f"no network(s) {unknown} (known: {sorted(self.networks)})")
        saved: list[tuple[torch.nn.Parameter, bool]] = []
        with ExitStack() as stack:
            for name in names:
                net = self.networks[name]
                if isinstance(net, DistributedDataParallel):
                    stack.enter_context(net.no_sync())
                for p in net.parameters():
                    saved.append((p, p.requires_grad))
                    p.requires_grad_(False)
            try:
                yield
            finally:
                for p, flag in saved:
                    p.requires_grad_(flag)

    def agree(self, flag: bool, mode: str = "all") -> bool:
        """One decision for every DDP rank (see :func:`ctsynth.engines.distributed.all_ranks_agree`)."""
        return all_ranks_agree(flag, mode)

    def mean_over_ranks(self, value: float) -> float:
        """The mean of a per-rank number over all DDP ranks (the number itself in one process)."""
        if not is_distributed():
            return float(value)
        device = torch.device(self.state.device)
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / get_world_size()

    # ------------------------------------------------------------------ engine plumbing
    def _iteration(self, engine: GenerativeTrainer, batchdata: Any) -> dict[str, float]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        losses = engine.train_step(batch)
        missing = [k for k in engine.loss_keys if k not in losses]
        if missing:
            raise KeyError(f"{type(engine).__name__}.train_step returned no {missing} (it returned {sorted(losses)})")
        out = {str(k): _as_float(v) for k, v in losses.items()}
        if engine.check_finite:
            engine._raise_if_not_finite(out)
        return out

    def _raise_if_not_finite(self, losses: Mapping[str, float]) -> None:
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if self.agree(not bad, "all"):
            return
        last = getattr(self.state, "last_checkpoint", None)
        values = ", ".join(f"{k}={v}" for k, v in bad.items()) or "a loss on another rank"
        raise NonFiniteLossError(
            f"non-finite training loss at iteration {self.state.iteration} (epoch {self.state.epoch}): {values}. "
            f"Training stopped; the last good checkpoint is {last or 'none (none saved yet)'}. Check the inputs "
            "for NaN/inf (ctsynth validate), lower the learning rates, or turn AMP off (--amp None)."
        )
