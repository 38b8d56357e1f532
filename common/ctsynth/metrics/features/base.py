"""What every feature network of the evaluation suite shares: the extractor protocol, input checks, batched inference
and weights-file loading with clear reports.

Nothing here downloads: pretrained weights are files the user fetched; without one a pretrained extractor raises
:class:`MissingWeightsError` unless the caller opts into random weights (``allow_random_weights=True``), in which case
the extractor's ``note`` says its numbers are not comparable to published ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = [
    "RANDOM_WEIGHTS_NOTE",
    "FeatureExtractor",
    "LoadReport",
    "MissingWeightsError",
    "PlaneFeatureExtractor",
    "as_volume_batch",
    "batched_inference",
    "describe",
    "extractor_input",
    "load_checkpoint_state_dict",
    "load_state_dict_checked",
    "resolve_weights",
    "seeded_torch_init",
    "strip_prefixes",
]

RANDOM_WEIGHTS_NOTE = "random weights: not comparable to published numbers"


class MissingWeightsError(FileNotFoundError):
    """A pretrained feature network was asked for but its weights file was not given or does not exist."""


@runtime_checkable
class FeatureExtractor(Protocol):
    """A feature network for whole volumes: ``(N, 1, D, H, W)`` tensor in -> ``(N, dim)`` array out."""

    name: str
    dim: int
    note: str | None

    def __call__(self, volumes: torch.Tensor | np.ndarray) -> np.ndarray: ...


def extractor_input(extractor: Any, windowed: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """The input ``extractor`` expects, from the suite's windowed batch (HU clipped to ``window``, scaled to [0, 1]).

    Each extractor owns its input convention through a ``from_windowed(windowed, window)`` method (F3D and Inception:
    the [0, 1] volume; MedicalNet: ``2 x - 1``; RadImageNet: back to HU). An extractor without that method (e.g. one
    a bundle adds) gets the [0, 1] volume.
    """
    convert = getattr(extractor, "from_windowed", None)
    return windowed if convert is None else convert(windowed, window)


@runtime_checkable
class PlaneFeatureExtractor(Protocol):
    """A 2D feature network applied to slices: ``(N, 1, D, H, W)`` in -> ``{plane: (n_slices, dim)}`` out."""

    name: str
    dim: int
    note: str | None
    planes: tuple[str, ...]

    def __call__(self, volumes: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]: ...


def as_volume_batch(volumes: torch.Tensor | np.ndarray, min_size: int = 1) -> torch.Tensor:
    """Check a batch of single-channel volumes and convert it to a float32 tensor.

    Args:
        volumes: (N, 1, D, H, W) tensor or array.
        min_size: smallest allowed spatial edge.

    Returns:
        float32 tensor of shape (N, 1, D, H, W).

    Raises:
        ValueError: on a wrong shape, an empty batch, a too small volume or NaN/inf values.
    """
    x = torch.as_tensor(volumes)
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"volumes must have shape (N, 1, D, H, W), got {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError("volumes is an empty batch.")
    if min(x.shape[2:]) < min_size:
        raise ValueError(f"every spatial edge must be >= {min_size} voxels, got {tuple(x.shape[2:])}.")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("volumes contain NaN or infinite values.")
    return x


def batched_inference(
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Run ``fn`` over ``inputs`` in chunks of ``batch_size`` under ``torch.inference_mode``; concatenate on the CPU.

    Args:
        fn: maps a (B, ...) tensor on ``device`` to (B, F) features.
        inputs: (N, ...) tensor (any device; moved chunk by chunk).
        batch_size: chunk size, bounds the peak memory.
        device: where ``fn`` runs.

    Returns:
        (N, F) float32 NumPy array.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    out = []
    with torch.inference_mode():
        for start in range(0, inputs.shape[0], batch_size):
            chunk = inputs[start : start + batch_size].to(device)
            out.append(fn(chunk).float().cpu().numpy())
    return np.concatenate(out, axis=0)


def resolve_weights(weights: str | Path | None, allow_random_weights: bool, what: str, where: str) -> Path | None:
    """Return the weights path to load, ``None`` for random weights, or raise :class:`MissingWeightsError`.

    Args:
        weights: user-supplied weights file or ``None``.
        allow_random_weights: accept ``weights=None`` (tests, smoke runs; results flagged as not comparable).
        what: the network, for the message (e.g. "MedicalNet ResNet-50").
        where: where the user gets the file (said in the message; nothing is downloaded).
    """
    if weights is None:
        if allow_random_weights:
            return None
        raise MissingWeightsError(
            f"{what} needs a pretrained weights file: pass weights=<path>. {where} "
            "Nothing is downloaded at run time; pass allow_random_weights=True only for smoke tests "
            f"({RANDOM_WEIGHTS_NOTE})."
        )
    path = Path(weights)
    if not path.is_file():
        raise MissingWeightsError(f"{what} weights file not found: {path}. {where}")
    return path


def load_checkpoint_state_dict(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``.

    Args:
        path: ``.pth`` / ``.pt`` file.
        what: the network, for error messages.

    Returns:
        Flat ``{key: tensor}`` dict.

    Raises:
        MissingWeightsError: when the file does not exist.
        ValueError: when the file cannot be read or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{what} weights file not found: {path}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; report them with the file name
        raise ValueError(f"cannot read {what} weights from {path}: {e}") from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors for {what}.")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` (repeatedly, e.g. ``module.``) from the start of every key."""
    prefixes = tuple(prefixes)
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p) :], True
        out[key] = value
    return out


