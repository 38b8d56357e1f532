"""Pick the checkpoint of a 3DGAUnet training run by the paper's rule and export its generator.

The paper chose "the epoch before the [generator] loss drastically increases" by inspecting the loss curve; the rule
is automated in :func:`ctsynth.engines.select_checkpoint` (rolling-median smoothing, robust MAD threshold; see its
module docstring). This CLI applies it to a run folder written by ``configs/train.json``
(``losses.csv`` + ``checkpoints/checkpoint_epoch=<n>.pt``) and writes the chosen generator weights to ``out``
(default ``models/model_<model>.pt``, where ``configs/inference.json`` looks for them).

Usage (from the bundle folder)::

    python -m scripts.checkpoint_selection --run_dir runs/tumor --out models/model_tumor.pt
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ctsynth.data.io import write_json_atomic
from ctsynth.engines import load_checkpoint, save_checkpoint, select_checkpoint

__all__ = ["select_and_export", "main"]


def select_and_export(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    key: str = "g_loss",
    window: int = 5,
    baseline_window: int = 50,
    k: float = 6.0,
    min_rel_increase: float = 0.5,
    warmup: int = 20,
) -> dict[str, Any]:
    """Select the checkpoint before the G-loss blow-up and export its generator.

    Args:
        run_dir: training output folder holding ``losses.csv`` and ``checkpoints/``.
        out: destination of the generator weights (``{"generator": state_dict}``); None: do not export.
        key: loss column to watch.
        window: rolling-median width (epochs).
        baseline_window: reference epochs before the smoothing window.
        k: robust SDs above the baseline that count as a blow-up.
        min_rel_increase: minimum relative rise that counts as a blow-up.
        warmup: leading epochs never tested.

    Returns:
        The selection record (also written to ``<run_dir>/selection.json``).

    Raises:
        FileNotFoundError: when the run folder has no loss log or no checkpoint.
    """
    run_dir = Path(run_dir)
    choice = select_checkpoint(
        run_dir / "losses.csv",
        run_dir / "checkpoints",
        key=key,
        window=window,
        baseline_window=baseline_window,
        k=k,
        min_rel_increase=min_rel_increase,
        warmup=warmup,
    )
    record: dict[str, Any] = {
        "epoch": choice.epoch,
        "checkpoint": str(choice.path),
        "blowup_epoch": choice.blowup_epoch,
        "reason": choice.reason,
        "rule": {
            "key": key,
            "window": window,
            "baseline_window": baseline_window,
            "k": k,
            "min_rel_increase": min_rel_increase,
            "warmup": warmup,
        },
    }
    if out is not None:
        state = load_checkpoint(choice.path)
        if "generator" not in state:
            raise KeyError(f"{choice.path}: no 'generator' entry (it has {sorted(state)})")
        # the generator's weights with its definition and run info, so inference rebuilds it from this file alone
        keep = {k: state[k] for k in ("generator", "network_definitions", "run_info") if k in state}
        record["exported"] = str(save_checkpoint(keep, out))
    write_json_atomic(record, run_dir / "selection.json")
    return record


def main() -> None:
    """Command line entry (python-fire)."""
    import fire

    fire.Fire(select_and_export)


if __name__ == "__main__":
    main()
