"""Nodule injector and eraser (the paper's App. B, after Jin et al. MICCAI 2018): 3D conditional GANs on volumes of
interest (VOIs) whose centre is masked, and the code that applies them to whole scans.

- Injector: input ``[VOI with its centre cube erased, nodule mask]`` -> the full VOI with a nodule of that mask's
  shape in the centre. Trained on VOIs centred on real nodules (the label map gives the mask); applied with a ball of
  the chosen radius at random centres inside the lung mask (centres on the lung border or next to vessels are allowed:
  juxta-pleural and juxta-vascular nodules), a per-volume count drawn from a configurable distribution. Every injection
  writes the ball into the nodule mask.
- Eraser: input ``[VOI with its centre cube erased, centre-cube mask]`` -> the VOI with healthy tissue in the centre.
  Trained as inpainting of nodule-free lung VOIs (the paper trains it on nodule-injected NLST scans with the original
  scans as targets; both teach "healthy tissue given the surroundings"); applied to every connected nodule of a label
  map, whose label is then cleared.

Intensities are those of the GAN ([-1, 1] for the HU window); only the masked centre cube of a generated VOI is pasted
back, so the scan outside it is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.networks.nets import UNet
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage
from torch import nn

from ctsynth.engines import GenerativeTrainer, bce_discriminator_loss, bce_generator_loss

__all__ = [
    "MODES",
    "lung_mask",
    "ball",
    "centre_cube",
    "crop_voi",
    "paste_centre",
    "VOIGenerator",
    "VOIDiscriminator",
    "VOIPaird",
    "VOIGANTrainer",
    "NoduleInjector",
    "NoduleEraser",
]

logger = logging.getLogger(__name__)
MODES = ("inject", "erase")


def lung_mask(
    volume: np.ndarray, air_threshold: float = -0.43, min_fraction: float = 0.001, closing_radius: int = 2
) -> np.ndarray:
    """Lungs of a chest volume from intensities alone: air below ``air_threshold`` enclosed by the body in its axial
    slice (the body = the hole-filled tissue above the threshold), components below ``min_fraction`` of the volume
    dropped, a 3D closing with a ball of ``closing_radius`` voxels (so nodules and vessels on the lung border are
    inside), then holes filled slice by slice.

    Args:
        volume: ``(X, Y, Z)`` volume, Z axial (in the GAN's [-1, 1] scale the default threshold is -400 HU for the
            [-1000, 400] window).
        air_threshold: lung/air threshold in the volume's units.
        min_fraction: smallest kept component, as a fraction of the volume.
        closing_radius: radius of the closing ball in voxels (0: no closing).

    Returns:
        Boolean lung mask.
    """
    tissue = volume >= air_threshold
    body = np.stack([ndimage.binary_fill_holes(tissue[:, :, z]) for z in range(volume.shape[2])], axis=-1)
    labels, n = ndimage.label(body & ~tissue)
    if n == 0:
        return np.zeros(volume.shape, dtype=bool)
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, index=np.arange(1, n + 1))
    lungs = np.isin(labels, 1 + np.flatnonzero(sizes >= min_fraction * volume.size))
    if closing_radius > 0:
        r = int(closing_radius)
        lungs = ndimage.binary_closing(np.pad(lungs, r), ball(2 * r + 1, r), border_value=0)[r:-r, r:-r, r:-r] & body
    for z in range(lungs.shape[2]):
        lungs[:, :, z] = ndimage.binary_fill_holes(lungs[:, :, z])
    return lungs


def ball(size: int, radius: float) -> np.ndarray:
    """Boolean ball of ``radius`` voxels centred in a ``size^3`` cube."""
    c = (size - 1) / 2.0
    g = np.indices((size,) * 3) - c
    return (g**2).sum(0) <= radius**2


def centre_cube(size: int, mask_size: int) -> np.ndarray:
    """Boolean ``mask_size^3`` cube centred in a ``size^3`` cube."""
    lo = (size - mask_size) // 2
    out = np.zeros((size,) * 3, dtype=bool)
    out[lo : lo + mask_size, lo : lo + mask_size, lo : lo + mask_size] = True
    return out


def _box(centre: Sequence[int], size: int, shape: Sequence[int]) -> tuple[list[slice], list[slice]]:
    """Slices of a ``size^3`` box centred at ``centre`` in the volume and in the VOI (clipped at the borders)."""
    vol, voi = [], []
    for c, n in zip(centre, shape, strict=True):
        lo = int(c) - size // 2
        a, b = max(lo, 0), min(lo + size, n)
        vol.append(slice(a, b))
        voi.append(slice(a - lo, b - lo))
    return vol, voi


def crop_voi(volume: np.ndarray, centre: Sequence[int], size: int, fill: float = -1.0) -> np.ndarray:
    """``size^3`` VOI centred at ``centre``, padded with ``fill`` outside the volume."""
    out = np.full((size,) * 3, fill, dtype=np.float32)
    vol, voi = _box(centre, size, volume.shape)
    out[tuple(voi)] = volume[tuple(vol)]
    return out


def paste_centre(volume: np.ndarray, voi: np.ndarray, centre: Sequence[int], region: np.ndarray) -> None:
    """Write ``voi`` into ``volume`` (in place) where ``region`` (a VOI-sized mask) is set."""
    vol, sub = _box(centre, voi.shape[0], volume.shape)
    target = volume[tuple(vol)]
    keep = region[tuple(sub)]
    target[keep] = voi[tuple(sub)][keep]


class VOIGenerator(nn.Module):
    """Conditional VOI generator: ``(B, 2, V, V, V)`` = [masked VOI, condition mask] -> ``(B, 1, V, V, V)`` in
    [-1, 1]; a MONAI 3D U-Net (stride-2 levels, residual units, instance norm) followed by Tanh.

    Args:
        channels: U-Net widths (``len(channels) - 1`` down-samplings; V must be divisible by ``2**(len - 1)``).
        num_res_units: residual units per level.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), num_res_units: int = 1) -> None:
        super().__init__()
        ch = tuple(int(c) for c in channels)
        self.unet = UNet(3, 2, 1, ch, (2,) * (len(ch) - 1), num_res_units=int(num_res_units), norm="INSTANCE")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.unet(x))


