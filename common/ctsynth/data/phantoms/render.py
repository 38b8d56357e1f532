"""Turn a painted tissue map into a CT image in HU: organ means, correlated texture, partial volume, noise."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft

from ctsynth.data.phantoms.tissues import Tissue

#: Partial-volume blur (voxels). Smoothing the tissue fractions and then composing them is linear, so it equals
#: one gaussian of the composed mean image (one filter instead of one per tissue).
PARTIAL_VOLUME_SIGMA = 0.6
#: Correlation length (mm) of the organ texture field.
TEXTURE_CORRELATION_MM = 2.5


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

    def transfer(
        self, shape: tuple[int, int, int], spacing: tuple[float, float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Separable transfer function of the noise filter on the grid's half spectrum (``rfftn`` layout).

        It is the discrete Fourier transform of the sampled, circularly wrapped 1D kernels of :meth:`kernels`, so
        filtering in the Fourier domain equals the per-axis circular convolution with those kernels. The z filter
        is common to both terms, so the transfer function is ``H_z(k_z) (sum_t H^t_x(k_x) H^t_y(k_y))``.

        Returns:
            ``(plane, h_z)``: the in-plane part, shape ``(nx, ny)``, and the z part, shape ``(nz // 2 + 1,)``.
        """
        plane = np.zeros(shape[:2], dtype=np.float64)
        hz = np.ones(shape[2] // 2 + 1)
        for per_axis in self.kernels(spacing):
            hx = _wrapped_dft(per_axis[0], shape[0], half=False)
            hy = _wrapped_dft(per_axis[1], shape[1], half=False)
            plane += hx[:, None] * hy[None, :]
            hz = _wrapped_dft(per_axis[2], shape[2], half=True)
        return plane, hz

    def sample(
        self, rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], sd: float
    ) -> np.ndarray:
        """Draw a noise volume of SD ``sd`` (HU) with this model's correlation on the given grid (float32).

        Drawn in the Fourier domain (:func:`spectral_noise`): one inverse FFT instead of six 1D convolutions.
        """
        plane, hz = self.transfer(shape, spacing)
        return spectral_noise(rng, shape, plane, hz, sd)


