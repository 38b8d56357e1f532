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


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    step = np.array([0.0, ROW_SPACING, THICKNESS])  # each slice shifted one row along y: a 15.6 degree tilt
    hu = known_hu(rng)
    write_ct_series(tmp_path / "tilt", hu, row, column, stacked_positions(row, column, step=step))
    with pytest.warns(UserWarning, match=r"gantry tilt of 15.64 degrees; resampled onto an orthogonal grid"):
        out = dicom_series_to_nifti(tmp_path / "tilt", tmp_path / "tilt.nii.gz")
    array, affine = load_volume(out)
    np.testing.assert_allclose(affine[:3, :3], np.diag([-COLUMN_SPACING, -ROW_SPACING, THICKNESS]), atol=1e-6)
    for k in range(NZ):  # slice k moved k rows: the same world point keeps its value, air where nothing was acquired
        np.testing.assert_allclose(array[:, k:, k], hu[:, : NY - k, k], atol=1e-3)
        np.testing.assert_array_equal(array[:, :k, k], hu.min())
    # a world point seen in the acquired slice k at row j lies at row j + k of the orthogonal grid
    acquired = expected_ras(2, 3, 0, row, column) + np.array([0.0, -ROW_SPACING, THICKNESS]) * 5  # slice 5, row 3
    np.testing.assert_allclose(affine @ [2, 3 + 5, 5, 1.0], [*acquired, 1.0], atol=1e-4)


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