class VOIDiscriminator(nn.Module):
    """Conditional patch discriminator: ``[VOI, masked VOI, condition]`` (3 channels) -> a map of logits.

    ``Conv3d(k4, s2, p1)`` -> LeakyReLU(0.2) per width (instance norm after the first), then ``Conv3d(c -> 1, k3, p1)``.

    Args:
        channels: widths.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        ch = [3] + [int(c) for c in channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(ch[:-1], ch[1:], strict=True)):
            layers.append(nn.Conv3d(c_in, c_out, 4, 2, 1))
            if i:
                layers.append(nn.InstanceNorm3d(c_out, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(nn.Conv3d(ch[-1], 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VOIPaird(Randomizable, MapTransform):
    """Training pair of the injector or the eraser from a chest volume in [-1, 1] and its nodule label map.

    ``inject``: the VOI is centred on a random voxel of a random nodule; the condition is that nodule's mask.
    ``erase``: the VOI is centred on a random lung voxel (:func:`lung_mask`) whose centre cube holds no nodule; the
    condition is the centre cube. In both, the centre cube (``mask_size^3``, grown to cover the condition) of the input
    VOI is set to ``fill``.

    Writes ``input`` ``(2, V, V, V)``, ``target`` ``(1, V, V, V)`` and ``region`` ``(1, V, V, V)`` (the erased cube).

    Args:
        keys: ``(image key, label key)``.
        mode: "inject" or "erase".
        voi_size: VOI edge V.
        mask_size: edge of the erased centre cube.
        fill: value of erased voxels.
        air_threshold: lung threshold of :func:`lung_mask` (erase mode).

    Raises:
        ValueError: for an unknown mode, ``mask_size`` > ``voi_size``, or (inject) a volume without nodule / (erase) one
            without a nodule-free lung voxel, naming the file.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        mode: str = "inject",
        voi_size: int = 64,
        mask_size: int = 32,
        fill: float = 0.0,
        air_threshold: float = -0.43,
    ) -> None:
        MapTransform.__init__(self, keys)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0 < int(mask_size) <= int(voi_size):
            raise ValueError(f"need 0 < mask_size <= voi_size, got {mask_size} and {voi_size}")
        self.mode, self.voi_size, self.mask_size, self.fill = mode, int(voi_size), int(mask_size), float(fill)
        self.air_threshold = float(air_threshold)

    def randomize(self, data: Any = None) -> None:  # randomness is drawn in __call__ from self.R
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, label_key = self.keys
        img_t = d[image_key]
        name = getattr(img_t, "meta", {}).get("filename_or_obj", "a volume")
        img = np.asarray(img_t[0], dtype=np.float32)
        lbl = np.asarray(d[label_key][0]) > 0
        v, m = self.voi_size, self.mask_size
        if self.mode == "inject":
            comps, n = ndimage.label(lbl)
            if n == 0:
                raise ValueError(f"{name}: no nodule in the label map (the injector trains on nodule VOIs)")
            comp = int(self.R.randint(1, n + 1))
            voxels = np.argwhere(comps == comp)
            centre = voxels[self.R.randint(len(voxels))]
            condition = crop_voi((comps == comp).astype(np.float32), centre, v, 0.0) > 0
        else:
            free = lung_mask(img, self.air_threshold) & ~ndimage.binary_dilation(lbl, iterations=m // 2 + 1)
            candidates = np.argwhere(free)
            if len(candidates) == 0:
                raise ValueError(f"{name}: no nodule-free lung voxel for an eraser VOI")
            centre = candidates[self.R.randint(len(candidates))]
            condition = centre_cube(v, m)
        region = centre_cube(v, m) | condition
        target = crop_voi(img, centre, v)
        masked = np.where(region, self.fill, target)
        d["input"] = torch.from_numpy(np.stack([masked, condition.astype(np.float32)]))
        d["target"] = torch.from_numpy(target[None])
        d["region"] = torch.from_numpy(region[None].astype(np.float32))
        return d


class VOIGANTrainer(GenerativeTrainer):
    """Step of the injector / eraser cGAN: networks and optimisers ``generator`` and ``discriminator``.

    D sees ``[VOI, masked VOI, condition]`` (real: the target; fake: the generated VOI, outside the erased cube replaced
    by the input so only the centre is judged); losses: BCE (D), non-saturating BCE + L1 (G), with the L1 weighted
    ``l1_centre`` inside the erased cube and ``l1_outside`` outside (Jin et al.'s masked reconstruction).

    Args:
        l1_centre: weight of the L1 inside the erased cube.
        l1_outside: weight of the L1 outside it.
        args, kwargs: :class:`~ctsynth.engines.GenerativeTrainer` arguments.
    """

    LOSS_KEYS = ("d_loss", "g_adv", "g_l1")

    def __init__(self, *args: Any, l1_centre: float = 100.0, l1_outside: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.l1_centre, self.l1_outside = float(l1_centre), float(l1_outside)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        G, D = self.networks["generator"], self.networks["discriminator"]
        x, target, region = batch["input"], batch["target"], batch["region"]
        with self.autocast():
            fake = G(x).float()
        composed = region * fake + (1 - region) * target
        with self.autocast():
            d_loss = bce_discriminator_loss(D(torch.cat([target, x], 1)), D(torch.cat([composed.detach(), x], 1)))
        self.update("discriminator", d_loss)
        with self.frozen("discriminator"), self.autocast():
            g_adv = bce_generator_loss(D(torch.cat([composed, x], 1)))
        err = (fake - target).abs()
        g_l1 = (self.l1_centre * (err * region).sum() + self.l1_outside * (err * (1 - region)).sum()) / err.numel()
        self.update("generator", g_adv + g_l1)
        return {"d_loss": float(d_loss.item()), "g_adv": float(g_adv.item()), "g_l1": float(g_l1.item())}


def _run_voi(generator: nn.Module, masked: np.ndarray, condition: np.ndarray, device: torch.device) -> np.ndarray:
    x = torch.from_numpy(np.stack([masked, condition.astype(np.float32)])[None]).to(device)
    with torch.no_grad():
        return generator(x)[0, 0].float().cpu().numpy()


class NoduleInjector:
    """Insert nodules of a chosen radius at random lung positions with the trained injector.

    Args:
        generator: the trained injector generator (eval mode).
        voi_size: VOI edge used in training.
        mask_size: erased cube edge used in training.
        radius: nodule radius in voxels.
        count_probs: ``{count: probability}`` of the number of nodules per volume (normalised); e.g. a histogram of
            nodules per scan in LIDC.
        fill: value of erased voxels (as in training).
        air_threshold: lung threshold of :func:`lung_mask`.
        min_distance: smallest distance between two injected centres in voxels (default ``2 * radius + 2``).
        device: torch device.

    Raises:
        ValueError: for a radius that does not fit the erased cube, or empty / negative count probabilities.
    """

    def __init__(
        self,
        generator: nn.Module,
        voi_size: int = 64,
        mask_size: int = 32,
        radius: float = 5.0,
        count_probs: Mapping[int | str, float] | None = None,
        fill: float = 0.0,
        air_threshold: float = -0.43,
        min_distance: float | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0 < 2 * float(radius) + 1 <= int(mask_size):
            raise ValueError(f"radius {radius} does not fit the erased cube of {mask_size} voxels (2 r + 1 <= size)")
        probs = {int(k): float(p) for k, p in (count_probs or {1: 1.0}).items()}
        if not probs or min(probs.values()) < 0 or sum(probs.values()) <= 0 or min(probs) < 0:
            raise ValueError(f"count_probs must map counts >= 0 to non-negative probabilities, got {count_probs}")
        self.generator, self.device = generator.eval(), torch.device(device)
        self.voi_size, self.mask_size, self.radius, self.fill = int(voi_size), int(mask_size), float(radius), fill
        self.counts = np.array(sorted(probs))
        self.probs = np.array([probs[c] for c in self.counts]) / sum(probs.values())
        self.air_threshold = float(air_threshold)
        self.min_distance = float(min_distance) if min_distance is not None else 2 * self.radius + 2

    def __call__(
        self, volume: np.ndarray, rng: np.random.Generator, lungs: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Inject nodules into a ``(X, Y, Z)`` volume in [-1, 1].

        Args:
            volume: the volume (not modified).
            rng: random generator of the count and the positions.
            lungs: lung mask (default: :func:`lung_mask`).

        Returns:
            ``(volume with nodules, uint8 nodule mask, [{"centre": [x, y, z], "radius": r}, ...])``.
        """
        out = volume.astype(np.float32, copy=True)
        mask = np.zeros(volume.shape, dtype=np.uint8)
        lungs = lung_mask(volume, self.air_threshold) if lungs is None else lungs
        candidates = np.argwhere(lungs)
        count = int(rng.choice(self.counts, p=self.probs))
        if count and len(candidates) == 0:
            logger.warning("no lung voxel found: no nodule injected")
            return out, mask, []
        nodule = ball(self.voi_size, self.radius)
        region = centre_cube(self.voi_size, self.mask_size)
        placed: list[dict[str, Any]] = []
        for _ in range(50 * count):
            if len(placed) == count:
                break
            c = candidates[rng.integers(len(candidates))]
            if any(np.linalg.norm(c - np.asarray(p["centre"])) < self.min_distance for p in placed):
                continue
            voi = crop_voi(out, c, self.voi_size)
            generated = _run_voi(self.generator, np.where(region, self.fill, voi), nodule, self.device)
            paste_centre(out, generated, c, region)
            paste_centre(mask, nodule.astype(np.uint8), c, nodule)
            placed.append({"centre": [int(v) for v in c], "radius": self.radius})
        return out, mask, placed


class NoduleEraser:
    """Replace every connected nodule of a label map by healthy tissue with the trained eraser.

    Args:
        generator: the trained eraser generator (eval mode).
        voi_size: VOI edge used in training.
        mask_size: erased cube edge used in training (nodules larger than it are erased by a grown cube).
        fill: value of erased voxels (as in training).
        device: torch device.
    """

    def __init__(
        self,
        generator: nn.Module,
        voi_size: int = 64,
        mask_size: int = 32,
        fill: float = 0.0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.generator, self.device = generator.eval(), torch.device(device)
        self.voi_size, self.mask_size, self.fill = int(voi_size), int(mask_size), float(fill)

    def __call__(self, volume: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """``(volume in [-1, 1], nodule label)`` -> ``(volume without nodules, cleared label, nodules erased)``."""
        out = volume.astype(np.float32, copy=True)
        comps, n = ndimage.label(label > 0)
        for comp in range(1, n + 1):
            voxels = np.argwhere(comps == comp)
            centre = np.round(voxels.mean(0)).astype(int)
            own = crop_voi((comps == comp).astype(np.float32), centre, self.voi_size, 0.0) > 0
            region = centre_cube(self.voi_size, self.mask_size) | ndimage.binary_dilation(own, iterations=2)
            voi = crop_voi(out, centre, self.voi_size)
            generated = _run_voi(self.generator, np.where(region, self.fill, voi), region, self.device)
            paste_centre(out, generated, centre, region)
        return out, np.zeros_like(label, dtype=np.uint8), n


class NoduleEditing:
    """Apply the injector or the eraser to a set of chest cubes and write a classifier datalist.

    ``inject``: every volume of ``source`` (a folder of HU NIfTI cubes, e.g. CT-SGAN samples) is copied; the volumes
    chosen by ``fraction`` (evenly spread, ``floor(n * fraction)`` of them) get nodules from :class:`NoduleInjector`
    (random count and positions from ``seed`` and the volume index); every volume gets a label map (empty when
    untouched). ``erase``: every volume of ``source`` (an MSD ``dataset.json`` / datalist with labels) chosen by
    ``fraction`` has its nodules erased and its label cleared; the others are copied with their labels.

    ``datalist.json`` lists ``{"image", "label", "nodule": 0 | 1}`` per volume (``nodule``: the label map has a voxel).

    Args:
        mode: "inject" or "erase".
        source: input volumes.
        out: output folder (``imagesTr/``, ``labelsTr/``, ``datalist.json``).
        editor: a :class:`NoduleInjector` (inject) or :class:`NoduleEraser` (erase).
        intensity_transform: the GAN's invertible HU window (HU -> [-1, 1] and back).
        fraction: fraction of volumes edited.
        seed: seed of the per-volume random generators.

    Raises:
        ValueError: for an unknown mode.
    """

    def __init__(
        self,
        mode: str,
        source: str,
        out: str,
        editor: Any,
        intensity_transform: Any,
        fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.source, self.out, self.editor = mode, source, out, editor
        self.window, self.fraction, self.seed = intensity_transform, float(fraction), int(seed)

    def _edited(self, i: int) -> bool:
        """Volume ``i`` is edited when ``floor((i + 1) f) > floor(i f)`` (``floor(n f)`` volumes, evenly spread)."""
        f = self.fraction
        return int(np.floor((i + 1) * f + 1e-9)) > int(np.floor(i * f + 1e-9))

    def run(self) -> list[dict[str, Any]]:
        from pathlib import Path

        from ctsynth.data.io import (
            datalist_image_entries,
            list_volumes,
            load_volume,
            nifti_stem,
            save_volume,
            write_json_atomic,
        )
        from ctsynth.engines import invert_intensity, per_index_seed

        out = Path(self.out)
        if self.mode == "inject":
            entries = [{"image": str(p)} for p in list_volumes(self.source)]
        else:
            entries = datalist_image_entries(self.source)
        items = []
        for i, entry in enumerate(entries):
            hu, affine = load_volume(entry["image"])
            label = np.zeros(hu.shape, np.uint8) if "label" not in entry else (load_volume(entry["label"])[0] > 0)
            label = label.astype(np.uint8)
            info: dict[str, Any] = {}
            if self._edited(i):
                x = np.asarray(self.window({"image": torch.as_tensor(hu, dtype=torch.float32)[None]})["image"][0])
                if self.mode == "inject":
                    x, label, placed = self.editor(x, np.random.default_rng(per_index_seed(self.seed, i)))
                    info["injected"] = placed
                else:
                    x, label, count = self.editor(x, label)
                    info["erased"] = count
                hu = invert_intensity(torch.as_tensor(x)[None], self.window)[0].numpy()
            stem = nifti_stem(entry["image"])
            image_path = save_volume(hu.astype(np.float32), affine, out / "imagesTr" / f"{stem}.nii.gz")
            label_path = save_volume(label, affine, out / "labelsTr" / f"{stem}.nii.gz")
            items.append(
                {
                    "image": str(image_path.relative_to(out)),
                    "label": str(label_path.relative_to(out)),
                    "nodule": int(label.any()),
                    **info,
                }
            )
        write_json_atomic({"mode": self.mode, "training": items}, out / "datalist.json")
        logger.info("%s: %d volumes written to %s", self.mode, len(items), out)
        return items
