"""Turn a painted tissue map into a CT image in HU: organ means, correlated texture, partial volume, noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctsynth.data.phantoms.tissues import Tissue

#: Partial-volume blur (voxels). Smoothing the tissue fractions and then composing them is linear, so it equals
#: one gaussian of the composed mean image (one filter instead of one per tissue).
PARTIAL_VOLUME_SIGMA = 0.6
#: Correlation length (mm) of the organ texture field.
TEXTURE_CORRELATION_MM = 2.5
#: Kept for the chest generator: default SD (HU) of its scanner noise.
DEFAULT_NOISE_SD = 10.0


@dataclass(frozen=True)
class KernelNoise:
    """Scanner noise of a filtered-back-projection reconstruction, described by its noise power spectrum (NPS).

    The noise is white noise filtered, per axis, by ``g(sigma_xy) - beta g(beta_sigma_ratio sigma_xy)`` in-plane (a
    band-pass: the ramp filter rolled off by the reconstruction kernel, so the NPS vanishes at zero frequency and
    peaks at mid frequencies, as FBP noise does) and by ``g(sigma_z)`` along z (the slice-sensitivity profile), with
    ``g(s)`` a gaussian of ``s`` mm. Because the filters are in millimetres the same model gives a strong
    neighbour correlation on a fine grid and almost none on a coarse one, as on real scanners. The amplitude
    follows the quantum-noise law: SD proportional to ``1 / sqrt(dose)`` and to ``1 / sqrt(voxel size)`` along
    each axis relative to ``ref_spacing_mm`` (thinner slices and smaller pixels are noisier).

    The defaults are calibrated on the real unenhanced CT in ``shared/data/real-ct`` (3 mm voxels, routine dose):
    see ``docs/phantoms.md``, section "Calibration".

    Args:
        sd_hu: noise SD (HU) at ``ref_spacing_mm`` and dose 1.
        ref_spacing_mm: voxel size at which ``sd_hu`` holds.
        sigma_xy_mm: in-plane width of the kernel's low-pass gaussian.
        sigma_z_mm: width of the slice-sensitivity gaussian.
        beta: weight of the subtracted wider gaussian (0: plain low-pass; near 1: ramp-like NPS).
        beta_sigma_ratio: width of the subtracted gaussian relative to ``sigma_xy_mm``.
    """

    sd_hu: float = 10.0
    ref_spacing_mm: float = 3.0
    sigma_xy_mm: float = 0.8
    sigma_z_mm: float = 1.0
    beta: float = 0.3
    beta_sigma_ratio: float = 3.0

    def sd_at(self, spacing: tuple[float, float, float], dose: float = 1.0) -> float:
        """Noise SD (HU) on a grid of ``spacing`` at relative ``dose``."""
        vol = float(np.prod(np.asarray(spacing, dtype=np.float64) / self.ref_spacing_mm))
        return self.sd_hu / np.sqrt(max(dose, 1e-6) * vol)

    def kernels(self, spacing: tuple[float, float, float]) -> list[list[np.ndarray]]:
        """Per-axis 1D filters (one list per additive term), sampled on the grid."""
        terms = []
        for sig_scale, weight in ((1.0, 1.0), (self.beta_sigma_ratio, -self.beta)):
            if weight == 0.0:
                continue
            per_axis = []
            for axis, s in enumerate(spacing):
                sig = (self.sigma_xy_mm * sig_scale if axis < 2 else self.sigma_z_mm) / s
                per_axis.append(_gauss_kernel(sig))
            per_axis[0] = per_axis[0] * weight
            terms.append(per_axis)
        return terms

    def sample(
        self, rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], sd: float
    ) -> np.ndarray:
        """Draw a noise volume of SD ``sd`` (HU) with this model's correlation on the given grid (float32)."""
        white = rng.standard_normal(shape, dtype=np.float32)
        out = None
        terms = self.kernels(spacing)
        for per_axis in terms:
            x = white
            for axis, k in enumerate(per_axis):
                if len(k) > 1 or k[0] != 1.0:
                    x = ndimage.correlate1d(x, k.astype(np.float32), axis=axis, mode="wrap")
            out = x if out is None else out + x
        gain = np.sqrt(_filter_energy(terms))
        out *= np.float32(sd / max(gain, 1e-12))
        return out


