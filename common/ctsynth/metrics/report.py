"""What the evaluation suite writes besides the metric values: package versions, CSV tables, the feature PCA plot."""

from __future__ import annotations

import csv
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctsynth.data.io import atomic_write, to_json_safe

__all__ = ["package_versions", "pca_plot", "write_csv"]


def package_versions() -> dict[str, str]:
    """Versions of ctsynth, Python, torch, MONAI, NumPy and SciPy (recorded in ``metrics.json``)."""
    import monai
    import scipy

    try:
        from importlib.metadata import version

        ctsynth_version = version("ctsynth")
    except Exception:  # not installed as a distribution (source checkout)
        ctsynth_version = "unknown"
    return {
        "ctsynth": ctsynth_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows (dicts; columns in order of first appearance) as CSV, floats with 6 significant digits, atomically."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                safe = to_json_safe(row, nan=None)
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in safe.items()})

    return atomic_write(path, write)


def pca_plot(path: Path, real: np.ndarray, syn: np.ndarray, title: str) -> Path:
    """2-D PCA (numpy SVD of the pooled, centred features) scatter of real vs synthetic features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = np.concatenate([real, syn]).astype(np.float64)
    centred = pooled - pooled.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    explained = (s[:2] ** 2) / max((s**2).sum(), 1e-300)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(proj[: len(real), 0], proj[: len(real), 1], s=12, alpha=0.7, label=f"real (n={len(real)})")
    ax.scatter(proj[len(real) :, 0], proj[len(real) :, 1], s=12, alpha=0.7, label=f"synthetic (n={len(syn)})")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
