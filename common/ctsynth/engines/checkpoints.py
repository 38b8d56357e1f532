"""Checkpoint files: atomic writes of state_dicts, safe loading, and finding the latest one in a run folder.

Checkpoints hold ``state_dict`` s only (tensors, numbers, strings, lists, dicts) so that they load with
``torch.load(weights_only=True)``, which never executes code from the file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ctsynth.data.io import atomic_write
from ctsynth.engines.distributed import is_main_process
from ctsynth.engines.networks import DEFINITIONS_KEY, INFO_KEY, network_definition

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "find_latest_checkpoint",
    "is_readable_checkpoint",
    "RNGState",
    "CheckpointHandler",
]

logger = logging.getLogger(__name__)

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


def is_readable_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete torch zip archive (every member's CRC checks out).

    A file cut short by a full disk or a copy that died is caught here without unpickling anything.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def find_latest_checkpoint(directory: str | os.PathLike, pattern: str = DEFAULT_PATTERN) -> str | None:
    """Path of the newest readable checkpoint in a folder, or None when there is none.

    Used to resume training. A newest file that is truncated or corrupt is skipped with a warning, and the previous
    readable one is returned.

    Args:
        directory: folder to scan.
        pattern: see :func:`list_checkpoints`.

    Returns:
        The path as a string, or None.
    """
    found = list_checkpoints(directory, pattern)
    for number in sorted(found, reverse=True):
        if is_readable_checkpoint(found[number]):
            return str(found[number])
        logger.warning("checkpoint %s is truncated or corrupt: skipped, resuming from an earlier one", found[number])
    return None


class RNGState:
    """The random-number state of a process (Python, NumPy, torch CPU and CUDA) as a checkpointable object.

    Saved with each training checkpoint so that a resumed run draws the same shuffles, latents and augmentations as
    an uninterrupted one. Everything is stored as tensors, so the checkpoint still loads with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        """The current states."""
        py_version, py_state, py_gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state = {
            "python": torch.tensor(py_state, dtype=torch.int64),
            "python_version": int(py_version),
            "python_gauss": float("nan") if py_gauss is None else float(py_gauss),
            "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "numpy_pos": int(np_pos),
            "numpy_has_gauss": int(np_has_gauss),
            "numpy_gauss": float(np_gauss),
            "numpy_name": str(np_name),
            "torch": torch.random.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore states saved by :meth:`state_dict` (CUDA states only when CUDA is in use)."""
        gauss = float(state["python_gauss"])
        random.setstate(
            (
                int(state["python_version"]),
                tuple(int(v) for v in state["python"].tolist()),
                None if gauss != gauss else gauss,
            )
        )
        np.random.set_state(
            (
                str(state["numpy_name"]),
                state["numpy_keys"].numpy().astype(np.uint32),
                int(state["numpy_pos"]),
                int(state["numpy_has_gauss"]),
                float(state["numpy_gauss"]),
            )
        )
        torch.random.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])


class CheckpointHandler:
    """Save training checkpoints every ``save_interval`` epochs and at the last epoch; resume from the newest.

    Written for the generator bundles instead of MONAI's ``CheckpointSaver``/``CheckpointLoader`` pair because a
    checkpoint here also carries what inference needs to rebuild the networks (their resolved definitions and run
    info, :mod:`ctsynth.engines.networks`) and the RNG states (an exact resume), resume skips a truncated newest file,
    and the final epoch is always saved whatever the interval. Files are ``<save_dir>/checkpoint_epoch=<n>.pt``,
    written atomically by rank 0 only; every rank loads on resume.

    Args:
        save_dir: checkpoint folder.
        objects: ``{name: object with state_dict/load_state_dict}`` (networks unwrapped from DDP, optimisers, the
            trainer itself, schedulers, ...). An ``"rng"`` entry (:class:`RNGState`) is added unless present.
        network_definitions: ``{role: definition}`` (config components in callable mode, see
            :func:`~ctsynth.engines.networks.network_definition`), stored in every file.
        run_info: JSON-able facts inference checks (e.g. ``{"model": "tumor", "hu_window": [-100, 170]}``).
        save_interval: save every this many epochs (the last epoch is always saved).
        n_saved: keep only the newest ``n_saved`` interval files (None: keep all).
        resume: load the newest readable checkpoint of ``save_dir`` when the trainer starts.
        map_location: device the checkpoint is loaded to.

    Raises:
        ValueError: when ``save_interval`` or ``n_saved`` is below 1.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        objects: Mapping[str, Any],
        network_definitions: Mapping[str, Any] | None = None,
        run_info: Mapping[str, Any] | None = None,
        save_interval: int = 1,
        n_saved: int | None = None,
        resume: bool = True,
        map_location: str | torch.device = "cpu",
    ) -> None:
        if int(save_interval) < 1 or (n_saved is not None and int(n_saved) < 1):
            raise ValueError(f"save_interval and n_saved must be >= 1, got {save_interval} and {n_saved}")
        self.save_dir = Path(save_dir)
        self.objects = dict(objects)
        self.objects.setdefault("rng", RNGState())
        self.definitions = {str(k): network_definition(v) for k, v in (network_definitions or {}).items()}
        self.run_info = json.loads(json.dumps(dict(run_info or {})))
        self.save_interval = int(save_interval)
        self.n_saved = None if n_saved is None else int(n_saved)
        self.resume = bool(resume)
        self.map_location = map_location
        self.resumed_from: str | None = None

    def attach(self, engine: Engine) -> None:
        """Resume on ``STARTED`` (when asked) and save on ``EPOCH_COMPLETED``."""
        from ignite.engine import Events

        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def path_for(self, epoch: int) -> Path:
        """File name of the checkpoint of ``epoch``."""
        return self.save_dir / f"checkpoint_epoch={int(epoch)}.pt"

    def load_latest(self, engine: Engine) -> str | None:
        """Restore every object from the newest readable checkpoint; returns its path (None: fresh start)."""
        path = find_latest_checkpoint(self.save_dir)
        if path is None:
            return None
        max_epochs = engine.state.max_epochs
        state = load_checkpoint(path, self.objects, map_location=self.map_location)
        stored = json.loads(state.get(DEFINITIONS_KEY, "{}"))
        changed = sorted(k for k in self.definitions if k in stored and stored[k] != self.definitions[k])
        if changed:
            raise ValueError(
                f"{path}: cannot resume, the {changed} architecture differs from this config's; use a new output_dir "
                "or the original architecture settings"
            )
        engine.state.max_epochs = max_epochs  # a resumed run may be asked to train longer than the saved one
        engine.state.last_checkpoint = path
        self.resumed_from = path
        logger.info("resumed from %s (epoch %d)", path, engine.state.epoch)
        return path

    def save(self, engine: Engine) -> Path | None:
        """Write this epoch's checkpoint when due (rank 0 only) and prune old ones."""
        epoch = int(engine.state.epoch)
        if epoch % self.save_interval and epoch != engine.state.max_epochs:
            return None
        path = self.path_for(epoch)
        if is_main_process():
            extra = {DEFINITIONS_KEY: json.dumps(self.definitions), INFO_KEY: json.dumps(self.run_info)}
            save_checkpoint({**self.objects, **extra}, path)
            self._prune()
        engine.state.last_checkpoint = str(path)
        return path

    def _prune(self) -> None:
        if self.n_saved is None:
            return
        found = list_checkpoints(self.save_dir)
        for number in sorted(found)[: -self.n_saved]:
            found[number].unlink(missing_ok=True)
