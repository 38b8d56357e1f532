"""The frozen stage-1 autoencoder of stage 2 and of sampling: from this bundle's checkpoint, or old-format weights.

Old format: a plain ``state_dict`` of MONAI Generative 0.2 (e.g. the BraTS LDM bundle's ``model_autoencoder.pt`` that
the thesis reused frozen, Drenth 2024 Fig. 6), loaded with ``AutoencoderKL.load_old_state_dict`` into the network the
config defines.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctsynth.engines import load_network, network_definition, read_checkpoint_info

__all__ = ["load_autoencoder", "autoencoder_definition", "freeze"]


def freeze(network: nn.Module) -> nn.Module:
    """Eval mode and no gradients (a frozen first stage)."""
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network


def load_autoencoder(
    path: str | os.PathLike,
    device: str | torch.device,
    definition: functools.partial | None = None,
    old_format: bool = False,
    in_channels: int | None = None,
    missing_hint: str | None = None,
) -> nn.Module:
    """The frozen autoencoder for stage 2.

    Args:
        path: a stage-1 checkpoint of this bundle (``{"autoencoder": ...}`` with its definition) or, with
            ``old_format``, a plain MONAI Generative ``state_dict``.
        device: device to move it to.
        definition: the config's ``autoencoder_def`` (needed for old-format weights).
        old_format: load ``path`` with ``AutoencoderKL.load_old_state_dict``.
        in_channels: channels the run feeds it (2 in pair mode); checked against the network.
        missing_hint: appended to the message when the file does not exist.

    Returns:
        The autoencoder, frozen, on ``device``.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the network's channels differ from ``in_channels``.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"no autoencoder weights at {path}"
        raise FileNotFoundError(f"{msg}; {missing_hint}" if missing_hint else msg)
    if old_format:
        if definition is None:
            raise ValueError(f"{path}: old-format weights need the autoencoder definition (autoencoder_def)")
        network = definition()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        network.load_old_state_dict(state)
        network = network.to(device)
    else:
        network = load_network(path, "autoencoder", device, missing_hint=missing_hint)
    channels = network.encoder.blocks[0].in_channels if hasattr(network, "encoder") else None
    if in_channels is not None and channels is not None and channels != int(in_channels):
        raise ValueError(
            f"{path}: the autoencoder takes {channels} channel(s) but this run feeds {in_channels} "
            "(pair mode needs an autoencoder trained with --pair_mode true, and image-only runs one trained without)"
        )
    return freeze(network)


def autoencoder_definition(
    path: str | os.PathLike, definition: functools.partial | None = None, old_format: bool = False
) -> dict[str, Any]:
    """The autoencoder's definition to store in stage-2 checkpoints (so sampling needs only that checkpoint).

    Args:
        path: the autoencoder weights given to :func:`load_autoencoder`.
        definition: the config's ``autoencoder_def``.
        old_format: the weights are old-format (the definition is then the config's).

    Returns:
        ``{"_target_": ..., **kwargs}``.
    """
    if not old_format and Path(path).is_file():
        stored = read_checkpoint_info(path)[0].get("autoencoder")
        if stored is not None:
            return stored
    if definition is None:
        raise ValueError(f"{path}: stores no autoencoder definition; give autoencoder_def")
    return network_definition(definition)