def spectral_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], plane: np.ndarray, hz: np.ndarray, sd: float
) -> np.ndarray:
    """Stationary gaussian noise of SD ``sd`` whose spectrum is ``|plane(k_x, k_y) h_z(k_z)|^2``, float32.

    Independent zero-mean coefficients of equal variance on the half spectrum are multiplied by the transfer
    function and brought back by one inverse real FFT. The coefficients are uniform (four times cheaper to draw
    than normal ones): each output voxel is a weighted sum of all of them, so it is gaussian by the central limit
    theorem, and the noise power spectrum only depends on their variance.

    Args:
        rng: random generator.
        shape: output shape.
        plane: in-plane transfer function, shape ``(nx, ny)`` (full ``fftn`` layout).
        hz: z transfer function on the half spectrum, shape ``(nz // 2 + 1,)``.
        sd: output standard deviation.

    Returns:
        float32 array of ``shape``.
    """
    half = (shape[0], shape[1], shape[2] // 2 + 1)
    coef = rng.random(half + (2,), dtype=np.float32)
    coef -= np.float32(0.5)  # variance 1/12 per real and imaginary part
    spec = coef.view(np.complex64)[..., 0]
    spec *= plane.astype(np.float32)[:, :, None]
    spec *= hz.astype(np.float32)[None, None, :]
    out = fft.irfftn(spec, s=shape, workers=1, overwrite_x=True)
    # Variance of x = irfftn(H W), W with variance c per real and imaginary part: a plane k_z inside the half
    # spectrum enters x twice (with its conjugate), as 2 Re(.), variance 4 c sum |H|^2 / N^2; the planes k_z = 0
    # and Nyquist enter once through their real part, variance c sum |H|^2 / N^2.
    weight = np.full(half[2], 4.0)
    weight[0] = 1.0
    if shape[2] % 2 == 0:
        weight[-1] = 1.0
    var = float((plane**2).sum()) * float((hz**2 * weight).sum()) / 12.0 / float(np.prod(shape)) ** 2
    out *= np.float32(sd / np.sqrt(max(var, 1e-30)))
    return out.astype(np.float32, copy=False)


def _wrapped_dft(kernel: np.ndarray, n: int, half: bool) -> np.ndarray:
    """Real DFT (the kernel is symmetric) of a centred 1D kernel wrapped circularly onto ``n`` samples."""
    h = np.zeros(n, dtype=np.float64)
    r = len(kernel) // 2
    np.add.at(h, (np.arange(len(kernel)) - r) % n, kernel)
    return (np.fft.rfft(h) if half else np.fft.fft(h)).real


def _gauss_kernel(sigma_vox: float) -> np.ndarray:
    """Unit-sum sampled gaussian of ``sigma_vox`` voxels (a single 1 when it is far below a voxel)."""
    if sigma_vox < 0.2:
        return np.ones(1)
    r = max(1, int(np.ceil(3.0 * sigma_vox)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return k / k.sum()


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], corr_mm: float
) -> np.ndarray:
    """Unit-variance, spatially correlated gaussian noise (white noise filtered by a gaussian of ``corr_mm``).

    Drawn on a grid twice as coarse (an eighth of the voxels) in the Fourier domain (:func:`spectral_noise`, the
    gaussian's transfer function ``exp(-2 pi^2 sigma^2 f^2)``) and linearly upsampled, which is what keeps the
    texture cheap at 256^3.

    Args:
        rng: random generator.
        shape: output shape.
        spacing: voxel size in mm.
        corr_mm: gaussian correlation length (sigma) in mm.

    Returns:
        float32 C-contiguous array of ``shape`` with mean ~0 and SD ~1.
    """
    low_shape = tuple(max(2, (n + 1) // 2) for n in shape)
    sigma = [max(0.5, corr_mm / (2.0 * s)) for s in spacing]  # in coarse voxels
    hx, hy = (np.exp(-2.0 * (np.pi * sigma[a] * np.fft.fftfreq(low_shape[a])) ** 2) for a in range(2))
    hz = np.exp(-2.0 * (np.pi * sigma[2] * np.fft.rfftfreq(low_shape[2])) ** 2)
    low = spectral_noise(rng, low_shape, hx[:, None] * hy[None, :], hz, 1.0)
    out = low
    for axis in (2, 1, 0):  # the last pass runs along the slowest axis and leaves a C-contiguous array
        out = _upsample2(out, axis, shape[axis])
    return out


def _along(ndim: int, axis: int, s: slice) -> tuple[slice, ...]:
    """Index tuple that applies ``s`` along ``axis`` of an ``ndim``-dimensional array."""
    idx = [slice(None)] * ndim
    idx[axis] = s
    return tuple(idx)


def _upsample2(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Linear 2x upsampling along one axis (samples ``0, 0.5, 1, ...`` of the input), cropped to ``n`` samples.

    The last input sample is repeated when ``n`` reaches past it. Written by hand: for this fixed factor it is
    about ten times faster than ``scipy.ndimage.zoom(order=1)``.
    """
    at = functools.partial(_along, a.ndim, axis)
    m = a.shape[axis]
    shape = list(a.shape)
    shape[axis] = n
    out = np.empty(shape, dtype=a.dtype)
    out[at(slice(0, n, 2))] = a[at(slice(0, (n + 1) // 2))]
    k = min(n // 2, m - 1)  # odd samples that lie between two inputs
    odd = out[at(slice(1, 2 * k, 2))]
    np.add(a[at(slice(0, k))], a[at(slice(1, k + 1))], out=odd)
    odd *= a.dtype.type(0.5)
    if n // 2 > k:
        out[at(slice(2 * k + 1, 2 * k + 2))] = a[at(slice(m - 1, m))]
    return out


def partial_volume_blur(image: np.ndarray, sigma: float = PARTIAL_VOLUME_SIGMA) -> np.ndarray:
    """Blur ``image`` in place by a sampled gaussian of ``sigma`` voxels with three taps per axis (edges repeated).

    At sigma 0.6 the taps at two voxels would weigh 0.4 %, so three taps are the gaussian. Written with array
    slices because ``scipy.ndimage.gaussian_filter`` is about three times slower for such a short kernel.

    Args:
        image: float32 3D array, modified in place.
        sigma: gaussian SD in voxels.

    Returns:
        ``image``.
    """
    side = np.exp(-0.5 / sigma**2)
    w_side, w_centre = np.float32(side / (1 + 2 * side)), np.float32(1 / (1 + 2 * side))
    pair = np.empty_like(image)
    for axis in range(image.ndim):
        at = functools.partial(_along, image.ndim, axis)
        if image.shape[axis] < 2:
            continue
        np.add(image[at(slice(0, -2))], image[at(slice(2, None))], out=pair[at(slice(1, -1))])
        np.add(image[at(slice(0, 1))], image[at(slice(1, 2))], out=pair[at(slice(0, 1))])
        np.add(image[at(slice(-1, None))], image[at(slice(-2, -1))], out=pair[at(slice(-1, None))])
        pair *= w_side
        image *= w_centre
        image += pair
    return image


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
        partial_volume_blur(image)
        texture = correlated_noise(rng, tissue.shape, spacing, TEXTURE_CORRELATION_MM)
        texture *= sds[tissue]
        image += texture
        del texture
        if noise_sd > 0:
            image += noise_model.sample(rng, tissue.shape, spacing, noise_sd)
        return image.astype(np.float32, copy=False)
    if noise_sd > 0:
        # SD of white noise after a 3D gaussian of sigma s (voxels) is 1 / (2 sqrt(pi) s)^(3/2).
        gain = (2.0 * np.sqrt(np.pi) * PARTIAL_VOLUME_SIGMA) ** 1.5
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd * gain)
    partial_volume_blur(image)
    texture = correlated_noise(rng, tissue.shape, spacing, TEXTURE_CORRELATION_MM)
    image += sds[tissue] * texture
    return image.astype(np.float32, copy=False)