# ---------------------------------------------------------------- multi-frame objects and broken files

ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def _item(**values) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def write_enhanced_ct(
    path: Path,
    hu: np.ndarray,
    row: np.ndarray,
    column: np.ndarray,
    positions: Sequence[np.ndarray],
    rescales: Sequence[tuple[float, float]],
    sop_class: str = ENHANCED_CT_STORAGE,
    modality: str = "CT",
    seed: int = 0,
) -> Path:
    """Write ``hu`` as one Enhanced CT file: frames in shuffled order, each with its own PlanePositionSequence and
    PixelValueTransformationSequence; orientation and pixel spacing in the shared functional groups."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(positions))
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = modality, "ctsynth-test", "Test^Phantom"
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(positions), hu.shape[1], hu.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = _item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[float(v) for v in (*row, *column)])],
        PixelMeasuresSequence=[_item(PixelSpacing=[ROW_SPACING, COLUMN_SPACING], SliceThickness=THICKNESS)],
    )
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame, stored = [], []
    for k in order:
        slope, intercept = rescales[k]
        per_frame.append(
            _item(
                PlanePositionSequence=[_item(ImagePositionPatient=[float(v) for v in positions[k]])],
                PixelValueTransformationSequence=[
                    _item(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="HU")
                ],
            )
        )
        stored.append(np.round((hu[:, :, k].T - intercept) / slope).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(stored).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_enhanced_ct_uses_per_frame_functional_groups(tmp_path, rng, orientation):
    row, column = ORIENTATIONS[orientation]
    rescales = [(2.0, -1024.0) if k % 2 else (1.0, -1000.0) for k in range(NZ)]  # each frame its own rescale
    hu = known_hu(rng, slope=1.0, intercept=-1000.0)
    hu -= hu % 2  # representable with either rescale
    write_enhanced_ct(tmp_path / "enh" / "ct.dcm", hu, row, column, stacked_positions(row, column), rescales)
    out = dicom_series_to_nifti(tmp_path / "enh", tmp_path / "ct.nii.gz")
    array, affine = load_volume(out)
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array, hu)
    for ijk in [(0, 0, 0), (NX - 1, 0, 0), (0, NY - 1, 0), (0, 0, NZ - 1), (3, 5, 6)]:
        np.testing.assert_allclose(affine @ [*ijk, 1.0], [*expected_ras(*ijk, row, column), 1.0], atol=1e-4)


def test_enhanced_ct_frame_without_position_names_the_file(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    path = write_enhanced_ct(
        tmp_path / "e" / "ct.dcm", known_hu(rng), row, column, stacked_positions(row, column), [(2.0, -1024.0)] * NZ
    )
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    ds.save_as(path)
    with pytest.raises(ValueError, match=r"ct.dcm: frame 3 has no PlanePositionSequence"):
        dicom_series_to_nifti(tmp_path / "e", tmp_path / "x.nii.gz")


@pytest.mark.parametrize(
    "sop_class, modality, message",
    [
        ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", "is a DICOM SEG segmentation, not a CT image"),
        ("1.2.840.10008.5.1.4.1.1.7.2", "OT", "is a multi-frame Secondary Capture"),
    ],
    ids=["seg", "secondary-capture"],
)
def test_other_multiframe_objects_are_refused_with_their_own_message(tmp_path, rng, sop_class, modality, message):
    row, column = ORIENTATIONS["axial"]
    positions, rescales = stacked_positions(row, column), [(2.0, -1024.0)] * NZ
    write_enhanced_ct(tmp_path / "m" / "obj.dcm", known_hu(rng), row, column, positions, rescales, sop_class, modality)
    with pytest.raises(ValueError, match=rf"obj.dcm: multi-frame DICOM \({NZ} frames\) {message}"):
        dicom_series_to_nifti(tmp_path / "m", tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


def _pydicom_data_file(name: str) -> Path:
    """A file of the ``pydicom-data`` package (dev extra); skips when the package is not installed."""
    data_store = pytest.importorskip("data_store", reason="the pydicom-data package is not installed")
    path = Path(data_store.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{name} not in this pydicom-data version")
    return path


def test_enhanced_ct_from_pydicom_data(tmp_path):
    """eCT_Supplemental.dcm: a 2-frame Enhanced CT (512 x 512, frames 10 mm apart, row cosine -x, geometry and
    rescale in the functional groups)."""
    source = _pydicom_data_file("eCT_Supplemental.dcm")
    (tmp_path / "ect").mkdir()
    (tmp_path / "ect" / source.name).symlink_to(source)
    array, affine = load_volume(dicom_series_to_nifti(tmp_path / "ect", tmp_path / "ect.nii.gz"))
    ds = pydicom.dcmread(source)
    assert array.shape == (512, 512, 2)
    # frames sorted along the slice normal (row x column cosines = -z in LPS): the higher z first
    heights = [float(g.PlanePositionSequence[0].ImagePositionPatient[2]) for g in ds.PerFrameFunctionalGroupsSequence]
    first = int(np.argmax(heights))
    np.testing.assert_array_equal(array[:, :, 0], ds.pixel_array[first].T.astype(np.int32) - 1024)
    np.testing.assert_array_equal(array[:, :, 1], ds.pixel_array[1 - first].T.astype(np.int32) - 1024)
    spacing = float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
    np.testing.assert_allclose(spacing_from_affine(affine), (spacing, spacing, 10.0), atol=1e-4)
    x, y, z = (
        float(v) for v in ds.PerFrameFunctionalGroupsSequence[first].PlanePositionSequence[0].ImagePositionPatient
    )
    np.testing.assert_allclose(affine[:3, 3], [-x, -y, z], atol=1e-4)  # LPS -> RAS
    np.testing.assert_allclose(affine @ [0, 0, 1, 1.0], [-x, -y, z - 10.0, 1.0], atol=1e-4)


def test_truncated_slice_is_named(tmp_path, rng):
    row, column = ORIENTATIONS["axial"]
    files = write_ct_series(tmp_path / "cut", known_hu(rng), row, column, stacked_positions(row, column))
    content = files[3].read_bytes()
    files[3].write_bytes(content[:-100])  # pixel data cut short, header intact
    with pytest.raises(ValueError, match=rf"{files[3].name}: truncated DICOM file \(pixel data holds 284 bytes, .*384"):
        dicom_series_to_nifti(tmp_path / "cut", tmp_path / "x.nii.gz")
    files[3].write_bytes(content[:300])  # header cut short
    with pytest.raises(ValueError, match=rf"{files[3].name}: truncated or corrupt DICOM file \(CT Image Storage wit"):
        dicom_series_to_nifti(tmp_path / "cut", tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()
