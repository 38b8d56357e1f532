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
