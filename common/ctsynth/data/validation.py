"""Input validation: check every image/label file of a datalist before anything trains on it.

Every file is read once, one case (image + label) at a time, and every problem is collected; then a single
:class:`DataValidationError` lists them, one line per problem, each line starting with the file's path.

Checks (each has its own message):

- the file is missing, or cannot be read (truncated, corrupt, not NIfTI);
- the array is not 3D (2D, or 4D with more than one channel; a trailing axis of length 1 is accepted);
- image: NaN or infinite values; a constant image; intensities that cannot be Hounsfield units (see below);
- label: shape or affine different from its image (affines compared as world positions of the grid's corners,
  tolerance :data:`AFFINE_TOLERANCE_MM`); non-integer values; negative values; values outside
  ``allowed_labels`` (background 0 is always allowed); an empty (all-zero) label;
- datalist: no cases, an image listed in both training and testing, fold numbers not contiguous from 0.

HU rules (``check_hu=True``). Every CT volume holds air (outside the body, lungs, bowel gas, or the scanner's
padding value below -1000), so:

1. intensities all within [-1.5, 1.5] (:data:`NORMALISED_LIMIT`): the image was normalised (to [0, 1] or
   [-1, 1]), not HU;
2. otherwise, no voxel below -500 HU (:data:`AIR_THRESHOLD_HU`): no air, so the values are likely raw stored
   values without the rescale intercept (air near 0), 8-bit exports, or z-scores.

A tight crop inside soft tissue also fails rule 2; pass ``check_hu=False`` for such sets.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctsynth.data.datalist import load_datalist
from ctsynth.data.io import load_volume, spacing_from_affine

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "AIR_THRESHOLD_HU",
    "NORMALISED_LIMIT",
    "CaseSummary",
    "DataValidationError",
    "ValidationReport",
    "check_inputs",
    "validate_datalist",
    "validate_files",
]

logger = logging.getLogger(__name__)

#: Largest distance (mm) between the image's and the label's grid corners still treated as the same grid.
AFFINE_TOLERANCE_MM = 1e-3
#: Rule 1: an image with every value in [-NORMALISED_LIMIT, NORMALISED_LIMIT] is normalised, not HU.
NORMALISED_LIMIT = 1.5
#: Rule 2: an image with no voxel below this value holds no air, so it is probably not in HU.
AIR_THRESHOLD_HU = -500.0
LIST_KEYS = ("training", "validation", "testing", "test")


class DataValidationError(ValueError):
    """Raised with every problem found; ``str(e)`` has one line per problem, each starting with the file path.

    Attributes:
        problems: the problem lines.
    """

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class CaseSummary:
    """What was measured on one valid case.

    Attributes:
        image: image path.
        label: label path, or None.
        shape: array shape (x, y, z).
        spacing: voxel spacing in mm.
        intensity_range: (min, max) of the image.
        label_values: the label values present, or None without a label.
    """

    image: str
    label: str | None
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    intensity_range: tuple[float, float]
    label_values: tuple[int, ...] | None = None


@dataclass
class ValidationReport:
    """Result of a validation that found no problem.

    Attributes:
        n_cases: number of cases (image, or image + label) checked.
        n_checked_files: number of files read.
        cases: one summary per case.
    """

    n_cases: int
    n_checked_files: int
    cases: list[CaseSummary] = field(default_factory=list)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Distinct shapes, sorted."""
        return sorted({c.shape for c in self.cases})

    @property
    def spacings(self) -> list[tuple[float, float, float]]:
        """Distinct spacings (rounded to 0.01 mm), sorted."""
        return sorted({tuple(round(s, 2) for s in c.spacing) for c in self.cases})  # type: ignore[misc]

    @property
    def label_values(self) -> list[int]:
        """Label values present in any label."""
        return sorted({v for c in self.cases if c.label_values for v in c.label_values})

    def __str__(self) -> str:
        if not self.cases:
            return f"{self.n_cases} cases OK ({self.n_checked_files} files)"
        parts = [
            f"{self.n_cases} cases OK ({self.n_checked_files} files)",
            "shapes " + _describe([c.shape for c in self.cases], "{:d}"),
            "spacings " + _describe([c.spacing for c in self.cases], "{:.2f}") + " mm",
        ]
        low = min(c.intensity_range[0] for c in self.cases)
        high = max(c.intensity_range[1] for c in self.cases)
        parts.append(f"intensities {low:.0f} to {high:.0f}")
        if any(c.label is not None for c in self.cases):
            parts.append(f"label values {self.label_values}")
        return "; ".join(parts)


