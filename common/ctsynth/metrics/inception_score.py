"""Inception Score (IS): the standard softmax definition, and the HA-GAN thesis's raw-feature variant.

* Standard (Salimans et al. 2016): ``IS = exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x) = softmax(logits)`` and
  ``p(y)`` the mean of ``p(y|x)`` over the split; computed on ``splits`` equal consecutive splits, reported as the mean
  and standard deviation over splits (10 splits in the usual 50k-sample protocol). It needs class logits of a
  classifier (Inception-v3 for 2D slices; CT-SGAN's 2D protocol).
* **Non-standard** HA-GAN thesis variant (its Eq. 17 as coded in its ``evaluation/metrics.py``): the same formula
  applied directly to the 3D ResNet-50's global-pooled activations of the generated volumes *without* a softmax or any
  normalisation, with ``eps = 1e-16`` inside the logs, no splits. Values sit near 1.0 and are comparable only with the
  thesis's tables (5.6-5.16), never with literature IS values.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["hagan_raw_feature_score", "inception_score", "inception_score_from_probs"]


def inception_score_from_probs(probs: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS from class probabilities ``(N, C)`` (rows sum to 1).

    Args:
        probs: class probabilities.
        splits: number of equal consecutive splits (the last ``N % splits`` samples are dropped, as usual).

    Returns:
        ``(mean, std)`` over splits.

    Raises:
        ValueError: when ``probs`` is not 2D or there are fewer samples than splits.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (N, C), got shape {p.shape}.")
    n = p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need at least one sample per split: {n} samples, {splits} splits.")
    size = n // splits
    scores = []
    for k in range(splits):
        part = p[k * size : (k + 1) * size]
        py = part.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: only terms with p > 0 contribute.
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Standard IS from classifier logits ``(N, C)``: softmax, then :func:`inception_score_from_probs`."""
    t = torch.as_tensor(logits).double()
    if t.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(t.shape)}.")
    return inception_score_from_probs(torch.softmax(t, dim=1), splits=splits)


def hagan_raw_feature_score(features: np.ndarray | torch.Tensor, eps: float = 1e-16) -> float:
    """The HA-GAN thesis's "IS" on raw (non-negative) feature activations, flagged non-standard (module docstring).

    ``exp(mean_i sum_c f_ic (log(f_ic + eps) - log(mean_j f_jc + eps)))``.

    Raises:
        ValueError: when ``features`` is not 2D or has negative entries (the log would be undefined).
    """
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, float)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {f.shape}.")
    if (f < 0).any():
        raise ValueError("raw-feature IS needs non-negative activations (e.g. ReLU/pooled features).")
    py = f.mean(axis=0, keepdims=True)
    kl = (f * (np.log(f + eps) - np.log(py + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))
