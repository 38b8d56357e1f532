"""An ignite handler that writes the epoch means of scalar training outputs (e.g. G and D losses) to a CSV file.

TensorBoard logs are for people; this CSV is for code (checkpoint selection reads it). The file is rewritten
atomically at the end of every epoch, and rows from epochs at or after the current one are dropped first,
so a run resumed from an earlier checkpoint does not leave duplicate epochs.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ctsynth.data.io import atomic_write

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EpochLossLogger", "read_loss_log"]


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


def read_loss_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CSV written by :class:`EpochLossLogger`.

    Args:
        path: the CSV file.

    Returns:
        ``{"epoch": int array, <key>: float array, ...}`` sorted by epoch.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file has no ``epoch`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no loss log at {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys()) if rows else []
    if rows and "epoch" not in fields:
        raise ValueError(f"{path}: no 'epoch' column (columns: {fields})")
    rows.sort(key=lambda r: int(r["epoch"]))
    out: dict[str, np.ndarray] = {"epoch": np.array([int(r["epoch"]) for r in rows], dtype=np.int64)}
    for key in fields:
        if key != "epoch":
            out[key] = np.array([float(r[key]) for r in rows], dtype=np.float64)
    return out


class EpochLossLogger:
    """Append the per-epoch mean of scalar engine outputs to a CSV file (``epoch,<key1>,<key2>,...``).

    Args:
        path: destination CSV.
        output_keys: keys of ``engine.state.output`` (a dict) to average over each epoch's iterations.
        output_transform: optional callable mapping ``engine.state.output`` to a dict; default: the output itself.

    Example::

        EpochLossLogger("runs/tumor/losses.csv", output_keys=("g_loss", "d_loss")).attach(trainer)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        output_keys: Sequence[str] = ("g_loss", "d_loss"),
        output_transform: Callable[[Any], dict] | None = None,
    ) -> None:
        self.path = Path(path)
        self.output_keys = tuple(output_keys)
        self.output_transform = output_transform
        self._sums: dict[str, float] = {}
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED`` of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        """Clear the running sums."""
        self._sums = dict.fromkeys(self.output_keys, 0.0)
        self._count = 0

    def update(self, engine: Engine) -> None:
        """Add one iteration's outputs.

        Raises:
            KeyError: when a key is missing from the engine output.
        """
        output = engine.state.output if self.output_transform is None else self.output_transform(engine.state.output)
        if not self._sums:
            self.reset()
        for key in self.output_keys:
            if key not in output:
                raise KeyError(f"EpochLossLogger: engine output has no '{key}' (keys: {sorted(output)})")
            self._sums[key] += _scalar(output[key])
        self._count += 1

    def epoch_means(self) -> dict[str, float]:
        """Means over the iterations seen since the last reset (NaN when none)."""
        n = self._count
        return {k: (self._sums.get(k, 0.0) / n if n else math.nan) for k in self.output_keys}

    def write(self, engine: Engine) -> None:
        """Rewrite the CSV atomically with this epoch's row (only on the main process)."""
        if not _is_main_process():
            return
        self.write_row(int(engine.state.epoch), self.epoch_means())

    def write_row(self, epoch: int, values: dict[str, float]) -> Path:
        """Write one epoch's row, dropping rows of this epoch or later first.

        Args:
            epoch: the epoch number (1-based, as ignite counts).
            values: ``{key: value}`` for every output key.

        Returns:
            The CSV path.
        """
        old = read_loss_log(self.path) if self.path.is_file() else {"epoch": np.zeros(0, dtype=np.int64)}
        keep = old["epoch"] < epoch
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["epoch", *self.output_keys])
        nan = np.full(len(old["epoch"]), np.nan)
        for i in np.flatnonzero(keep):
            writer.writerow([int(old["epoch"][i]), *(repr(float(old.get(k, nan)[i])) for k in self.output_keys)])
        writer.writerow([int(epoch), *(repr(float(values[k])) for k in self.output_keys)])
        text = buf.getvalue()
        return atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, newline=""))
