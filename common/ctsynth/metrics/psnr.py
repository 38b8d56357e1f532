"""Slice-wise PSNR on centre slices, per plane (3DGAUnet Table 1).

Protocol: for each volume take the centre slice of each plane (array indexed ``(x, y, z)`` as stored in NIfTI:
sagittal = ``v[X // 2, :, :]``, coronal = ``v[:, Y // 2, :]``, axial = ``v[:, :, Z // 2]``), on intensities windowed to
``[0, 1]`` so that ``data_range = 1`` (equivalently the HU window width). The paper does not say how real and synthetic
slices are paired; ``pairing="all"`` (default) averages PSNR over all real x synthetic pairs, which is the expectation
of any random pairing and has no seed dependence; ``pairing="random"`` pairs each synthetic slice with one real slice
drawn by a seeded permutation (without replacement while real slices last). PSNR itself is
:class:`monai.metrics.PSNRMetric`, ``10 log10(data_range^2 / MSE)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from monai.metrics import PSNRMetric

__all__ = ["PLANES", "centre_slices", "slicewise_psnr"]

PLANES = ("sagittal", "coronal", "axial")


def centre_slices(volume: np.ndarray) -> dict[str, np.ndarray]:
    """The three centre slices of an ``(x, y, z)`` volume, keyed by plane name (see the module docstring).

    Raises:
        ValueError: when ``volume`` is not 3D.
    """
    v = np.asarray(volume)
    if v.ndim != 3:
        raise ValueError(f"centre_slices expects a 3D (x, y, z) volume, got shape {v.shape}.")
    x, y, z = (s // 2 for s in v.shape)
    return {"sagittal": v[x, :, :].copy(), "coronal": v[:, y, :].copy(), "axial": v[:, :, z].copy()}


def _pair_indices(n_real: int, n_syn: int, pairing: str, seed: int) -> np.ndarray:
    if pairing == "all":
        r, s = np.meshgrid(np.arange(n_real), np.arange(n_syn), indexing="ij")
        return np.stack([r.ravel(), s.ravel()], axis=1)
    if pairing == "random":
        rng = np.random.default_rng(seed)
        reps = -(-n_syn // n_real)
        real_idx = np.concatenate([rng.permutation(n_real) for _ in range(reps)])[:n_syn]
        return np.stack([real_idx, np.arange(n_syn)], axis=1)
    raise ValueError(f"pairing must be 'all' or 'random', got {pairing!r}.")


def slicewise_psnr(
    real_slices: dict[str, np.ndarray],
    synthetic_slices: dict[str, np.ndarray],
    data_range: float = 1.0,
    pairing: Literal["all", "random"] = "all",
    seed: int = 0,
    chunk: int = 4096,
) -> dict[str, dict]:
    """Mean PSNR between real and synthetic centre slices, per plane.

    Args:
        real_slices: plane -> ``(N_real, H, W)`` stacked slices (intensities in ``[0, data_range]``).
        synthetic_slices: plane -> ``(N_syn, H, W)``.
        data_range: peak-to-peak range of the intensities.
        pairing: ``"all"`` real x synthetic pairs or ``"random"`` (see the module docstring).
        seed: seed of the random pairing.
        chunk: pairs per PSNR call.

    Returns:
        plane -> ``{"mean", "std", "n_pairs", "pairs" ((P, 2) real/synthetic indices), "values" ((P,))}``.

    Raises:
        ValueError: on missing planes, mismatched slice shapes or an unknown pairing.
    """
    metric = PSNRMetric(max_val=data_range, reduction="none")
    out: dict[str, dict] = {}
    for plane, real in real_slices.items():
        if plane not in synthetic_slices:
            raise ValueError(f"plane {plane!r} missing from the synthetic slices.")
        r = torch.as_tensor(np.asarray(real, dtype=np.float32))
        s = torch.as_tensor(np.asarray(synthetic_slices[plane], dtype=np.float32))
        if r.shape[1:] != s.shape[1:]:
            raise ValueError(
                f"{plane} slices differ in shape: real {tuple(r.shape[1:])} vs synthetic {tuple(s.shape[1:])}."
            )
        pairs = _pair_indices(r.shape[0], s.shape[0], pairing, seed)
        values = []
        for start in range(0, len(pairs), chunk):
            p = torch.as_tensor(pairs[start : start + chunk])
            values.append(metric(s[p[:, 1], None], r[p[:, 0], None]).reshape(-1).numpy())
        vals = np.concatenate(values).astype(np.float64)
        finite = vals[np.isfinite(vals)]
        out[plane] = {
            "mean": float(finite.mean()) if finite.size else float("inf"),
            "std": float(finite.std()) if finite.size else 0.0,
            "n_pairs": len(vals),
            "n_identical_pairs": int((~np.isfinite(vals)).sum()),
            "pairs": pairs,
            "values": vals,
        }
    return out
