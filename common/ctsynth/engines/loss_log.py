"""An ignite handler that writes the epoch means of scalar training outputs (e.g. G and D losses) to a CSV file.

TensorBoard logs are for people; this CSV is for code (checkpoint selection reads it). The file is rewritten
atomically at the end of every epoch, and rows from epochs at or after the current one are dropped first,
so a run resumed from an earlier checkpoint does not leave duplicate epochs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ctsynth.data.io import atomic_write
from ctsynth.engines.distributed import is_main_process as _is_main_process

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EpochLossLogger", "read_loss_log"]


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
    """Write the epoch means of the training losses (``engine.state.metrics``) to a CSV (``epoch,<key1>,...``).

    :class:`~ctsynth.engines.GenerativeTrainer` puts the epoch mean of every loss of its ``train_step`` into
    ``engine.state.metrics`` (averaged over DDP ranks); this handler only writes them, on rank 0.

    Args:
        path: destination CSV.
        keys: metric names to write (default: every metric of the engine, in its order).

    Example::

        EpochLossLogger("runs/tumor/losses.csv", keys=("g_loss", "d_loss")).attach(trainer)
    """

    def __init__(self, path: str | os.PathLike, keys: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.keys = None if keys is None else tuple(keys)

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_COMPLETED`` of ``engine`` (after its metrics, which are attached at construction)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Rewrite the CSV atomically with this epoch's row (only on the main process).

        Raises:
            KeyError: when a requested key is not a metric of the engine.
        """
        metrics = engine.state.metrics
        keys = self.keys if self.keys is not None else tuple(metrics)
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise KeyError(f"EpochLossLogger: engine has no metric(s) {missing} (metrics: {sorted(metrics)})")
        if _is_main_process():
            self.write_row(int(engine.state.epoch), {k: _scalar(metrics[k]) for k in keys})

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
        keys = list(values)
        writer.writerow(["epoch", *keys])
        nan = np.full(len(old["epoch"]), np.nan)
        for i in np.flatnonzero(keep):
            writer.writerow([int(old["epoch"][i]), *(repr(float(old.get(k, nan)[i])) for k in keys)])
        writer.writerow([int(epoch), *(repr(float(values[k])) for k in keys)])
        text = buf.getvalue()
        return atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, newline=""))