def _describe(values: Sequence[Sequence[float]], fmt: str) -> str:
    """``64x64x32 (all)`` or ``61x60x30 to 64x64x32 per axis (3 distinct)``."""
    join = "x".join
    distinct = sorted({tuple(round(float(v), 2) for v in value) for value in values})
    if len(distinct) == 1:
        return join(fmt.format(type(values[0][0])(v)) for v in values[0]) + " (all)"
    array = np.asarray(values, dtype=np.float64)
    cast = int if fmt == "{:d}" else float
    low = join(fmt.format(cast(v)) for v in array.min(axis=0))
    high = join(fmt.format(cast(v)) for v in array.max(axis=0))
    return f"{low} to {high} per axis ({len(distinct)} distinct)"


def _load_3d(path: Path, problems: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Read one file, appending a problem and returning None when it is missing, unreadable or not 3D."""
    if not path.exists():
        problems.append(f"{path}: missing file")
        return None
    try:
        array, affine = load_volume(path)
    except (ValueError, OSError) as e:
        cause = e.__cause__ or e
        problems.append(f"{path}: unreadable or corrupt file ({type(cause).__name__}: {cause})")
        return None
    shape = array.shape
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        extra = f", {shape[3]} channels" if len(shape) == 4 else ""
        problems.append(f"{path}: not a 3D volume (shape {shape}{extra})")
        return None
    return array, affine


def _check_image(path: Path, array: np.ndarray, check_hu: bool, problems: list[str]) -> tuple[float, float]:
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else None
    if finite is not None and not finite.all():
        n_nan = int(np.isnan(array).sum())
        problems.append(f"{path}: image has NaN or infinite values ({n_nan} NaN, {int((~finite).sum()) - n_nan} inf)")
        if not finite.any():
            return float("nan"), float("nan")
        array = array[finite]
    low, high = float(array.min()), float(array.max())
    if low == high:
        problems.append(f"{path}: constant image (every voxel is {low:g})")
    elif check_hu and low >= -NORMALISED_LIMIT and high <= NORMALISED_LIMIT:
        problems.append(
            f"{path}: intensities in [{low:.3g}, {high:.3g}] look normalised (e.g. to [0, 1] or [-1, 1]), not HU"
        )
    elif check_hu and low > AIR_THRESHOLD_HU:
        problems.append(
            f"{path}: no voxel below {AIR_THRESHOLD_HU:.0f} HU (range [{low:.4g}, {high:.4g}]): no air, so the values "
            "are probably not HU (raw stored values without the rescale intercept, 8-bit or z-scored data)"
        )
    return low, high


def _grid_corners(shape: Sequence[int]) -> np.ndarray:
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape[:3]])), dtype=np.float64)
    return np.concatenate([corners, np.ones((len(corners), 1))], axis=1).T


def _check_label(
    path: Path,
    label: np.ndarray,
    label_affine: np.ndarray,
    image_path: Path,
    image: np.ndarray,
    image_affine: np.ndarray,
    allowed_labels: Iterable[int] | None,
    problems: list[str],
) -> tuple[int, ...] | None:
    if label.shape != image.shape:
        off_by_one = all(abs(a - b) <= 1 for a, b in zip(label.shape, image.shape, strict=True))
        hint = " (off by one voxel: crop or pad the label to the image grid)" if off_by_one else ""
        problems.append(
            f"{path}: label shape {label.shape} differs from image shape {image.shape} of {image_path}{hint}"
        )
    corners = _grid_corners(image.shape)
    distance = float(np.abs((label_affine - image_affine) @ corners)[:3].max())
    if distance > AFFINE_TOLERANCE_MM:
        problems.append(
            f"{path}: label affine differs from the affine of {image_path} (grid corners up to {distance:.4g} mm apart)"
        )
    if np.issubdtype(label.dtype, np.floating):
        fractional = ~np.isfinite(label) | (label != np.round(label))
        if fractional.any():
            examples = np.unique(label[fractional])[:5].tolist()
            problems.append(f"{path}: label has non-integer values ({int(fractional.sum())} voxels, e.g. {examples})")
            return None
    values = np.unique(label).astype(np.int64)
    negative = values[values < 0].tolist()
    if negative:
        problems.append(f"{path}: label has negative values {negative}")
    if allowed_labels is not None:
        allowed = sorted({0, *(int(v) for v in allowed_labels)})
        unexpected = [v for v in values.tolist() if v not in allowed and v >= 0]
        if unexpected:
            problems.append(f"{path}: label values {unexpected} not in allowed labels {allowed}")
    if not values.any():
        problems.append(f"{path}: empty label (every voxel is 0)")
    return tuple(values.tolist())


def _check_case(
    image_path: Path, label_path: Path | None, allowed_labels: Iterable[int] | None, check_hu: bool
) -> tuple[CaseSummary | None, list[str], int]:
    """Check one case; returns its summary (None when it has problems), its problems and the files read."""
    problems: list[str] = []
    image = _load_3d(image_path, problems)
    label = _load_3d(label_path, problems) if label_path is not None else None
    n_files = 1 + (label_path is not None)
    if image is None:
        return None, problems, n_files
    intensity_range = _check_image(image_path, image[0], check_hu, problems)
    label_values = None
    if label is not None:
        label_values = _check_label(
            label_path,
            label[0],
            label[1],
            image_path,
            image[0],
            image[1],
            allowed_labels,
            problems,  # type: ignore
        )
    if problems:
        return None, problems, n_files
    summary = CaseSummary(
        image=str(image_path),
        label=None if label_path is None else str(label_path),
        shape=tuple(int(n) for n in image[0].shape),
        spacing=spacing_from_affine(image[1]),
        intensity_range=intensity_range,
        label_values=label_values,
    )
    return summary, problems, n_files


def validate_files(
    image: str | os.PathLike,
    label: str | os.PathLike | None = None,
    allowed_labels: Iterable[int] | None = None,
    check_hu: bool = True,
) -> ValidationReport:
    """Check one image (and its label).

    Args:
        image: NIfTI image in HU.
        label: optional NIfTI label map on the same grid.
        allowed_labels: label values allowed besides background 0 (default: any non-negative integer).
        check_hu: apply the HU plausibility rules of this module.

    Returns:
        A :class:`ValidationReport` for one case.

    Raises:
        DataValidationError: listing every problem found, one line each.
    """
    summary, problems, n_files = _check_case(
        Path(image), None if label is None else Path(label), allowed_labels, check_hu
    )
    if problems:
        raise DataValidationError(problems)
    return ValidationReport(n_cases=1, n_checked_files=n_files, cases=[summary])  # type: ignore[list-item]


def _resolve(value: Any, base: Path) -> Path:
    return Path(os.path.normpath(base / value))


def _cases_of(datalist: dict[str, Any], source: str, base: Path, problems: list[str]) -> list[tuple[Path, Path | None]]:
    """The (image, label) pairs of every list, deduplicated, after the datalist-level checks."""
    cases: dict[tuple[Path, Path | None], None] = {}
    images_by_key: dict[str, set[Path]] = {}
    for key in LIST_KEYS:
        for n, item in enumerate(datalist.get(key) or []):
            entry = {"image": item} if isinstance(item, (str, os.PathLike)) else item
            if not isinstance(entry, dict) or not entry.get("image"):
                problems.append(f"{source}: entry {n} of '{key}' has no 'image'")
                continue
            if any(isinstance(entry.get(k), (list, tuple)) for k in ("image", "label")):
                problems.append(f"{source}: entry {n} of '{key}' lists several files; expected one file per image")
                continue
            image = _resolve(entry["image"], base)
            label = _resolve(entry["label"], base) if entry.get("label") else None
            images_by_key.setdefault(key, set()).add(image)
            cases[(image, label)] = None
    held_out = images_by_key.get("testing", set()) | images_by_key.get("test", set())
    for image in sorted(images_by_key.get("training", set()) & held_out):
        problems.append(f"{image}: listed in both 'training' and 'testing' (the test split leaks into training)")
    folds = [e.get("fold") for e in datalist.get("training") or [] if isinstance(e, dict) and "fold" in e]
    if folds:
        distinct = sorted({int(f) for f in folds})
        if distinct != list(range(len(distinct))):
            problems.append(f"{source}: fold numbers {distinct} are not contiguous from 0")
    if not cases and not problems:
        problems.append(f"{source}: no cases (the 'training' and 'testing' lists are empty)")
    return list(cases)


def validate_datalist(
    datalist: str | os.PathLike | dict[str, Any],
    base_dir: str | os.PathLike | None = None,
    allowed_labels: Iterable[int] | None = None,
    check_hu: bool = True,
) -> ValidationReport:
    """Check every image and label file of a datalist, streaming one case at a time.

    Args:
        datalist: a datalist JSON or MSD ``dataset.json`` (or a folder holding one), or a datalist dict.
        base_dir: folder relative paths are relative to (default: the JSON's folder, or the working
            directory for a dict).
        allowed_labels: label values allowed besides background 0 (default: any non-negative integer).
        check_hu: apply the HU plausibility rules of this module to the images.

    Returns:
        A :class:`ValidationReport` (``print(report)`` gives a one-line summary).

    Raises:
        DataValidationError: listing every problem found in every file, one line each, each line starting
            with the file's path; also when the datalist itself is missing or not valid JSON.
    """
    if isinstance(datalist, dict):
        source, base = "datalist", Path(base_dir) if base_dir is not None else Path.cwd()
        content = datalist
    else:
        source = str(datalist)
        try:
            content = load_datalist(datalist, base_dir=base_dir)  # absolute paths
        except FileNotFoundError as e:
            raise DataValidationError([f"{datalist}: missing file (datalist not found)"]) from e
        except (ValueError, TypeError) as e:
            raise DataValidationError([f"{datalist}: unreadable datalist ({e})"]) from e
        base = Path.cwd()
    problems: list[str] = []
    cases = _cases_of(content, source, base, problems)
    summaries, n_files = [], 0
    for image, label in _progress(cases):
        summary, case_problems, n = _check_case(image, label, allowed_labels, check_hu)
        n_files += n
        problems.extend(case_problems)
        if summary is not None:
            summaries.append(summary)
    if problems:
        raise DataValidationError(problems)
    return ValidationReport(n_cases=len(cases), n_checked_files=n_files, cases=summaries)


def check_inputs(
    cases: str | os.PathLike | dict[str, Any] | Sequence[Mapping[str, Any]],
    allowed_labels: Iterable[int] | None = None,
    check_hu: bool = True,
    base_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """The shared input checks every bundle runs before it prepares data (those of ``ctsynth validate``).

    Refuses missing or corrupt files, non-3D arrays, NaN or infinite values, intensities that are not HU (when
    ``check_hu``), label values outside the bundle's label set, label grids that differ from their image, and
    empty labels. Usable first in a bundle's data-preparation config, e.g.
    ``"$ctsynth.data.validation.check_inputs(@cases, allowed_labels=@label_values)"``.

    Args:
        cases: ``[{"image": path, "label": path}, ...]``, a datalist dict, or a datalist / ``dataset.json`` path.
        allowed_labels: the bundle's label values besides background 0 (None: any non-negative integer).
        check_hu: apply the HU plausibility rules (see the module docstring).
        base_dir: folder relative paths are relative to (default: the datalist's folder, or the working directory).

    Returns:
        The cases as given (a list), so a config can chain ``prepare(check_inputs(@cases, ...))``.

    Raises:
        DataValidationError: listing every problem, one line per file, each starting with the file's path.
    """
    if isinstance(cases, (str, os.PathLike, dict)):
        validate_datalist(cases, base_dir=base_dir, allowed_labels=allowed_labels, check_hu=check_hu)
        content = cases if isinstance(cases, dict) else load_datalist(cases, base_dir=base_dir)
        return [dict(c) for key in LIST_KEYS for c in content.get(key) or [] if isinstance(c, dict)]
    entries = [dict(c) for c in cases]
    validate_datalist({"training": entries}, base_dir=base_dir, allowed_labels=allowed_labels, check_hu=check_hu)
    return entries


def _progress(cases: list) -> Iterable:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but validation must not need it
        return cases
    return tqdm(cases, desc="validate", unit="case", disable=None, leave=False)
