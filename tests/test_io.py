"""Tests for ctsynth.data.io (NIfTI read/write with the true affine)."""

from __future__ import annotations

import numpy as np
import pytest

from ctsynth.data.io import is_nifti_file, load_volume, nifti_stem, save_volume, spacing_from_affine


def test_roundtrip_keeps_values_affine_and_dtype(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1024
    affine = np.array([[-0.7, 0, 0, 10.0], [0, -0.7, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    path = save_volume(arr, affine, tmp_path / "sub" / "x.nii.gz")
    out, aff = load_volume(path)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_allclose(aff, affine)
    assert out.dtype == np.int16
    assert spacing_from_affine(aff) == pytest.approx((0.7, 0.7, 2.5))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.nii.gz"]  # no temporary file left


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz: file not found"):
        load_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(ValueError, match="corrupt.nii.gz: cannot be read as NIfTI"):
        load_volume(bad)


def test_nifti_file_predicate_and_stem(tmp_path):
    for name in ("a.nii.gz", "b.nii", "._a.nii.gz", "c.txt", "d.nii.gz.bak"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.nii").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir() if is_nifti_file(p)) == ["a.nii.gz", "b.nii"]
    assert [nifti_stem(n) for n in ("a.nii.gz", "b.nii", "dir/case_0000.nii.gz", "c.txt")] == [
        "a",
        "b",
        "case_0000",
        "c",
    ]


def test_atomic_write_keeps_previous_file_when_the_writer_fails(tmp_path):
    from ctsynth.data.io import atomic_write, write_json_atomic

    path = write_json_atomic({"a": 1}, tmp_path / "d" / "x.json")
    assert path.read_text() == '{\n  "a": 1\n}\n'

    def failing(tmp: str) -> None:
        open(tmp, "w").write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_text() == '{\n  "a": 1\n}\n'  # the previous content survives
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]  # no temporary file left


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_gives_the_permissions_of_the_umask(tmp_path, umask):
    import os
    import stat

    from ctsynth.data.io import write_json_atomic

    previous = os.umask(umask)
    try:
        written = [
            write_json_atomic({"a": 1}, tmp_path / "x.json"),
            save_volume(np.zeros((2, 2, 2), np.int16), np.eye(4), tmp_path / "x.nii.gz"),
        ]
        (tmp_path / "plain.txt").write_text("reference")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_saved_volumes_carry_the_same_qform_and_sform(tmp_path):
    import nibabel as nib

    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 2.5]) @ np.diag([-1.0, 1.0, 1.0])  # rotated, left-handed
    affine[:3, 3] = [10.0, -20.0, 30.0]
    header = nib.load(save_volume(np.zeros((3, 4, 5), np.int16), affine, tmp_path / "x.nii.gz")).header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 2)
    np.testing.assert_allclose(qform, affine, atol=1e-5)
    np.testing.assert_allclose(sform, affine, atol=1e-5)


def test_sheared_affine_is_refused_naming_the_file(tmp_path):
    sheared = np.eye(4)
    sheared[1, 2] = 0.5  # a gantry-tilt style shear
    with pytest.raises(ValueError, match="sheared.nii.gz: the affine is sheared .* resample the volume onto an"):
        save_volume(np.zeros((2, 2, 2), np.int16), sheared, tmp_path / "sheared.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_swaps_in_a_complete_folder_only(tmp_path):
    from ctsynth.data.io import atomic_directory

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    with pytest.raises(RuntimeError, match="killed midway"), atomic_directory(out) as partial:
        (partial / "new.txt").write_text("half")
        raise RuntimeError("killed midway")
    assert [p.name for p in out.iterdir()] == ["old.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_directory(out) as partial:
        assert partial.parent == tmp_path and partial.name.startswith(".out.partial-")
        (partial / "new.txt").write_text("complete")
    assert [p.name for p in out.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_cleans_up_after_a_killed_run(tmp_path):
    from ctsynth.data.io import atomic_directory

    dead = 2**22 + 1  # above Linux's largest pid: no such process
    (tmp_path / f".out.partial-{dead}-x1").mkdir()
    (tmp_path / f".out.previous-{dead}-x2").mkdir()  # killed between its two renames: out itself is missing
    (tmp_path / f".out.previous-{dead}-x2" / "kept.txt").write_text("previous output")
    with atomic_directory(tmp_path / "elsewhere"):  # another destination: not touched
        pass
    assert len(list(tmp_path.glob(".out.*"))) == 2
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out"):
        assert (tmp_path / "out" / "kept.txt").read_text() == "previous output"  # put back first
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]


def test_require_finite_names_the_file():
    from ctsynth.data.io import require_finite

    values = np.zeros((3, 4, 5), np.float32)
    assert require_finite(values, "a.nii.gz") is values
    values[1, 2, 3], values[2, 0, 0] = np.nan, -np.inf
    with pytest.raises(
        ValueError, match=r"^a.nii.gz: image has 1 NaN and 1 infinite value\(s\), e.g. at voxel \(1, 2, 3\)$"
    ):
        require_finite(values, "a.nii.gz")
    require_finite(np.zeros(3, np.int16), "b.nii.gz")  # integers are always finite


def test_list_volumes_reads_a_sample_folder_through_its_manifest(tmp_path):
    import json

    from ctsynth.data.io import list_volumes, save_volume

    for name in ("tumor_0000.nii.gz", "tumor_0001.nii.gz", "stale_from_another_model.nii.gz"):
        save_volume(np.zeros((2, 2, 2), np.float32), np.eye(4), tmp_path / name)
    manifest = {"samples": [{"index": 0, "image": "tumor_0000.nii.gz"}, {"index": 1, "image": "tumor_0001.nii.gz"}]}
    (tmp_path / "samples.json").write_text(json.dumps(manifest))
    assert [p.name for p in list_volumes(tmp_path)] == ["tumor_0000.nii.gz", "tumor_0001.nii.gz"]
    manifest["samples"].append({"index": 2, "image": "tumor_0002.nii.gz"})
    (tmp_path / "samples.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=r"samples.json: 1 listed sample\(s\) missing"):
        list_volumes(tmp_path)
    (tmp_path / "samples.json").write_text("{}")
    with pytest.raises(ValueError, match="samples.json: not a sample manifest"):
        list_volumes(tmp_path)
