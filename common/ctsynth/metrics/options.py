"""The options of the evaluation suite, in one object (:class:`EvaluationOptions`).

A bundle config builds it with ``{"_target_": "ctsynth.metrics.options.EvaluationOptions", ...}``; the CLI
(``ctsynth evaluate --window ... --max_volumes ...``) passes its flags as field names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_EXCLUDE_PATTERN", "EvaluationOptions"]

# file names excluded from image folders: label maps written next to the images.
DEFAULT_EXCLUDE_PATTERN = r"(^|[_.-])(label|labels|mask|masks|seg)([_.-]|$)"


def _optional_path(value: str | os.PathLike | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass
class EvaluationOptions:
    """How the suite reads, preprocesses and scores the two sets (everything except the sets and the metric names).

    Args:
        real_label_dir: folder of real label maps (default: the datalist's labels, if any) for ``masks``.
        synthetic_label_dir: folder of synthetic label maps for ``masks``.
        synthetic_reference_label_dir: label maps matched by file name with ``synthetic_label_dir`` (e.g. a segmenter's
            output on the synthetic images) for paired Dice / HD95.
        window: HU window mapped to ``[0, 1]`` for the voxel and feature metrics.
        feature_weights: extractor name -> weights file (``medicalnet3d``, ``radimagenet25d``, ``inception2d``).
        allow_random_weights: run pretrained-network metrics with random weights (smoke tests; flagged in the JSON
            and on the console).
        batch_size: volumes per feature-network batch.
        device: torch device of the feature networks.
        max_volumes: cap per set; a seeded random subset is drawn when a set is larger.
        resize_to: common spatial size, e.g. ``(64, 64, 64)`` (an int means a cube).
        seed: seed of subsets and pair sampling.
        hist_range: HU range of the histograms.
        hist_bin_width: histogram bin width in HU.
        hist_body_mask: count only voxels inside :func:`~ctsynth.metrics.histograms.body_mask` (default: on, so the
            histogram distances do not measure the air fraction of the field of view).
        msssim_max_pairs: cap on MS-SSIM pairs per set (seeded subset).
        psnr_pairing: ``"all"`` or ``"random"`` (see :mod:`ctsynth.metrics.psnr`).
        prdc_k: k of PRDC.
        ncc_threshold: memorisation voxel-NCC threshold.
        ratio_threshold: memorisation feature-distance-ratio threshold.
        memorisation_max_shift: largest integer shift (voxels, per axis) over which the memorisation NCC is maximised,
            so that shifted copies are found; 0 compares aligned volumes only.
        extractor_kwargs: extractor name -> extra options for ``get_feature_extractor``.
        f3d_input_scale: factor on the [0, 1] windowed volume fed to the F3D network (and to every metric on its
            features): 1 (default) or 255 for the 0-255 scale the 3DGAUnet paper's F3D magnitudes fit; an
            ``extractor_kwargs["f3d"]["input_scale"]`` given explicitly wins.
        exclude_pattern: regex of file stems skipped in image folders (label maps).
        progress: show tqdm progress bars.

    Raises:
        ValueError: on an empty or reversed window, a bad ``resize_to`` or a negative ``memorisation_max_shift``.
    """

    real_label_dir: str | os.PathLike | None = None
    synthetic_label_dir: str | os.PathLike | None = None
    synthetic_reference_label_dir: str | os.PathLike | None = None
    window: Sequence[float] = (-1024.0, 2000.0)
    feature_weights: Mapping[str, str] = field(default_factory=dict)
    allow_random_weights: bool = False
    batch_size: int = 8
    device: str = "cpu"
    max_volumes: int | None = None
    resize_to: Sequence[int] | int | None = None
    seed: int = 0
    hist_range: Sequence[float] = (-1024.0, 2000.0)
    hist_bin_width: float = 8.0
    hist_body_mask: bool = True
    msssim_max_pairs: int | None = 300
    psnr_pairing: str = "all"
    prdc_k: int = 5
    ncc_threshold: float = 0.95
    ratio_threshold: float = 0.2
    memorisation_max_shift: int = 4
    extractor_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    f3d_input_scale: float = 1.0
    exclude_pattern: str | None = DEFAULT_EXCLUDE_PATTERN
    progress: bool = True

    def __post_init__(self) -> None:
        self.real_label_dir = _optional_path(self.real_label_dir)
        self.synthetic_label_dir = _optional_path(self.synthetic_label_dir)
        self.synthetic_reference_label_dir = _optional_path(self.synthetic_reference_label_dir)
        if len(self.window) != 2 or not float(self.window[1]) > float(self.window[0]):
            raise ValueError(f"window must be (low, high) with high > low, got {tuple(self.window)}.")
        self.window = (float(self.window[0]), float(self.window[1]))
        self.hist_range = (float(self.hist_range[0]), float(self.hist_range[1]))
        self.feature_weights = dict(self.feature_weights or {})
        self.extractor_kwargs = {k: dict(v) for k, v in (self.extractor_kwargs or {}).items()}
        self.allow_random_weights = bool(self.allow_random_weights)
        self.f3d_input_scale = float(self.f3d_input_scale)
        if not self.f3d_input_scale > 0:
            raise ValueError(f"f3d_input_scale must be positive, got {self.f3d_input_scale}.")
        self.hist_body_mask = bool(self.hist_body_mask)
        self.batch_size, self.seed, self.prdc_k = int(self.batch_size), int(self.seed), int(self.prdc_k)
        self.device = str(self.device)
        if isinstance(self.resize_to, int):
            self.resize_to = (self.resize_to,) * 3
        if self.resize_to is not None:
            self.resize_to = tuple(int(s) for s in self.resize_to)
            if len(self.resize_to) != 3 or min(self.resize_to) < 1:
                raise ValueError(f"resize_to must be three positive sizes (D, H, W), got {self.resize_to}.")
        self.ncc_threshold, self.ratio_threshold = float(self.ncc_threshold), float(self.ratio_threshold)
        self.memorisation_max_shift = int(self.memorisation_max_shift)
        if self.memorisation_max_shift < 0:
            raise ValueError(f"memorisation_max_shift must be >= 0 voxels, got {self.memorisation_max_shift}.")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the options (the keyword arguments :meth:`from_kwargs` accepts)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, base: EvaluationOptions | Mapping[str, Any] | None = None, **kwargs: Any) -> EvaluationOptions:
        """Options from a base (an :class:`EvaluationOptions`, a mapping of fields or None) updated with ``kwargs``.

        Raises:
            TypeError: on an unknown option name (the message lists the valid ones).
        """
        values = dataclasses.asdict(base) if isinstance(base, EvaluationOptions) else dict(base or {})
        values.update(kwargs)
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"unknown evaluation option(s) {unknown}; valid options: {cls.field_names()}.")
        return cls(**values)
