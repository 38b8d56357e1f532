"""DICOM CT series -> NIfTI: HU values, slice order and RAS affine on series written here with pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctsynth.data.dicom import (
    _orient_like_headers,
    _storage_dtype,
    dicom_series_to_nifti,
    read_dicom_series,
    scan_dicom_folder,
    series_affine,
    sort_slices,
)
from ctsynth.data.io import load_volume, spacing_from_affine

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NX, NY, NZ = 16, 12, 8  # columns, rows, slices
ROW_SPACING, COLUMN_SPACING, THICKNESS = 0.7, 0.8, 2.5  # PixelSpacing = (between rows, between columns)
ORIGIN_LPS = np.array([-100.0, 50.0, 300.0])


def oblique_cosines() -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of a plane rotated 20 degrees about z, then tilted 10 degrees."""
    a, b = np.deg2rad(20.0), np.deg2rad(10.0)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    column = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    return row, column


ORIENTATIONS = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "flipped": (np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])),  # normal points to the feet
    "oblique": oblique_cosines(),
}


def write_ct_series(
    out: Path,
    hu: np.ndarray,
    row: np.ndarray,
    column: np.ndarray,
    positions: Sequence[np.ndarray],
    slope: float = 2.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    series_uid: str | None = None,
    seed: int = 0,
    pixel_spacing: tuple[float, float] = (ROW_SPACING, COLUMN_SPACING),
) -> list[Path]:
    """Write ``hu[:, :, k]`` (columns x rows) at ``positions[k]`` as CT Image Storage files, in shuffled order.

    File names and InstanceNumbers are both random permutations, unrelated to the slice position.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    file_order, instance_numbers = rng.permutation(len(positions)), rng.permutation(len(positions)) + 1
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    paths = []
    for n, k in enumerate(file_order):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientID, ds.PatientName = modality, "ctsynth-test", "Test^Phantom"
        ds.SeriesNumber, ds.InstanceNumber = 1, int(instance_numbers[n])
        ds.ImageOrientationPatient = [float(v) for v in (*row, *column)]
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = THICKNESS
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        stored = np.round((hu[:, :, k].T - intercept) / slope).astype(np.int16)  # DICOM pixels are (rows, columns)
        ds.PixelData = stored.tobytes()
        path = out / f"IM{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stacked_positions(row: np.ndarray, column: np.ndarray, n: int = NZ, step: np.ndarray | None = None) -> list:
    step = np.cross(row, column) * THICKNESS if step is None else step
    return [ORIGIN_LPS + k * step for k in range(n)]


def known_hu(rng: np.random.Generator, slope: float = 2.0, intercept: float = -1024.0) -> np.ndarray:
    """HU values that the stored integers represent exactly; each slice gets its own offset so order shows."""
    stored = rng.integers(0, 1200, size=(NX, NY, NZ)) + 100 * np.arange(NZ)
    return stored * slope + intercept


def expected_ras(i: float, j: float, k: float, row: np.ndarray, column: np.ndarray) -> np.ndarray:
    """World position of voxel (column i, row j, slice k), written out from the DICOM definition, then LPS -> RAS."""
    lps = ORIGIN_LPS + i * COLUMN_SPACING * row + j * ROW_SPACING * column + k * THICKNESS * np.cross(row, column)
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_series_to_nifti_hu_order_affine(tmp_path, rng, orientation):
    row, column = ORIENTATIONS[orientation]
    hu = known_hu(rng)
    files = write_ct_series(tmp_path / "dicom", hu, row, column, stacked_positions(row, column))
    # the files' name order and InstanceNumbers are not the slice order
    heights = [float(np.dot(np.cross(row, column), pydicom.dcmread(f).ImagePositionPatient)) for f in files]
    instances = [int(pydicom.dcmread(f).InstanceNumber) for f in files]
    assert heights != sorted(heights) and np.argsort(instances).tolist() != np.argsort(heights).tolist()

    out = dicom_series_to_nifti(tmp_path / "dicom", tmp_path / "ct.nii.gz")
    assert out == tmp_path / "ct.nii.gz"
    array, affine = load_volume(out)
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array, hu)
    np.testing.assert_allclose(spacing_from_affine(affine), (COLUMN_SPACING, ROW_SPACING, THICKNESS), atol=1e-6)
    for ijk in [(0, 0, 0), (NX - 1, 0, 0), (0, NY - 1, 0), (0, 0, NZ - 1), (3, 5, 6)]:
        np.testing.assert_allclose(affine @ [*ijk, 1.0], [*expected_ras(*ijk, row, column), 1.0], atol=1e-4)


def test_float_slope_is_written_as_float32(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    hu = known_hu(rng, slope=0.5, intercept=-1000.25)
    write_ct_series(tmp_path / "d", hu, row, column, stacked_positions(row, column), slope=0.5, intercept=-1000.25)
    array, _ = load_volume(dicom_series_to_nifti(tmp_path / "d", tmp_path / "ct.nii.gz"))
    assert array.dtype == np.float32
    np.testing.assert_allclose(array, hu, atol=1e-3)


def test_storage_dtype():
    assert _storage_dtype(np.array([-1024, 3071])) == np.int16
    assert _storage_dtype(np.array([-1024.0, 3071.0])) == np.int16
    assert _storage_dtype(np.array([-1024.5, 0.0])) == np.float32
    assert _storage_dtype(np.array([-40000, 0])) == np.float32


def test_sort_slices_ignores_instance_number(tmp_path, rng):
    row, column = ORIENTATIONS["oblique"]
    write_ct_series(tmp_path / "d", known_hu(rng), row, column, stacked_positions(row, column))
    (slices,) = scan_dicom_folder(tmp_path / "d").values()
    ordered = sort_slices(slices)
    positions = np.array([s.position for s in ordered])
    np.testing.assert_allclose(positions, np.array(stacked_positions(row, column)), atol=1e-6)


def test_several_series_error_and_selection(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    hu_a, hu_b = known_hu(rng), known_hu(rng)
    uid_a, uid_b = generate_uid(), generate_uid()
    write_ct_series(tmp_path / "d", hu_a, row, column, stacked_positions(row, column), series_uid=uid_a, seed=1)
    write_ct_series(tmp_path / "b", hu_b, row, column, stacked_positions(row, column), series_uid=uid_b, seed=2)
    for f in (tmp_path / "b").iterdir():  # both series in one folder
        f.rename(tmp_path / "d" / f"B_{f.name}")
    with pytest.raises(ValueError, match=r"holds 2 DICOM series") as info:
        dicom_series_to_nifti(tmp_path / "d", tmp_path / "x.nii.gz")
    assert uid_a in str(info.value) and uid_b in str(info.value)
    assert not (tmp_path / "x.nii.gz").exists()
    array, _ = load_volume(dicom_series_to_nifti(tmp_path / "d", tmp_path / "b.nii.gz", series_uid=uid_b))
    np.testing.assert_array_equal(array, hu_b)
    with pytest.raises(ValueError, match="no series with SeriesInstanceUID 1.2.3"):
        read_dicom_series(tmp_path / "d", series_uid="1.2.3")


def test_series_in_sub_folder_with_other_files(tmp_path, rng):
    row, column = ORIENTATIONS["oblique"]
    hu = known_hu(rng)
    write_ct_series(tmp_path / "patient" / "study" / "series", hu, row, column, stacked_positions(row, column))
    (tmp_path / "patient" / "README.txt").write_text("not dicom")
    report = Dataset()  # a DICOM object without pixels (like a structure set or report) is skipped
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.SeriesInstanceUID, report.Modality = generate_uid(), "SR"
    report.save_as(tmp_path / "patient" / "study" / "series" / "report.dcm", enforce_file_format=True)
    array, affine = read_dicom_series(tmp_path / "patient")
    np.testing.assert_array_equal(array, hu)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "patient" / "study" / "series")[0], hu)
    np.testing.assert_allclose(affine[:3, 3], expected_ras(0, 0, 0, row, column), atol=1e-6)


def test_empty_or_missing_folder(tmp_path):
    empty = tmp_path / "empty_series"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"empty_series: no DICOM image files"):
        dicom_series_to_nifti(empty, tmp_path / "x.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"nowhere: DICOM folder not found"):
        dicom_series_to_nifti(tmp_path / "nowhere", tmp_path / "x.nii.gz")


def test_non_ct_modality(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    write_ct_series(tmp_path / "mr", known_hu(rng), row, column, stacked_positions(row, column), modality="MR")
    with pytest.raises(ValueError, match=r"Modality MR, not CT"):
        dicom_series_to_nifti(tmp_path / "mr", tmp_path / "x.nii.gz")
    with pytest.warns(UserWarning, match="Modality MR"):
        out = dicom_series_to_nifti(tmp_path / "mr", tmp_path / "x.nii.gz", allow_non_ct=True)
    assert out.exists()


def test_missing_and_duplicated_slices(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    positions = stacked_positions(row, column)
    gap = positions[:3] + positions[4:]  # slice 3 missing
    write_ct_series(tmp_path / "gap", known_hu(rng)[:, :, : NZ - 1], row, column, gap)
    with pytest.raises(ValueError, match="non-uniform slice spacing.*missing slices"):
        dicom_series_to_nifti(tmp_path / "gap", tmp_path / "x.nii.gz")
    duplicated = positions[:4] + [positions[3]] + positions[5:]
    write_ct_series(tmp_path / "dup", known_hu(rng), row, column, duplicated)
    with pytest.raises(ValueError, match="same slice position"):
        dicom_series_to_nifti(tmp_path / "dup", tmp_path / "x.nii.gz")


def test_gantry_tilt_keeps_sheared_affine(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    step = np.array([0.0, 0.5, THICKNESS])  # each slice shifted 0.5 mm along y: an 11 degree tilt
    hu = known_hu(rng)
    write_ct_series(tmp_path / "tilt", hu, row, column, stacked_positions(row, column, step=step))
    with pytest.warns(UserWarning, match="gantry tilt of 11.3"):
        array, affine = read_dicom_series(tmp_path / "tilt")
    np.testing.assert_array_equal(array, hu)
    np.testing.assert_allclose(affine[:3, 2], [0.0, -0.5, THICKNESS], atol=1e-6)


@pytest.mark.realct
def test_real_ct_round_trip(tmp_path, real_ct_dir):
    """The real abdominal CT, written as a DICOM series and read back: same HU and same affine."""
    hu, affine = load_volume(real_ct_dir / "ct.nii.gz")
    hu = hu[::2, ::2, ::2]  # a quarter of the slices keeps the test fast
    affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = spacing_from_affine(lps)
    row, column = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    if np.dot(np.cross(row, column), lps[:3, 2]) < 0:
        pytest.skip("real CT affine is left-handed in LPS")
    positions = [lps[:3, 3] + k * lps[:3, 2] for k in range(hu.shape[2])]
    write_ct_series(
        tmp_path / "real", hu, row, column, positions, slope=1.0, intercept=-1024.0, pixel_spacing=spacing[1::-1]
    )
    array, got_affine = load_volume(dicom_series_to_nifti(tmp_path / "real", tmp_path / "real.nii.gz"))
    np.testing.assert_array_equal(array, hu)
    np.testing.assert_allclose(got_affine, affine, atol=1e-3)


def test_reversed_itk_stack_is_flipped_back(tmp_path, rng):
    """If ITK ever stacked the slices against the normal, the array is put back in header order."""
    row, column = ORIENTATIONS["oblique"]
    hu = known_hu(rng)
    write_ct_series(tmp_path / "d", hu, row, column, stacked_positions(row, column))
    (slices,) = scan_dicom_folder(tmp_path / "d").values()
    ordered = sort_slices(slices)
    reversed_affine = series_affine(ordered)
    reversed_affine[:3, 2] *= -1
    np.testing.assert_array_equal(_orient_like_headers(hu[:, :, ::-1], reversed_affine, ordered), hu)
    with pytest.raises(RuntimeError, match="ITK's slice 0 differs from this file's pixels in HU"):
        _orient_like_headers(hu[:, :, ::-1], series_affine(ordered), ordered)
