"""Network definitions that travel with checkpoints, so inference rebuilds the trained architecture by itself.

A bundle config declares each network by role as a MONAI config component in callable mode::

    "generator_def": {"_target_": "scripts.networks.UNetGenerator3D", "_mode_": "callable", "spatial_size": 32, ...},
    "generator": "$@generator_def().to(@device)"

``@generator_def`` is then a ``functools.partial`` whose arguments are fully resolved (every ``@`` reference and
``--override`` applied). :func:`network_definition` turns it into ``{"_target_": ..., **kwargs}`` (JSON), the
checkpoint handler stores that beside the weights, and :func:`load_network` rebuilds the network from a checkpoint
alone: a user never repeats architecture overrides at inference.

Rebuilding calls a class named in a file, so only ``torch.nn.Module`` subclasses from trusted packages are allowed
(:data:`ALLOWED_PREFIXES`: the bundle's own ``scripts``, ``monai.networks``, ``ctsynth``, ``torch.nn``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import
from torch import nn

__all__ = [
    "ALLOWED_PREFIXES",
    "network_definition",
    "build_network",
    "read_checkpoint_info",
    "read_run_info",
    "load_network",
    "check_finite_state",
]

ALLOWED_PREFIXES = ("scripts.", "monai.networks.", "ctsynth.", "torch.nn.")
DEFINITIONS_KEY = "network_definitions"
INFO_KEY = "run_info"


def _target_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    raise TypeError(f"{where}: argument of type {type(value).__name__} cannot be stored with a checkpoint ({value!r})")


def network_definition(definition: Any) -> dict[str, Any]:
    """A JSON-able ``{"_target_": "module.Class", **kwargs}`` for a network definition.

    Args:
        definition: a ``functools.partial`` of an ``nn.Module`` class (a config component with
            ``"_mode_": "callable"``), or an already JSON-able dict with ``_target_``.

    Returns:
        The definition as a plain dict.

    Raises:
        TypeError: when ``definition`` is neither, or an argument is not JSON-able (tensors, modules).
    """
    if isinstance(definition, Mapping):
        if "_target_" not in definition:
            raise TypeError(f"a network definition dict needs '_target_', got keys {sorted(definition)}")
        return {str(k): _jsonable(v, str(definition["_target_"])) for k, v in definition.items()}
    if isinstance(definition, functools.partial):
        if definition.args:
            raise TypeError(f"{_target_name(definition.func)}: give network arguments by name, not by position")
        target = _target_name(definition.func)
        return {"_target_": target, **{k: _jsonable(v, target) for k, v in definition.keywords.items()}}
    raise TypeError(
        "a network definition must be a config component with '_mode_': 'callable' (a functools.partial) or a dict "
        f"with '_target_', got {type(definition).__name__}"
    )


def build_network(definition: Mapping[str, Any], source: str = "definition") -> nn.Module:
    """Instantiate a network from :func:`network_definition`'s dict.

    Args:
        definition: ``{"_target_": "module.Class", **kwargs}``.
        source: where the definition comes from (for error messages, e.g. the checkpoint path).

    Returns:
        The new network (on the CPU, in train mode).

    Raises:
        ValueError: when the target is not under :data:`ALLOWED_PREFIXES`, cannot be imported, or is not an
            ``nn.Module`` subclass.
    """
    kwargs = dict(definition)
    target = str(kwargs.pop("_target_", ""))
    if not target.startswith(ALLOWED_PREFIXES):
        raise ValueError(
            f"{source}: refusing to build network '{target}': only classes under {', '.join(ALLOWED_PREFIXES)} are "
            "rebuilt from a checkpoint"
        )
    module_name, _, attr = target.rpartition(".")
    module, found = optional_import(module_name)
    cls = getattr(module, attr, None) if found else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{source}: '{target}' is not an importable torch.nn.Module class")
    return cls(**kwargs)


def read_checkpoint_info(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, Any], dict[str, Any]]:
    """Load a checkpoint (weights only) and split it into definitions, run info and state dicts.

    Args:
        path: checkpoint file written by :class:`~ctsynth.engines.CheckpointHandler` (or a plain
            ``{name: state_dict}`` file, which has no definitions).

    Returns:
        ``(definitions, run_info, state)``.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file cannot be read as a weights-only checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # read lazily: run info is cheap
    except Exception as e:  # truncated zip, pickled code refused by weights_only, not a torch file
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a dict of state dicts, found {type(state).__name__}")
    definitions = json.loads(state[DEFINITIONS_KEY]) if DEFINITIONS_KEY in state else {}
    info = json.loads(state[INFO_KEY]) if INFO_KEY in state else {}
    return definitions, info, dict(state)


