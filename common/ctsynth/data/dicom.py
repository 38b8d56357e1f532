"""DICOM CT series -> NIfTI in Hounsfield units with the true affine.

Pixel decoding, rescale slope/intercept and slice ordering are done by ITK through MONAI's
:class:`monai.data.ITKReader` (GDCM underneath, which also decodes compressed transfer syntaxes). The DICOM
headers are read separately with pydicom (no pixel data) to

- find the series in the folder (several series: an error listing their SeriesInstanceUIDs, or pick one),
- check the modality and the geometry (one orientation, one in-plane grid, no duplicated or missing slices),
- compute the affine from ImageOrientationPatient, PixelSpacing and the ImagePositionPatient of the first and
  last slice, sorted by their projection on the slice normal (never by file name or InstanceNumber), and
  convert it from DICOM LPS to NIfTI RAS,
- verify ITK's result: the first and last slices, decoded by pydicom with their own slope/intercept, must
  equal the first and last planes of ITK's array.

Enhanced CT (one multi-frame file, or several, per series) is decoded by pydicom: each frame's position,
orientation, pixel spacing and rescale come from the per-frame functional groups (PlanePositionSequence,
PlaneOrientationSequence, PixelMeasuresSequence, PixelValueTransformationSequence) or, when absent there, from the
shared functional groups; the frames are then sorted and checked like single-frame slices. Other multi-frame objects
(segmentations, secondary captures, other modalities' multi-frame images) are refused, each with its own message.

A gantry-tilted series (slice step not along the slice normal) is resampled onto an orthogonal grid, as established
converters do: each slice is shifted in-plane by its tilt offset (linear interpolation, the series' minimum outside),
so the written affine is never sheared (ITK-based viewers refuse sheared NIfTI affines).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ctsynth.data.io import save_volume

__all__ = [
    "DicomSlice",
    "dicom_series_to_nifti",
    "read_dicom_series",
    "scan_dicom_folder",
    "series_affine",
    "sort_slices",
]

logger = logging.getLogger(__name__)

CT_MODALITY = "CT"
#: Largest distance (mm) between two positions still treated as the same point, and the tolerance of the
#: affine comparisons.
POSITION_TOLERANCE_MM = 1e-3
#: Relative tolerance on the gaps between consecutive slices before the series is called non-uniform.
SLICE_GAP_RELATIVE_TOLERANCE = 0.01
#: Angle (radians) between the slice step and the slice normal above which the series is reported as tilted.
TILT_TOLERANCE_RAD = 1e-3
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: Multi-frame objects refused with their own message (SOP Class UID prefix -> why).
REFUSED_MULTIFRAME = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM SEG segmentation, not a CT image; convert the CT series it refers to",
    "1.2.840.10008.5.1.4.1.1.7.": "a multi-frame Secondary Capture (screenshots or scanned frames) without patient "
    "geometry; convert the original CT series",
}


@dataclass(frozen=True)
class DicomSlice:
    """Header fields of one DICOM image file that the conversion needs.

    Attributes:
        path: the file.
        series_uid: SeriesInstanceUID.
        modality: Modality ("" when absent).
        description: SeriesDescription ("" when absent).
        position: ImagePositionPatient (LPS, mm), or None when absent.
        orientation: ImageOrientationPatient (row cosine, then column cosine), or None when absent.
        pixel_spacing: PixelSpacing (between rows, between columns), or None when absent.
        rows: Rows.
        columns: Columns.
        n_frames: NumberOfFrames (1 for single-frame files).
        slice_thickness: SliceThickness, or None when absent.
        sop_class_uid: SOPClassUID ("" when absent).
        frame: frame index within a multi-frame file (None for single-frame files).
        rescale: (slope, intercept) of this frame for multi-frame files, else None (ITK applies the file's own).
    """

    path: Path
    series_uid: str
    modality: str
    description: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    n_frames: int
    slice_thickness: float | None
    sop_class_uid: str = ""
    frame: int | None = None
    rescale: tuple[float, float] | None = None


def _floats(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None


def _has_dicom_preamble(path: Path) -> bool:
    """Whether the file carries the ``DICM`` marker of a DICOM Part 10 file (after the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_slice_header(path: Path) -> DicomSlice | None:
    """Header of one file, or None when the file is not a DICOM image (other files, DICOMDIR, RTSTRUCT, SR...).

    Raises:
        ValueError: when the file is a DICOM file (``DICM`` marker) whose header cannot be read (truncated).
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError) as e:
        if _has_dicom_preamble(path):
            raise ValueError(f"{path}: truncated or corrupt DICOM file ({type(e).__name__}: {e})") from e
        return None
    required = ("SeriesInstanceUID", "Rows", "Columns")
    if any(k not in ds for k in required):
        sop_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        if sop_class is not None and "Image Storage" in sop_class.name:  # an image file cut short
            missing = ", ".join(k for k in required if k not in ds)
            raise ValueError(f"{path}: truncated or corrupt DICOM file ({sop_class.name} without {missing})")
        return None
    thickness = ds.get("SliceThickness")
    return DicomSlice(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        modality=str(ds.get("Modality", "") or ""),
        description=str(ds.get("SeriesDescription", "") or ""),
        position=_floats(ds.get("ImagePositionPatient")),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient")),
        pixel_spacing=_floats(ds.get("PixelSpacing")),  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        n_frames=int(ds.get("NumberOfFrames", 1) or 1),
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
    )


def scan_dicom_folder(dicom_dir: str | os.PathLike, recursive: bool = True) -> dict[str, list[DicomSlice]]:
    """Read the headers (no pixel data) of every DICOM image file in a folder and group them by series.

    Args:
        dicom_dir: folder to scan.
        recursive: also scan sub-folders (e.g. TCIA's ``patient/study/series/`` layout).

    Returns:
        ``{SeriesInstanceUID: [DicomSlice, ...]}``, files in path order. Files that are not DICOM images
        (other files, DICOMDIR, structure sets, reports) are skipped.

    Raises:
        FileNotFoundError: when ``dicom_dir`` does not exist or is not a folder.
    """
    folder = Path(dicom_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: DICOM folder not found (or not a folder)")
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    series: dict[str, list[DicomSlice]] = {}
    for path in files:
        header = _read_slice_header(path)
        if header is None:
            logger.debug("%s: skipped (not a DICOM image)", path)
            continue
        series.setdefault(header.series_uid, []).append(header)
    return series


def _functional_group(ds: pydicom.Dataset, frame: int, sequence: str) -> pydicom.Dataset | None:
    """The item of ``sequence`` for one frame: from the per-frame functional groups, else the shared ones."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        group = groups[frame] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def enhanced_frames(path: str | os.PathLike) -> tuple[list[DicomSlice], np.ndarray]:
    """The frames of one Enhanced CT file as slices (geometry per frame) and their HU planes.

    Args:
        path: an Enhanced CT Image Storage file.

    Returns:
        ``(frames, planes)``: one :class:`DicomSlice` per frame (``frame`` set, ``rescale`` from the frame's
        PixelValueTransformationSequence) and the HU planes, shape (frames, columns, rows), float64.

    Raises:
        ValueError: when the pixels cannot be decoded or a frame lacks its position, orientation or pixel
            spacing (the message names the file and the frame).
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        stored = np.asarray(ds.pixel_array)
    except Exception as e:
        raise ValueError(f"{path}: cannot decode the Enhanced CT frames ({type(e).__name__}: {e})") from e
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    stored = stored.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    frames, planes = [], []
    for f in range(n_frames):
        position = _functional_group(ds, f, "PlanePositionSequence")
        orientation = _functional_group(ds, f, "PlaneOrientationSequence")
        measures = _functional_group(ds, f, "PixelMeasuresSequence")
        rescale = _functional_group(ds, f, "PixelValueTransformationSequence")
        if position is None or orientation is None or measures is None:
            raise ValueError(
                f"{path}: frame {f + 1} has no PlanePositionSequence, PlaneOrientationSequence or "
                "PixelMeasuresSequence in its per-frame or shared functional groups; cannot compute its geometry"
            )
        slope = float(rescale.get("RescaleSlope", 1.0)) if rescale is not None else float(ds.get("RescaleSlope", 1))
        intercept = (
            float(rescale.get("RescaleIntercept", 0.0)) if rescale is not None else float(ds.get("RescaleIntercept", 0))
        )
        thickness = measures.get("SliceThickness")
        frames.append(
            DicomSlice(
                path=path,
                series_uid=str(ds.SeriesInstanceUID),
                modality=str(ds.get("Modality", "") or ""),
                description=str(ds.get("SeriesDescription", "") or ""),
                position=_floats(position.get("ImagePositionPatient")),  # type: ignore[arg-type]
                orientation=_floats(orientation.get("ImageOrientationPatient")),
                pixel_spacing=_floats(measures.get("PixelSpacing")),  # type: ignore[arg-type]
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                n_frames=1,
                slice_thickness=float(thickness) if thickness not in (None, "") else None,
                sop_class_uid=str(ds.SOPClassUID),
                frame=f,
                rescale=(slope, intercept),
            )
        )
        planes.append((stored[f].astype(np.float64) * slope + intercept).T)
    return frames, np.stack(planes)


def _refuse_other_multiframe(slices: Sequence[DicomSlice]) -> None:
    """Raise for a multi-frame file that is not Enhanced CT, saying what it is."""
    for s in slices:
        if s.n_frames <= 1 or s.sop_class_uid == ENHANCED_CT_STORAGE:
            continue
        why = next((w for uid, w in REFUSED_MULTIFRAME.items() if s.sop_class_uid.startswith(uid)), None)
        if why is None:
            name = pydicom.uid.UID(s.sop_class_uid).name if s.sop_class_uid else "no SOPClassUID"
            why = f"a multi-frame {name} object; only Enhanced CT and single-frame CT series are converted"
        raise ValueError(f"{s.path}: multi-frame DICOM ({s.n_frames} frames) is {why}")


def _slice_normal(orientation: Sequence[float]) -> np.ndarray:
    row_cosine, column_cosine = np.asarray(orientation[:3]), np.asarray(orientation[3:6])
    return np.cross(row_cosine, column_cosine)


def _check_consistent(slices: Sequence[DicomSlice]) -> None:
    """Raise when the slices of a series do not share one grid (the error names the first offending file)."""
    first = slices[0]
    for s in slices:
        if s.position is None or s.orientation is None or len(s.orientation) != 6 or s.pixel_spacing is None:
            raise ValueError(
                f"{s.path}: missing ImagePositionPatient, ImageOrientationPatient or PixelSpacing; "
                "cannot compute the geometry of the series"
            )
        if s.n_frames > 1:
            _refuse_other_multiframe([s])
            raise ValueError(f"{s.path}: Enhanced CT file ({s.n_frames} frames) passed as one slice; use its frames")
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise ValueError(
                f"{s.path}: image size {s.rows}x{s.columns} differs from {first.rows}x{first.columns} of "
                f"{first.path} in the same series {s.series_uid}"
            )
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):  # type: ignore[arg-type]
            raise ValueError(
                f"{s.path}: ImageOrientationPatient {s.orientation} differs from {first.orientation} of "
                f"{first.path} in the same series {s.series_uid}"
            )
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, atol=1e-4):  # type: ignore[arg-type]
            raise ValueError(
                f"{s.path}: PixelSpacing {s.pixel_spacing} differs from {first.pixel_spacing} of "
                f"{first.path} in the same series {s.series_uid}"
            )


def sort_slices(slices: Sequence[DicomSlice]) -> list[DicomSlice]:
    """Sort the slices of one series by ImagePositionPatient projected on the slice normal.

    The normal is the cross product of the row and column direction cosines, so the sorted order runs along
    the third axis of a right-handed (in LPS) voxel grid. File names and InstanceNumber are ignored.

    Args:
        slices: headers of one series (see :func:`scan_dicom_folder`).

    Returns:
        The slices in increasing order along the normal.

    Raises:
        ValueError: when the series has no slices, the slices do not share one grid, two slices share a
            position, or the gaps between slices are not uniform (missing slices); the message names the files.
    """
    if not slices:
        raise ValueError("no slices to sort")
    _check_consistent(slices)
    normal = _slice_normal(slices[0].orientation)  # type: ignore[arg-type]
    heights = np.array([np.dot(normal, s.position) for s in slices])  # type: ignore[arg-type]
    order = np.argsort(heights, kind="stable")
    ordered = [slices[i] for i in order]
    if len(ordered) < 2:
        return ordered
    gaps = np.diff(heights[order])
    duplicated = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
    if duplicated.size:
        i = int(duplicated[0])
        raise ValueError(
            f"{ordered[i + 1].path}: same slice position as {ordered[i].path} "
            f"({duplicated.size} duplicated position(s) in series {slices[0].series_uid}); remove the duplicates"
        )
    median_gap = float(np.median(gaps))
    if np.any(np.abs(gaps - median_gap) > SLICE_GAP_RELATIVE_TOLERANCE * median_gap + POSITION_TOLERANCE_MM):
        i = int(np.argmax(np.abs(gaps - median_gap)))
        raise ValueError(
            f"{ordered[i + 1].path}: non-uniform slice spacing in series {slices[0].series_uid} "
            f"(gaps {gaps.min():.3f} to {gaps.max():.3f} mm, median {median_gap:.3f} mm; largest deviation after "
            f"{ordered[i].path}); missing slices?"
        )
    return ordered


def series_affine(ordered: Sequence[DicomSlice], ras: bool = True) -> np.ndarray:
    """Voxel-to-world affine of a sorted series, for arrays indexed (column, row, slice).

    Column ``i`` of the image runs along the row direction cosine with step PixelSpacing[1], row ``j`` along
    the column direction cosine with step PixelSpacing[0], and slice ``k`` along the step between the first and
    last slice positions (the slice normal times the slice spacing, or a sheared step for gantry-tilted series).

    Args:
        ordered: slices sorted by :func:`sort_slices`.
        ras: convert from DICOM LPS to NIfTI RAS (negate the first two world axes).

    Returns:
        4x4 float64 affine.
    """
    first, last = ordered[0], ordered[-1]
    orientation = np.asarray(first.orientation, dtype=np.float64)
    row_spacing, column_spacing = first.pixel_spacing  # type: ignore[misc]
    if len(ordered) > 1:
        step = (np.asarray(last.position) - np.asarray(first.position)) / (len(ordered) - 1)
    else:  # one slice: its thickness along the normal is the best available guess
        step = _slice_normal(orientation) * (first.slice_thickness or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing
    affine[:3, 1] = orientation[3:] * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = first.position  # type: ignore[assignment]
    return LPS_TO_RAS @ affine if ras else affine


def _select_series(folder: Path, series: dict[str, list[DicomSlice]], series_uid: str | None) -> list[DicomSlice]:
    if not series:
        raise FileNotFoundError(f"{folder}: no DICOM image files found in this folder or its sub-folders")
    if series_uid is not None:
        if series_uid not in series:
            raise ValueError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found:\n{_list_series(series)}")
        return series[series_uid]
    if len(series) > 1:
        raise ValueError(
            f"{folder}: holds {len(series)} DICOM series; pass series_uid=<SeriesInstanceUID> to pick one:\n"
            f"{_list_series(series)}"
        )
    return next(iter(series.values()))


def _list_series(series: dict[str, list[DicomSlice]]) -> str:
    lines = []
    for uid, slices in series.items():
        s = slices[0]
        lines.append(
            f"  {uid}  ({s.modality or 'no modality'}, {len(slices)} files, '{s.description}', {s.path.parent})"
        )
    return "\n".join(lines)


def _check_modality(folder: Path, slices: Sequence[DicomSlice], allow_non_ct: bool) -> None:
    modality = slices[0].modality
    if modality == CT_MODALITY:
        return
    if not modality:
        warnings.warn(f"{folder}: series has no Modality tag; assuming CT in HU", stacklevel=3)
        return
    message = f"{folder}: series {slices[0].series_uid} has Modality {modality}, not CT, so its values are not HU"
    if not allow_non_ct:
        raise ValueError(message + " (pass allow_non_ct=True to convert it anyway)")
    warnings.warn(message, stacklevel=3)


def _read_with_itk(folder: Path, ordered: Sequence[DicomSlice], alone: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read the series with MONAI's ITKReader; returns the (x, y, z) array and ITK's RAS affine.

    ``alone``: the series' files are the only files in ``folder`` itself (no other series, no sub-folders, no
    other DICOM objects such as structure sets).
    """
    from monai.data import ITKReader

    if alone:
        return _itk_get(ITKReader(), folder)
    # ITK reads a folder (its series identifiers are not SeriesInstanceUIDs), so give it one holding only this
    # series' files: symbolic links, or copies where links are not allowed.
    with tempfile.TemporaryDirectory(prefix="ctsynth_dicom_") as tmp:
        for n, s in enumerate(ordered):
            link = Path(tmp) / f"{n:06d}.dcm"
            try:
                link.symlink_to(s.path.resolve())
            except OSError:
                shutil.copyfile(s.path, link)
        return _itk_get(ITKReader(), Path(tmp))


def _itk_get(reader: object, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    image = reader.read(str(folder))  # type: ignore[attr-defined]
    array, meta = reader.get_data(image)  # type: ignore[attr-defined]
    return np.array(array), np.asarray(meta["affine"], dtype=np.float64)


def _hu_plane(path: Path) -> np.ndarray | None:
    """One slice decoded by pydicom with its own slope/intercept, as (column, row); None if pydicom cannot decode."""
    try:
        ds = pydicom.dcmread(path)
        plane = pydicom.pixels.apply_rescale(ds.pixel_array, ds)
    except Exception as e:  # compressed syntaxes need optional pydicom plugins; ITK decoded them
        logger.debug("%s: pydicom cannot decode the pixels (%s); skipping the cross-check", path, e)
        return None
    return np.asarray(plane, dtype=np.float64).T


def _orient_like_headers(array: np.ndarray, itk_affine: np.ndarray, ordered: Sequence[DicomSlice]) -> np.ndarray:
    """Return ITK's array with slices in header order, after checking ITK's order, grid and rescale."""
    n = len(ordered)
    expected_shape = (ordered[0].columns, ordered[0].rows, n)
    if array.shape != expected_shape:
        raise RuntimeError(
            f"{ordered[0].path.parent}: ITK read an array of shape {array.shape}, expected {expected_shape} "
            "(columns, rows, slices) from the headers"
        )
    normal_ras = LPS_TO_RAS[:3, :3] @ _slice_normal(ordered[0].orientation)  # type: ignore[arg-type]
    if n > 1 and np.dot(itk_affine[:3, 2], normal_ras) < 0:  # ITK stacked the slices the other way round
        array = array[:, :, ::-1]
    for k in {0, n - 1}:
        plane = _hu_plane(ordered[k].path)
        if plane is not None and not np.allclose(array[:, :, k], plane, rtol=0, atol=1e-3):
            raise RuntimeError(
                f"{ordered[k].path}: ITK's slice {k} differs from this file's pixels in HU; the slice order or "
                "the rescale slope/intercept was not applied as expected"
            )
    return np.ascontiguousarray(array)


def read_dicom_series(
    dicom_dir: str | os.PathLike, series_uid: str | None = None, allow_non_ct: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read one DICOM CT series as an (x, y, z) array in HU with its RAS affine.

    Args:
        dicom_dir: folder holding the series (sub-folders are scanned too).
        series_uid: SeriesInstanceUID to read when the folder holds several series.
        allow_non_ct: convert a series whose Modality is not CT with a warning instead of an error.

    Returns:
        ``(array, affine)``: values in HU (ITK's pixel type after rescale, int32 or float64), indexed (column,
        row, slice) with slices in increasing order along the slice normal; the 4x4 voxel-to-world RAS affine.

    Raises:
        FileNotFoundError: when the folder does not exist or holds no DICOM image files.
        ValueError: several series and no ``series_uid`` (the message lists them), an unknown ``series_uid``,
            a non-CT modality, or an inconsistent series (mixed grids, duplicated or missing slices).
        RuntimeError: when ITK's result disagrees with the headers.
    """
    folder = Path(dicom_dir)
    series = scan_dicom_folder(folder)
    slices = _select_series(folder, series, series_uid)
    _refuse_other_multiframe(slices)
    _check_modality(folder, slices, allow_non_ct)
    if any(s.n_frames > 1 for s in slices):  # Enhanced CT: frames decoded by pydicom, geometry per frame
        if any(s.n_frames <= 1 for s in slices):
            single = next(s for s in slices if s.n_frames <= 1)
            raise ValueError(f"{single.path}: single-frame file in an Enhanced CT series {single.series_uid}")
        frames, planes = [], []
        for s in slices:
            file_frames, file_planes = enhanced_frames(s.path)
            frames += file_frames
            planes.append(file_planes)
        stacked = np.concatenate(planes)
        ordered = sort_slices(frames)
        index = {(f.path, f.frame): n for n, f in enumerate(frames)}
        array = np.ascontiguousarray(np.moveaxis(stacked[[index[(f.path, f.frame)] for f in ordered]], 0, -1))
        return _without_tilt(folder, array, ordered)
    ordered = sort_slices(slices)
    # ITK may be handed the folder itself only when it holds nothing but this series' files
    alone = {p for p in folder.iterdir() if p.is_file()} == {s.path for s in slices}
    try:
        array, itk_affine = _read_with_itk(folder, ordered, alone)
        array = _orient_like_headers(array, itk_affine, ordered)
    except Exception:
        _raise_for_truncated_pixels(ordered)  # name the broken file when one is the cause
        raise
    return _without_tilt(folder, array, ordered)


def _without_tilt(folder: Path, array: np.ndarray, ordered: Sequence[DicomSlice]) -> tuple[np.ndarray, np.ndarray]:
    """The array and RAS affine of a sorted series; a gantry-tilted series is resampled onto an orthogonal grid.

    Voxel (i, j, k) of the orthogonal grid lies at ``origin + i * column step + j * row step + k * (step . n) n``
    (n the slice normal); in the acquired slice k that point is at in-plane index ``(i, j) - k * offset``, with
    ``offset`` the in-plane part of the slice step in voxels. Each slice is shifted by that amount (linear
    interpolation; outside the acquired slice the series' minimum, i.e. air or the scanner's padding).
    """
    affine = series_affine(ordered)
    if len(ordered) < 2:
        return array, affine
    lps = LPS_TO_RAS @ affine
    normal = _slice_normal(ordered[0].orientation)  # type: ignore[arg-type]
    step = lps[:3, 2]
    tilt = float(np.arccos(np.clip(np.dot(step, normal) / np.linalg.norm(step), -1.0, 1.0)))
    if tilt <= TILT_TOLERANCE_RAD:
        return array, affine
    from scipy import ndimage

    in_plane = step - np.dot(step, normal) * normal
    offset = np.array([np.dot(in_plane, lps[:3, 0]), np.dot(in_plane, lps[:3, 1])]) / (
        np.sum(lps[:3, :2] ** 2, axis=0)
    )  # in voxels along i (columns) and j (rows)
    fill = float(array.min())
    resampled = np.empty(array.shape, dtype=np.float64)
    for k in range(array.shape[2]):
        resampled[:, :, k] = ndimage.shift(array[:, :, k].astype(np.float64), k * offset, order=1, cval=fill)
    orthogonal = lps.copy()
    orthogonal[:3, 2] = np.dot(step, normal) * normal
    largest = float(np.linalg.norm(in_plane) * (array.shape[2] - 1))
    warnings.warn(
        f"{folder}: gantry tilt of {np.degrees(tilt):.2f} degrees; resampled onto an orthogonal grid (slices "
        f"shifted in-plane by up to {largest:.1f} mm, {fill:g} outside the acquired slices)",
        stacklevel=3,
    )
    return resampled, LPS_TO_RAS @ orthogonal


def _raise_for_truncated_pixels(slices: Sequence[DicomSlice]) -> None:
    """Raise a ValueError naming the first slice whose pixel data is shorter than its header says, if any."""
    for s in slices:
        try:
            ds = pydicom.dcmread(s.path)
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                continue
            pixels = ds.PixelData
        except Exception as e:
            raise ValueError(f"{s.path}: truncated or corrupt DICOM file ({type(e).__name__}: {e})") from e
        expected = s.rows * s.columns * s.n_frames * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        if len(pixels) < expected:
            raise ValueError(
                f"{s.path}: truncated DICOM file (pixel data holds {len(pixels)} bytes, the header's "
                f"{s.rows}x{s.columns} image needs {expected}); replace the file or re-export the series"
            )


def _storage_dtype(array: np.ndarray) -> type:
    """int16 when every value is an integer within int16's range, else float32."""
    info = np.iinfo(np.int16)
    if array.size and np.all(np.isfinite(array)) and np.array_equal(array, np.round(array)):
        if array.min() >= info.min and array.max() <= info.max:
            return np.int16
    return np.float32


def dicom_series_to_nifti(
    dicom_dir: str | os.PathLike,
    out: str | os.PathLike,
    series_uid: str | None = None,
    allow_non_ct: bool = False,
) -> Path:
    """Convert one DICOM CT series to a NIfTI volume in HU with the correct RAS affine.

    Args:
        dicom_dir: folder holding the series' files (sub-folders are scanned too).
        out: destination ``.nii.gz`` (or ``.nii``); parent folders are created.
        series_uid: SeriesInstanceUID to convert when the folder holds several series.
        allow_non_ct: convert a non-CT series with a warning instead of an error.

    Returns:
        The written path. The file is int16 when all values are integers that fit, else float32.

    Raises:
        FileNotFoundError: when the folder does not exist or holds no DICOM image files.
        ValueError: see :func:`read_dicom_series`; nothing is written then.
        RuntimeError: when ITK's result disagrees with the headers.
    """
    array, affine = read_dicom_series(dicom_dir, series_uid=series_uid, allow_non_ct=allow_non_ct)
    return save_volume(array, affine, out, dtype=_storage_dtype(array))
