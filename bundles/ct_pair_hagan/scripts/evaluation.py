"""The thesis's evaluation (Guttulsrud 2023, Sec. 3.7 and 5.4): 3D FID on MedicalNet ResNet-50 features and its "IS"
on raw pooled activations, computed separately for the image halves and for the masks, beside the standard IS
formula, a 2-D embedding of the features, the suite's mask metrics and its memorisation audit; the thesis's Tables
5.14 and 5.16 beside ours.

The real reference is what the GAN was trained on: every real case through the training preprocessing (z-crop, HU
window, pairing, resize to S^3) and cut back into image (in HU) and mask, as :func:`write_reference` does, so real
and synthetic volumes share one grid. For the "mask" metrics a mask becomes a volume of -1024 HU (background) and
600 HU (foreground): windowed with the training window it is the ``binary_pm1`` code the feature network sees.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, LoadImaged, Resized

from ctsynth.data.io import list_volumes, load_volume, nifti_stem, save_volume, write_json_atomic
from ctsynth.engines import read_manifest
from ctsynth.metrics.builtin import register_builtin_metrics
from ctsynth.metrics.inception_score import inception_score
from ctsynth.metrics.options import EvaluationOptions
from ctsynth.metrics.registry import VOLUME_FEATURES, MetricContext, MetricOutput, MetricRegistry
from ctsynth.metrics.suite import evaluate
from ctsynth.transforms.intensity import HUWindowd, unwindow_hu

from .data import ZCropTabled, decode_pair, pairing_transform, training_pairs

__all__ = ["THESIS_TABLES", "HAGANEvaluation", "hagan_registry", "masks_as_volumes", "write_reference"]

logger = logging.getLogger(__name__)

#: thesis values (Image FID, Mask FID, Image IS, Mask IS): Table 5.14 (128^3 pairs) and Table 5.16 (256^3 pairs).
THESIS_TABLES: dict[int, dict[str, tuple[float, float, float, float]]] = {
    128: {
        "HPO17 (interp_0_2, Table 5.14 'Baseline')": (0.00282, 0.00001, 1.01891, 1.00010),
        "Binary (binary_pm1, Table 5.14)": (0.00207, 0.00006, 1.01973, 1.00003),
    },
    256: {
        "HPO17 (Table 5.16)": (0.05704, 0.00020, 1.05287, 1.00049),
        "HPO17 resampled 1.5 mm (Table 5.16)": (0.01429, 0.00007, 1.08498, 1.00040),
        "Original LR (Table 5.16)": (0.04877, 0.00007, 1.13935, 1.00014),
    },
}
MASK_HU = (-1024.0, 600.0)


def is_softmax_metric(ctx: MetricContext) -> MetricOutput:
    """The standard IS formula (softmax, splits) with the pooled MedicalNet activations as the logits."""
    _, s = ctx.features()
    splits = max(1, min(10, len(s) // 2))
    mean, std = inception_score(torch.as_tensor(s, dtype=torch.float64), splits=splits)
    protocol = {
        "definition": "exp(E_x KL(softmax(f(x)) || mean softmax)) over splits (Salimans et al. 2016) with the "
        "2048 pooled activations f(x) as logits; MedicalNet has no classifier head, so this is the standard formula "
        "on a stand-in for class logits, not the Inception-v3 IS",
        "features": ctx.feature_name(),
        "splits": splits,
    }
    return MetricOutput({"value": mean, "std": std, "protocol": protocol}, [{"metric": "is_softmax", "value": mean}])


def hagan_registry() -> MetricRegistry:
    """The suite's metrics plus ``is_softmax`` (the standard IS formula beside the thesis's raw-feature one)."""
    registry = register_builtin_metrics(MetricRegistry())
    registry.register("is_softmax", is_softmax_metric, features=VOLUME_FEATURES, measures="realism")
    return registry


def write_reference(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    size: int,
    pair_mode: str,
    mask_encoding: str,
    hu_window: Sequence[float] = (-1024.0, 600.0),
    z_crop_table: Mapping[str, int] | None = None,
    max_label: int = 2,
    spacing: Sequence[float] | float = 1.0,
    max_cases: int | None = None,
) -> Path:
    """Write the real pairs as the GAN saw them: ``out/images/<case>.nii.gz`` (HU) and ``out/labels/<case>.nii.gz``.

    Args:
        dataset_dir: the training datalist folder (MSD ``dataset.json`` or ``datalist.json``).
        out: destination folder (replaced).
        size, pair_mode, mask_encoding, hu_window, z_crop_table, max_label: the training preprocessing.
        spacing: voxel spacing of the written volumes (the checkpoint's ``spacing_mm``).
        max_cases: only the first N cases.

    Returns:
        ``out``.
    """
    items = training_pairs(dataset_dir)[:max_cases]
    transform = Compose(
        [
            LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True),
            ZCropTabled(["image", "label"], z_crop_table),
            HUWindowd("image", hu_window[0], hu_window[1], -1.0, 1.0),
            pairing_transform(pair_mode, mask_encoding, max_label),
            Resized("pair", [size] * 3, mode="trilinear", anti_aliasing=True),
        ]
    )
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    affine = np.diag([*np.broadcast_to(np.asarray(spacing, float), (3,)).tolist(), 1.0])
    for item in items:
        pair = transform(dict(item))["pair"]
        image, mask = decode_pair(torch.as_tensor(np.asarray(pair)), pair_mode, mask_encoding, max_label)
        hu = unwindow_hu(image[0].numpy().astype(np.float32), hu_window[0], hu_window[1], -1.0, 1.0)
        stem = nifti_stem(item["image"])
        save_volume(hu, affine, out / "images" / f"{stem}.nii.gz")
        save_volume(mask[0].numpy().astype(np.uint8), affine, out / "labels" / f"{stem}.nii.gz")
    return out


def masks_as_volumes(label_files: Sequence[Path], out: str | os.PathLike) -> Path:
    """Binary masks as volumes of -1024 / 600 HU (the ``binary_pm1`` code after the training window), for the
    feature metrics on masks. Returns ``out`` (replaced)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    for f in label_files:
        mask, affine = load_volume(f)
        save_volume(np.where(mask > 0, MASK_HU[1], MASK_HU[0]).astype(np.float32), affine, out / Path(f).name)
    return out


def _synthetic_labels(samples_dir: Path) -> list[Path]:
    manifest = read_manifest(samples_dir)
    return [samples_dir / r["label"] for r in manifest["samples"] if "label" in r]


class HAGANEvaluation:
    """Images and masks of a sample folder vs the real reference, with the thesis's tables beside ours.

    Args:
        reference_dir: :func:`write_reference` output (``images/``, ``labels/``).
        samples_dir: an inference output folder (``samples.json``, images, ``labels/``).
        out: output folder: ``images/`` and ``masks/`` suite outputs, ``thesis_tables.md`` / ``.json``.
        size: 128 or 256 (which thesis table to print beside ours).
        image_metrics: suite metrics on the image halves.
        mask_metrics: suite metrics on the masks.
        options: :class:`EvaluationOptions` (``window`` should be the training window).
    """

    def __init__(
        self,
        reference_dir: str | os.PathLike,
        samples_dir: str | os.PathLike,
        out: str | os.PathLike,
        size: int,
        image_metrics: Sequence[str],
        mask_metrics: Sequence[str],
        options: EvaluationOptions,
    ) -> None:
        self.reference_dir, self.samples_dir, self.out = Path(reference_dir), Path(samples_dir), Path(out)
        self.size = int(size)
        self.image_metrics, self.mask_metrics = list(image_metrics), list(mask_metrics)
        self.options = options

    def run(self) -> dict[str, Any]:
        """Run both suites and write the tables; returns the summary written to ``thesis_tables.json``."""
        registry = hagan_registry()
        real_labels = list_volumes(self.reference_dir / "labels", exclude_pattern=None)
        syn_labels = _synthetic_labels(self.samples_dir)
        image_opts = EvaluationOptions.from_kwargs(
            self.options, real_label_dir=self.reference_dir / "labels", synthetic_label_dir=self.samples_dir / "labels"
        )
        images = evaluate(
            self.reference_dir / "images",
            self.samples_dir,
            self.out / "images",
            self.image_metrics,
            image_opts,
            registry,
        )
        work = self.out / "mask_volumes"
        masks = evaluate(
            masks_as_volumes(real_labels, work / "real"),
            masks_as_volumes(syn_labels, work / "synthetic"),
            self.out / "masks",
            self.mask_metrics,
            EvaluationOptions.from_kwargs(self.options, hist_body_mask=False),
            registry,
        )
        return self.write_tables(images, masks)

    def write_tables(self, images_json: Path, masks_json: Path) -> dict[str, Any]:
        """``thesis_tables.md`` / ``.json``: our Image/Mask FID and IS beside the thesis's rows."""
        import json

        img, msk = (json.loads(Path(p).read_text())["metrics"] for p in (images_json, masks_json))

        def value(results: dict, name: str) -> float | None:
            return results.get(name, {}).get("value")

        ours = {
            "image_fid": value(img, "fid3d_medicalnet"),
            "mask_fid": value(msk, "fid3d_medicalnet"),
            "image_is_thesis": value(img, "is"),
            "mask_is_thesis": value(msk, "is"),
            "image_is_softmax": value(img, "is_softmax"),
            "mask_is_softmax": value(msk, "is_softmax"),
        }
        flags = sorted({f for r in (img, msk) for m in r.values() if isinstance(m, dict) for f in [m.get("flag")] if f})
        fmt = lambda v: "-" if v is None else f"{v:.5g}"  # noqa: E731
        lines = [
            f"# HA-GAN {self.size}^3 pairs: thesis (Guttulsrud 2023) vs this run",
            "",
            "| Model | Image FID | Mask FID | Image IS (thesis formula) | Mask IS (thesis formula) "
            "| Image IS (softmax) | Mask IS (softmax) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in THESIS_TABLES.get(self.size, {}).items():
            lines.append(f"| thesis: {name} | " + " | ".join(f"{v:.5f}" for v in row) + " | - | - |")  # as printed
        lines.append(
            "| this run | "
            + " | ".join(
                fmt(ours[k])
                for k in (
                    "image_fid",
                    "mask_fid",
                    "image_is_thesis",
                    "mask_is_thesis",
                    "image_is_softmax",
                    "mask_is_softmax",
                )
            )
            + " |"
        )
        lines += [
            "",
            "Comparability: the thesis's numbers are on HECKTOR 2022 (524 H&N CT) with the pretrained MedicalNet "
            "ResNet-50 (resnet_50.pth) and an unstated number of samples; its 'IS' is on raw activations (not "
            "scale-free). Values computed with other data, other sample counts or random weights are not comparable.",
        ]
        if flags:
            lines += ["", "FLAGS (these numbers are not meaningful):", *[f"- {f}" for f in flags]]
        (self.out / "thesis_tables.md").write_text("\n".join(lines) + "\n")
        summary = {"size": self.size, "ours": ours, "thesis": THESIS_TABLES.get(self.size, {}), "flags": flags}
        write_json_atomic(summary, self.out / "thesis_tables.json")
        return summary