def read_run_info(path: str | os.PathLike) -> dict[str, Any]:
    """The run info stored in a checkpoint (model kind, HU window, spacing, ...); ``{}`` when the file does not exist.

    Inference configs read their defaults from it; a missing file is reported later, by :func:`load_network`, with
    the hint on how to train.

    Args:
        path: checkpoint file.

    Returns:
        The run info dict.
    """
    return read_checkpoint_info(path)[1] if Path(path).is_file() else {}


def check_finite_state(state: Mapping[str, Any], source: str) -> None:
    """Raise when a state dict holds a NaN or infinite floating-point tensor.

    Args:
        state: a (nested) state dict.
        source: file and entry for the message.

    Raises:
        ValueError: naming the first non-finite tensor.
    """
    for key, value in state.items():
        if isinstance(value, Mapping):
            check_finite_state(value, f"{source}.{key}")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{source}.{key} holds NaN or infinite values: the model diverged; pick an earlier one")


def load_network(
    path: str | os.PathLike,
    role: str,
    device: str | torch.device = "cpu",
    definition: Mapping[str, Any] | functools.partial | None = None,
    expect: Mapping[str, Any] | None = None,
    eval_mode: bool = True,
    missing_hint: str | None = None,
) -> nn.Module:
    """Rebuild the network of ``role`` from a training checkpoint and load its weights.

    Args:
        path: checkpoint with ``{role: state_dict}`` and, when written by the training configs, the definitions.
        role: e.g. ``"generator"``.
        device: device to move the network to.
        definition: used only when the checkpoint stores no definition (weights exported elsewhere); when both
            exist they must agree.
        expect: run-info values this run requires, e.g. ``{"model": "tumor"}``; a mismatch raises.
        eval_mode: put the network in eval mode.
        missing_hint: appended to the message when the file does not exist (how to train or select weights).

    Returns:
        The network on ``device``.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the checkpoint was trained for another model or architecture than expected, has no
            definition and none is given, or holds non-finite weights.
        KeyError: when the checkpoint has no entry ``role``.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"no checkpoint file at {path}"
        raise FileNotFoundError(f"{msg}; {missing_hint}" if missing_hint else msg)
    definitions, info, state = read_checkpoint_info(path)
    for key, wanted in (expect or {}).items():
        if key in info and info[key] != wanted:
            raise ValueError(
                f"{path} was trained with {key}={info[key]!r}, but this run asks for {key}={wanted!r}: use a "
                f"checkpoint of that {key}, or pass --{key} {info[key]}"
            )
    if role not in state:
        raise KeyError(f"{path}: no '{role}' entry (it has {sorted(k for k in state if k not in (DEFINITIONS_KEY,))})")
    given = network_definition(definition) if definition is not None else None
    stored = definitions.get(role)
    if stored is not None and given is not None and stored != given:
        diff = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
        raise ValueError(
            f"{path}: the {role} was trained with another architecture than this config defines (differs in {diff}: "
            f"checkpoint {[stored.get(k) for k in diff]} vs config {[given.get(k) for k in diff]}); drop the "
            "architecture overrides (the checkpoint's definition is used) or use the matching checkpoint"
        )
    chosen = stored or given
    if chosen is None:
        raise ValueError(f"{path} stores no definition of the {role}; give its definition (network_def) explicitly")
    check_finite_state(state[role], f"{path}:{role}")
    network = build_network(chosen, source=str(path))
    network.load_state_dict(state[role])
    network = network.to(device)
    return network.eval() if eval_mode else network
