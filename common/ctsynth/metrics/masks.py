"""Label-mask metrics: paired overlap (Dice, HD95) and label-volume distributions, real vs synthetic.

* Paired: when a synthetic mask has a reference mask on the same grid (e.g. a segmenter's or TotalSegmentator's
  prediction on the synthetic image, matched by file name), per label Dice (:class:`monai.metrics.DiceMetric`) and the
  95th-percentile Hausdorff distance in mm (:func:`monai.metrics.compute_hausdorff_distance`, ``percentile=95``,
  ``spacing`` from the affine). Labels empty in both masks give NaN and are left out of the means.
* Unpaired: the volume of each label in mL (voxel count x voxel volume from the affine) in every real and every
  synthetic mask; the two distributions are compared with the two-sample Kolmogorov-Smirnov statistic
  (:func:`scipy.stats.ks_2samp`) and the Wasserstein-1 distance in mL (:func:`scipy.stats.wasserstein_distance`); the
  fraction of masks in which the label is empty is reported for each set (empty synthetic masks are a known failure of
  the HA-GAN pair generator).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance
from scipy import stats

__all__ = ["compare_label_volumes", "label_volumes_ml", "paired_mask_scores"]


def label_volumes_ml(mask: np.ndarray, spacing: Sequence[float], labels: Sequence[int]) -> dict[int, float]:
    """Volume in mL of each label in a label map (voxel count x product of ``spacing`` in mm / 1000)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(np.asarray(mask).astype(np.int64).ravel(), minlength=max(labels) + 1)
    return {int(lab): float(counts[lab]) * voxel_ml for lab in labels}


def paired_mask_scores(
    pred: np.ndarray, reference: np.ndarray, labels: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[int, dict[str, float]]:
    """Dice and HD95 (mm) of each label between two label maps on the same grid.

    Args:
        pred: label map (e.g. the generator's mask).
        reference: label map to compare with.
        labels: foreground label values.
        spacing: voxel spacing in mm, for HD95.

    Returns:
        label -> ``{"dice", "hd95"}`` (NaN where the label is empty in both, HD95 NaN or inf where empty in one).

    Raises:
        ValueError: when the shapes differ.
    """
    p, r = np.asarray(pred), np.asarray(reference)
    if p.shape != r.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {r.shape}.")
    onehot_p = torch.as_tensor(np.stack([p == lab for lab in labels])[None]).float()
    onehot_r = torch.as_tensor(np.stack([r == lab for lab in labels])[None]).float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(onehot_p, onehot_r)[0]
    hd = compute_hausdorff_distance(onehot_p, onehot_r, include_background=True, percentile=95, spacing=list(spacing))[
        0
    ]
    return {int(lab): {"dice": float(dice[i]), "hd95": float(hd[i])} for i, lab in enumerate(labels)}


def compare_label_volumes(
    real_volumes_ml: Sequence[dict[int, float]], synthetic_volumes_ml: Sequence[dict[int, float]], labels: Sequence[int]
) -> dict[int, dict[str, float]]:
    """KS statistic and Wasserstein-1 distance between real and synthetic label-volume distributions, per label.

    Args:
        real_volumes_ml: one ``label -> mL`` dict per real mask.
        synthetic_volumes_ml: one per synthetic mask.
        labels: labels to compare.

    Returns:
        label -> ``{"ks", "ks_pvalue", "wasserstein_ml", "real_mean_ml", "synthetic_mean_ml", "real_empty_fraction",
        "synthetic_empty_fraction"}`` (distances NaN when a set is empty).
    """
    out = {}
    for lab in labels:
        r = np.array([v.get(lab, 0.0) for v in real_volumes_ml], dtype=np.float64)
        s = np.array([v.get(lab, 0.0) for v in synthetic_volumes_ml], dtype=np.float64)
        row = {
            "real_mean_ml": float(r.mean()) if r.size else float("nan"),
            "synthetic_mean_ml": float(s.mean()) if s.size else float("nan"),
            "real_empty_fraction": float((r == 0).mean()) if r.size else float("nan"),
            "synthetic_empty_fraction": float((s == 0).mean()) if s.size else float("nan"),
        }
        if r.size and s.size:
            ks = stats.ks_2samp(r, s)
            row.update(
                {
                    "ks": float(ks.statistic),
                    "ks_pvalue": float(ks.pvalue),
                    "wasserstein_ml": float(stats.wasserstein_distance(r, s)),
                }
            )
        else:
            row.update({"ks": float("nan"), "ks_pvalue": float("nan"), "wasserstein_ml": float("nan")})
        out[int(lab)] = row
    return out
