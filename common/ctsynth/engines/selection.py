"""Checkpoint selection by the 3DGAUnet rule: keep the last checkpoint saved before the generator loss blows up.

The paper picks the epoch "before the loss drastically increases" by eye. Automated here as:

1. smooth the per-epoch G loss with a trailing rolling median of ``window`` epochs (a single spike cannot move
   a median of 5, a sustained rise can);
2. for every epoch ``t`` past ``warmup``, take the raw losses of up to ``baseline_window`` epochs that end just
   before the smoothing window as the reference; its median is the baseline and 1.4826 * MAD a robust SD;
3. a blow-up is the first ``t`` whose smoothed loss exceeds ``baseline + max(k * SD, min_rel_increase * |baseline|)``
   (the relative floor keeps a nearly flat curve, whose MAD is ~0, from firing on tiny wiggles);
   its onset is the first epoch inside that smoothing window whose raw loss is above the threshold;
4. the selected checkpoint is the last one saved at an epoch strictly before the onset, or the last checkpoint when
   there is no blow-up.

A non-finite loss (NaN, inf) is a blow-up at its epoch, warm-up included (a run that is NaN from the start is
flagged at epoch 1, and a NaN spike is the onset itself rather than a gap that delays detection).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctsynth.engines.checkpoints import list_checkpoints
from ctsynth.engines.loss_log import read_loss_log

__all__ = ["rolling_median", "detect_blowup", "CheckpointChoice", "choose_checkpoint_epoch", "select_checkpoint"]

MAD_TO_SD = 1.4826  # MAD of a normal distribution times this = its standard deviation


def rolling_median(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing rolling median: ``out[t] = median(values[max(0, t - window + 1): t + 1])``.

    Args:
        values: 1D sequence.
        window: number of values in each median (>= 1).

    Returns:
        Array of the same length.

    Raises:
        ValueError: when ``window < 1``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = np.asarray(values, dtype=np.float64)
    return np.array([np.median(x[max(0, t - window + 1) : t + 1]) for t in range(len(x))])


def detect_blowup(
    losses: Sequence[float] | np.ndarray,
    epochs: Sequence[int] | np.ndarray | None = None,
    window: int = 5,
    baseline_window: int = 50,
    k: float = 6.0,
    min_rel_increase: float = 0.5,
    warmup: int = 20,
) -> int | None:
    """Epoch at which a loss curve blows up (see the module docstring), or None.

    Args:
        losses: per-epoch loss values in epoch order.
        epochs: epoch numbers of ``losses`` (default ``1..n``).
        window: width of the trailing rolling median.
        baseline_window: maximum number of reference epochs before the smoothing window.
        k: number of robust SDs above the baseline that counts as a blow-up.
        min_rel_increase: minimum rise relative to ``|baseline|`` that counts as a blow-up.
        warmup: number of leading epochs never tested (GAN losses settle first); at least ``window`` reference
            epochs are always required.

    Returns:
        The onset epoch, or None when the curve never blows up.

    Raises:
        ValueError: when ``epochs`` and ``losses`` differ in length.
    """
    x = np.asarray(losses, dtype=np.float64)
    ep = np.arange(1, len(x) + 1) if epochs is None else np.asarray(epochs, dtype=np.int64)
    if len(ep) != len(x):
        raise ValueError(f"epochs ({len(ep)}) and losses ({len(x)}) differ in length")
    # a non-finite loss is a blow-up wherever it appears (warm-up included): the weights after it are unusable
    bad = np.flatnonzero(~np.isfinite(x))
    first_bad = int(bad[0]) if bad.size else len(x)
    x = x[:first_bad]
    smoothed = rolling_median(x, window)
    for t in range(max(warmup, 0), len(x)):
        hi = t - window + 1  # reference ends before the smoothing window
        lo = max(0, hi - baseline_window)
        if hi - lo < max(window, 2):
            continue
        ref = x[lo:hi]
        base = float(np.median(ref))
        sd = MAD_TO_SD * float(np.median(np.abs(ref - base)))
        threshold = base + max(k * sd, min_rel_increase * abs(base))
        if smoothed[t] > threshold:
            above = np.flatnonzero(x[hi : t + 1] > threshold)
            return int(ep[hi + int(above[0])])
    return int(ep[first_bad]) if bad.size else None


@dataclass(frozen=True)
class CheckpointChoice:
    """The selected checkpoint and why.

    Attributes:
        epoch: epoch of the selected checkpoint.
        path: its file (None when chosen from epoch numbers only).
        blowup_epoch: onset of the blow-up, or None.
        reason: one sentence for logs and reports.
    """

    epoch: int
    path: Path | None
    blowup_epoch: int | None
    reason: str


def choose_checkpoint_epoch(checkpoint_epochs: Iterable[int], blowup_epoch: int | None) -> int:
    """The last checkpoint epoch strictly before ``blowup_epoch`` (the last one when it is None).

    Args:
        checkpoint_epochs: epochs at which checkpoints exist.
        blowup_epoch: onset of the blow-up or None.

    Returns:
        The chosen epoch.

    Raises:
        ValueError: when there is no checkpoint, or none before the blow-up.
    """
    saved = sorted(int(e) for e in checkpoint_epochs)
    if not saved:
        raise ValueError("no checkpoints to choose from")
    if blowup_epoch is None:
        return saved[-1]
    before = [e for e in saved if e < blowup_epoch]
    if not before:
        raise ValueError(
            f"the generator loss blows up at epoch {blowup_epoch}, before the first checkpoint (epoch {saved[0]}); "
            "save checkpoints more often or retrain with a lower learning rate"
        )
    return before[-1]


def select_checkpoint(
    loss_log: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    key: str = "g_loss",
    **detector_kwargs: float,
) -> CheckpointChoice:
    """Apply the rule to a training run: the loss CSV of :class:`~ctsynth.engines.EpochLossLogger` and its checkpoints.

    Args:
        loss_log: the CSV with an ``epoch`` column and ``key``.
        checkpoint_dir: folder with ``*_epoch=<n>.pt`` checkpoints.
        key: the loss column to watch (the generator loss).
        detector_kwargs: options of :func:`detect_blowup` (window, baseline_window, k, min_rel_increase, warmup).

    Returns:
        The :class:`CheckpointChoice`.

    Raises:
        FileNotFoundError: when the log is missing or the folder holds no checkpoint.
        KeyError: when ``key`` is not a column of the log.
    """
    log = read_loss_log(loss_log)
    if key not in log:
        raise KeyError(f"{loss_log}: no column '{key}' (columns: {sorted(log)})")
    found = list_checkpoints(checkpoint_dir)
    if not found:
        raise FileNotFoundError(f"no '*_epoch=<n>.pt' checkpoints in {checkpoint_dir}")
    blowup = detect_blowup(log[key], log["epoch"], **detector_kwargs)  # type: ignore[arg-type]
    epoch = choose_checkpoint_epoch(found, blowup)
    if blowup is None:
        reason = f"no blow-up of '{key}' in {len(log['epoch'])} logged epochs: last checkpoint (epoch {epoch})"
    else:
        reason = f"'{key}' blows up at epoch {blowup}: last checkpoint before it (epoch {epoch})"
    return CheckpointChoice(epoch=epoch, path=found[epoch], blowup_epoch=blowup, reason=reason)
