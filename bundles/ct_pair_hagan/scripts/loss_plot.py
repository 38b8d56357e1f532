"""Loss curves of a training run smoothed as in the thesis (Guttulsrud 2023, Eq. 16: EMA[t] = a loss[t] + (1 - a)
EMA[t-1], a = 0.001), read from the run's TensorBoard per-iteration scalars.

Usage (from the bundle folder)::

    python -m scripts.loss_plot --run_dir runs/hagan_128 --out runs/hagan_128/losses_ema.png [--alpha 0.001]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["ema", "plot_losses", "read_iteration_losses"]

LOSSES = ("d_loss", "d_real", "d_fake", "g_loss", "e_loss", "sub_e_loss")


def ema(values: Sequence[float], alpha: float = 0.001) -> np.ndarray:
    """Exponential moving average ``EMA[t] = alpha x[t] + (1 - alpha) EMA[t-1]``, ``EMA[0] = x[0]``.

    Raises:
        ValueError: for ``alpha`` outside (0, 1].
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    x = np.asarray(values, dtype=np.float64)
    out = np.empty_like(x)
    acc = x[0] if len(x) else 0.0
    for t, v in enumerate(x):
        acc = alpha * v + (1.0 - alpha) * acc if t else v
        out[t] = acc
    return out


def read_iteration_losses(run_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{loss: (iterations, values)}`` from the ``iteration/<loss>`` scalars of ``run_dir/tensorboard``.

    Raises:
        FileNotFoundError: when the run has no TensorBoard event file.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((Path(run_dir) / "tensorboard").glob("events.out.tfevents.*"))
    if not events:
        raise FileNotFoundError(f"{run_dir}/tensorboard: no event file (train with configs/train.json first)")
    out: dict[str, tuple[list[int], list[float]]] = {}
    for path in events:  # one file per (re)start of training; later files continue the curve
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for name in LOSSES:
            tag = f"iteration/{name}"
            if tag in acc.Tags()["scalars"]:
                steps, values = out.setdefault(name, ([], []))
                for e in acc.Scalars(tag):
                    steps.append(e.step)
                    values.append(e.value)
    return {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in out.items()}


def plot_losses(run_dir: str | os.PathLike, out: str | os.PathLike, alpha: float = 0.001) -> Path:
    """Raw (faint) and EMA-smoothed loss curves of a run, one panel per loss; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_iteration_losses(run_dir)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, name in zip(axes.ravel(), LOSSES, strict=True):
        if name in curves:
            steps, values = curves[name]
            order = np.argsort(steps, kind="stable")
            ax.plot(steps[order], values[order], alpha=0.25, lw=0.5)
            ax.plot(steps[order], ema(values[order], alpha), lw=1.5, label=f"EMA a={alpha:g}")
            ax.legend(fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("iteration")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--out", default=None, help="PNG path (default: <run_dir>/losses_ema.png)")
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args(argv)
    path = plot_losses(args.run_dir, args.out or Path(args.run_dir) / "losses_ema.png", args.alpha)
    print(path)


if __name__ == "__main__":
    main()