def _gauss_kernel(sigma_vox: float) -> np.ndarray:
    """Unit-sum sampled gaussian of ``sigma_vox`` voxels (a single 1 when it is far below a voxel)."""
    if sigma_vox < 0.2:
        return np.ones(1)
    r = max(1, int(np.ceil(3.0 * sigma_vox)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return k / k.sum()


def _filter_energy(terms: list[list[np.ndarray]]) -> float:
    """Sum of squares of the 3D filter ``sum_t outer(k_t^x, k_t^y, k_t^z)`` (the output variance for unit white)."""
    size = [max(len(t[a]) for t in terms) for a in range(3)]
    full = np.zeros(size)
    for t in terms:
        pads = [np.pad(t[a], (size[a] - len(t[a])) // 2) for a in range(3)]
        full += pads[0][:, None, None] * pads[1][None, :, None] * pads[2][None, None, :]
    return float((full**2).sum())


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], corr_mm: float
) -> np.ndarray:
    """Unit-variance, spatially correlated gaussian noise (gaussian-filtered white noise).

    Drawn on a grid twice as coarse (an eighth of the voxels), filtered there and linearly upsampled, which is
    what keeps the texture cheap at 128^3 and above.

    Args:
        rng: random generator.
        shape: output shape.
        spacing: voxel size in mm.
        corr_mm: gaussian correlation length (sigma) in mm.

    Returns:
        float32 array of ``shape`` with mean ~0 and SD 1.
    """
    low_shape = tuple(max(2, (n + 1) // 2) for n in shape)
    low = rng.standard_normal(low_shape, dtype=np.float32)
    sigma = [max(0.5, corr_mm / (2.0 * s)) for s in spacing]
    low = ndimage.gaussian_filter(low, sigma, mode="wrap", truncate=3.0)
    low /= max(float(low.std()), 1e-6)
    out = low
    for axis, n in enumerate(shape):
        out = _upsample2(out, axis, n)
    return out


def _upsample2(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Linear 2x upsampling along one axis, cropped to ``n`` samples.

    Written by hand: for this fixed factor it is about ten times faster than ``scipy.ndimage.zoom(order=1)``.
    """
    a = np.moveaxis(a, axis, 0)
    out = np.empty((2 * a.shape[0],) + a.shape[1:], dtype=a.dtype)
    out[0::2] = a
    out[1:-1:2] = 0.5 * (a[:-1] + a[1:])
    out[-1] = a[-1]
    return np.moveaxis(out[:n], 0, axis)


def render(
    tissue: np.ndarray,
    tissues: tuple[Tissue, ...],
    phase: str,
    rng: np.random.Generator,
    spacing: tuple[float, float, float],
    noise_sd: float,
    offsets: dict[int, float] | None = None,
    noise_model: KernelNoise | None = None,
) -> np.ndarray:
    """Compose the HU image of a tissue map.

    Without ``noise_model``: ``image = G_pv * (mean[tissue] + white * a) + sd[tissue] * texture``: the mean image is
    blurred by the partial-volume gaussian together with white noise whose amplitude ``a`` is chosen so that the
    blurred noise has SD ``noise_sd``; the organ texture is a coarser correlated field scaled per tissue.
    With ``noise_model``: ``image = G_pv * mean[tissue] + sd[tissue] * texture + noise`` where the noise of SD
    ``noise_sd`` is drawn from the model's noise power spectrum (its correlation is the model's, not the blur's).

    Args:
        tissue: uint8 tissue map.
        tissues: tissue table (index = tissue id).
        phase: "portal_venous" or "non_contrast".
        rng: random generator (consumed).
        spacing: voxel size in mm.
        noise_sd: SD (HU) of the scanner noise after blurring; 0 disables it.
        offsets: optional per-tissue HU offsets (per-seed variability of enhancement).
        noise_model: optional reconstruction-kernel noise model (:class:`KernelNoise`).

    Returns:
        float32 image in HU.
    """
    means = np.array([t.mean(phase) for t in tissues], dtype=np.float32)
    if offsets:
        for tid, off in offsets.items():
            means[tid] += off
    sds = np.array([t.sd for t in tissues], dtype=np.float32)
    image = means[tissue]
    if noise_model is not None:
        image = ndimage.gaussian_filter(image, PARTIAL_VOLUME_SIGMA, mode="nearest", truncate=3.0)
        texture = correlated_noise(rng, tissue.shape, spacing, TEXTURE_CORRELATION_MM)
        image += sds[tissue] * texture
        if noise_sd > 0:
            image += noise_model.sample(rng, tissue.shape, spacing, noise_sd)
        return image.astype(np.float32, copy=False)
    if noise_sd > 0:
        # SD of white noise after a 3D gaussian of sigma s (voxels) is 1 / (2 sqrt(pi) s)^(3/2).
        gain = (2.0 * np.sqrt(np.pi) * PARTIAL_VOLUME_SIGMA) ** 1.5
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd * gain)
    image = ndimage.gaussian_filter(image, PARTIAL_VOLUME_SIGMA, mode="nearest", truncate=3.0)
    texture = correlated_noise(rng, tissue.shape, spacing, TEXTURE_CORRELATION_MM)
    image += sds[tissue] * texture
    return image.astype(np.float32, copy=False)