@dataclass
class LoadReport:
    """What :func:`load_state_dict_checked` loaded and what it left out."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing_allowed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors, ignored {len(self.ignored)} "
            f"({', '.join(sorted({k.split('.')[0] for k in self.ignored})) or 'none'}), "
            f"kept {len(self.missing_allowed)} defaults (num_batches_tracked)"
        )


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_dict_checked(
    net: nn.Module,
    state: Mapping[str, torch.Tensor],
    what: str,
    source: str | Path = "state dict",
    ignore_prefixes: Iterable[str] = (),
) -> LoadReport:
    """Load ``state`` into ``net`` after checking keys and shapes, with an error that lists every problem.

    Keys starting with one of ``ignore_prefixes`` (heads the feature network does not use) are skipped; a missing
    ``num_batches_tracked`` buffer is allowed (older checkpoints lack it). Any other missing or unexpected key, or a
    shape mismatch, raises.

    Args:
        net: the network to load into.
        state: ``{key: tensor}`` in ``net``'s key layout.
        what: the network, for error messages.
        source: the file the state came from, for error messages.
        ignore_prefixes: key prefixes to drop.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ValueError: on missing/unexpected keys or shape mismatches.
    """
    ignore_prefixes = tuple(ignore_prefixes)
    own = net.state_dict()
    report = LoadReport()
    kept = {}
    for key, value in state.items():
        if ignore_prefixes and key.startswith(ignore_prefixes):
            report.ignored.append(key)
        else:
            kept[key] = value
    missing = [k for k in own if k not in kept]
    report.missing_allowed = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in kept if k not in own]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs network {tuple(own[k].shape)}"
        for k, v in kept.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise ValueError(f"{source} does not match the {what} layout; " + "; ".join(problems) + ".")
    net.load_state_dict(kept, strict=False)
    report.loaded = list(kept)
    return report


def seeded_torch_init(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Build a module whose default (random) init is seeded, without touching the caller's global torch RNG.

    Used for the random-weights variants of the pretrained networks, so their smoke-test features are repeatable.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def describe(name: str, dim: int, note: str | None, **protocol: Any) -> dict[str, Any]:
    """A JSON-friendly description of an extractor (recorded next to the metric values)."""
    return {"name": name, "dim": dim, "note": note, **protocol}
