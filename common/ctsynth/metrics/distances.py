"""Pairwise Euclidean distances between feature rows, shared by MMD, PRDC and the memorisation audit."""

from __future__ import annotations

import torch

__all__ = ["pairwise_distances", "pairwise_squared_distances"]


def pairwise_squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``||a_i - b_j||^2`` between the rows of ``a`` (m, F) and ``b`` (n, F).

    Written as ``||a||^2 + ||b||^2 - 2 a b^T`` (one matrix product, as fast as ``torch.cdist`` and usable in float64);
    tiny negative values from rounding are clamped to 0.

    Args:
        a: ``(m, F)`` tensor.
        b: ``(n, F)`` tensor of the same dtype.

    Returns:
        ``(m, n)`` tensor.
    """
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d2.clamp_min_(0.0)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||a_i - b_j||``: the square root of :func:`pairwise_squared_distances`."""
    return pairwise_squared_distances(a, b).sqrt_()
