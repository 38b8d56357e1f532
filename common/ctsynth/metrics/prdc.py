"""k-NN precision, recall, density and coverage on feature vectors.

Definitions (Kynkäänniemi et al. 2019 for precision/recall; Naeem et al. 2020 for density/coverage), with
``r_k(a)`` the distance from ``a`` to its k-th nearest neighbour within its own set (itself excluded):

* precision = fraction of synthetic ``y`` lying inside some real ball: ``exists i: ||y - x_i|| < r_k(x_i)``;
* recall = fraction of real ``x`` lying inside some synthetic ball: ``exists j: ||x - y_j|| < r_k(y_j)``;
* density = ``1 / (k n) sum_j sum_i 1[||y_j - x_i|| < r_k(x_i)]`` (can exceed 1);
* coverage = fraction of real ``x_i`` whose own ball holds at least one synthetic sample: ``min_j ||x_i - y_j|| <
  r_k(x_i)``.

Strict inequalities follow the reference ``prdc`` package so numbers are comparable. Euclidean distances, k = 5 by
default. Identical sets give precision = recall = coverage = 1 and density ~ 1.
"""

from __future__ import annotations

import numpy as np
import torch

from ctsynth.metrics.distances import pairwise_distances

__all__ = ["knn_radii", "prdc"]


def knn_radii(features: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row.

    Raises:
        ValueError: when there are not more than ``k`` rows.
    """
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if f.shape[0] <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {f.shape[0]}.")
    d = pairwise_distances(f, f)
    # index 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is at index k.
    return torch.sort(d, dim=1).values[:, k].numpy()


def prdc(real: np.ndarray | torch.Tensor, synthetic: np.ndarray | torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``synthetic`` w.r.t. ``real`` (see the module docstring).

    Args:
        real: ``(m, F)`` real features.
        synthetic: ``(n, F)`` synthetic features.
        k: neighbourhood size.

    Returns:
        ``{"precision", "recall", "density", "coverage", "k"}``.

    Raises:
        ValueError: on mismatched feature sizes or too few samples for ``k``.
    """
    x = torch.as_tensor(np.asarray(real), dtype=torch.float64).reshape(len(real), -1)
    y = torch.as_tensor(np.asarray(synthetic), dtype=torch.float64).reshape(len(synthetic), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: real {x.shape[1]} vs synthetic {y.shape[1]}.")
    r_real = torch.from_numpy(knn_radii(x, k))
    r_syn = torch.from_numpy(knn_radii(y, k))
    d = pairwise_distances(x, y)  # (m, n)
    in_real_ball = d < r_real[:, None]
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float((d < r_syn[None, :]).any(dim=1).double().mean()),
        "density": float(in_real_ball.double().sum() / (k * y.shape[0])),
        "coverage": float((d.min(dim=1).values < r_real).double().mean()),
        "k": int(k),
    }
