"""Checkpoint files: atomic writes of state_dicts, safe loading, and finding the latest one in a run folder.

Checkpoints hold ``state_dict`` s only (tensors, numbers, strings, lists, dicts) so that they load with
``torch.load(weights_only=True)``, which never executes code from the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ctsynth.data.io import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "list_checkpoints", "find_latest_checkpoint"]

# ignite's Checkpoint names interval saves "<prefix>_checkpoint_epoch=<n>.pt"; CheckpointSaver with
# epoch_level=False writes "iteration=<n>".
DEFAULT_PATTERN = r"epoch=(\d+)\.pth?$"


def _to_state(obj: Any) -> Any:
    return obj.state_dict() if hasattr(obj, "state_dict") and callable(obj.state_dict) else obj


def save_checkpoint(objects: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save ``{name: state_dict}`` atomically: write a temporary file in the same folder, then rename.

    A crash during the write leaves either the previous file or no file, never a truncated one.

    Args:
        objects: names mapped to modules/optimizers/engines (their ``state_dict()`` is saved) or to
            plain state dicts.
        path: destination file.

    Returns:
        The written path.
    """
    state = {str(k): _to_state(v) for k, v in objects.items()}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(
    path: str | os.PathLike,
    objects: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    missing_hint: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and optionally restore it into objects.

    A file holding a bare state_dict (no names) is accepted when ``objects`` has exactly one entry.

    Args:
        path: checkpoint file.
        objects: names mapped to objects with ``load_state_dict``; each name must be in the file.
        map_location: passed to ``torch.load``.
        strict: passed to ``load_state_dict`` of modules.
        missing_hint: appended to the error message when the file does not exist (e.g. how to train).

    Returns:
        The loaded dictionary.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        KeyError: when a requested name is not in the file (the message lists the names it has).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"no checkpoint file at {path}"
        raise FileNotFoundError(f"{msg}; {missing_hint}" if missing_hint else msg)
    state = torch.load(path, map_location=map_location, weights_only=True)
    if objects:
        if len(objects) == 1 and not (isinstance(state, Mapping) and next(iter(objects)) in state):
            state = {next(iter(objects)): state}
        for name, obj in objects.items():
            if name not in state:
                raise KeyError(f"{path}: no entry '{name}' in checkpoint (it has {sorted(state)})")
            if isinstance(obj, torch.nn.Module):
                obj.load_state_dict(state[name], strict=strict)
            else:
                obj.load_state_dict(state[name])
    return state


def list_checkpoints(directory: str | os.PathLike, pattern: str = DEFAULT_PATTERN) -> dict[int, Path]:
    """Checkpoints of a run folder indexed by the number in their name.

    Args:
        directory: folder to scan (not recursive); a missing folder gives an empty dict.
        pattern: regular expression with one group capturing the epoch (or iteration) number.

    Returns:
        ``{number: path}`` sorted by number.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    regex = re.compile(pattern)
    found: dict[int, Path] = {}
    for p in directory.iterdir():
        m = regex.search(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def find_latest_checkpoint(directory: str | os.PathLike, pattern: str = DEFAULT_PATTERN) -> str | None:
    """Path of the checkpoint with the highest epoch number in a folder, or None when there is none.

    Used by training configs to resume: ``CheckpointLoader`` is enabled only when this returns a path.

    Args:
        directory: folder to scan.
        pattern: see :func:`list_checkpoints`.

    Returns:
        The path as a string, or None.
    """
    found = list_checkpoints(directory, pattern)
    return str(found[max(found)]) if found else None
