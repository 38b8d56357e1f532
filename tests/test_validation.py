"""Input validation: every problem is found, reported once per line with the file path, and valid data passes."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ctsynth.data.datalist import make_datalist
from ctsynth.data.io import save_volume
from ctsynth.data.validation import (
    DataValidationError,
    ValidationReport,
    validate_datalist,
    validate_files,
)

SHAPE = (10, 9, 6)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def ct_like(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """HU values with air outside a soft-tissue block."""
    image = np.full(shape, -1000, dtype=np.int16)
    image[2:-2, 2:-2, 1:-1] = rng.integers(-100, 200, size=(shape[0] - 4, shape[1] - 4, shape[2] - 2))
    return image


def mask(shape=SHAPE, values=(1, 2)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    for n, v in enumerate(values):
        label[3 + n, 3:6, 2:4] = v
    return label


def write_case(root: Path, name: str, image: np.ndarray, label: np.ndarray | None, affine=AFFINE, label_affine=None):
    image_path = save_volume(image, affine, root / "imagesTr" / f"{name}.nii.gz")
    label_path = None
    if label is not None:
        label_path = save_volume(
            label, affine if label_affine is None else label_affine, root / "labelsTr" / f"{name}.nii.gz"
        )
    return image_path, label_path


def write_valid_set(root: Path, rng: np.random.Generator, n: int = 6) -> Path:
    for i in range(n):
        write_case(root, f"case_{i}", ct_like(rng), mask())
    return make_datalist(root, n_folds=2, test_fraction=0.2)


def problems_of(call) -> list[str]:
    with pytest.raises(DataValidationError) as info:
        call()
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_valid_set_passes(tmp_path, rng):
    datalist = write_valid_set(tmp_path / "set", rng)
    report = validate_datalist(datalist, allowed_labels=[1, 2])
    assert isinstance(report, ValidationReport)
    assert report.n_cases == 6 and report.n_checked_files == 12
    assert report.shapes == [SHAPE] and report.spacings == [(0.8, 0.8, 2.5)]
    assert report.label_values == [0, 1, 2]
    text = str(report)
    assert text.startswith("6 cases OK (12 files)")
    assert "shapes 10x9x6 (all)" in text and "spacings 0.80x0.80x2.50 (all) mm" in text


def test_report_summarises_several_shapes(tmp_path, rng):
    write_case(tmp_path, "a", ct_like(rng, (10, 9, 6)), None)
    write_case(tmp_path, "b", ct_like(rng, (12, 9, 5)), None, affine=np.diag([0.7, 0.7, 3.0, 1.0]))
    datalist = {"training": [{"image": "imagesTr/a.nii.gz"}, {"image": "imagesTr/b.nii.gz"}]}
    text = str(validate_datalist(datalist, base_dir=tmp_path))
    assert "shapes 10x9x5 to 12x9x6 per axis (2 distinct)" in text
    assert "spacings 0.70x0.70x2.50 to 0.80x0.80x3.00 per axis (2 distinct) mm" in text
    assert "label values" not in text


def test_validate_files_single_pair(tmp_path, rng):
    image, label = write_case(tmp_path, "one", ct_like(rng), mask())
    report = validate_files(image, label)
    assert report.n_cases == 1 and report.cases[0].label_values == (0, 1, 2)
    assert validate_files(image).n_checked_files == 1


def test_every_problem_is_reported_with_its_path(tmp_path, rng):
    root = tmp_path / "bad"
    cases = {}
    cases["ok"] = write_case(root, "ok", ct_like(rng), mask())
    cases["missing"] = (root / "imagesTr" / "missing.nii.gz", root / "labelsTr" / "missing.nii.gz")
    image, label = write_case(root, "truncated", ct_like(rng), mask())
    image.write_bytes(image.read_bytes()[:-60])  # a cut-off download
    cases["truncated"] = (image, label)
    image, label = write_case(root, "random", ct_like(rng), mask())
    image.write_bytes(gzip.compress(rng.bytes(500)))
    cases["random"] = (image, label)
    cases["flat"] = write_case(root, "flat", ct_like(rng)[:, :, 0], mask()[:, :, 0])
    four_d = np.stack([ct_like(rng)] * 2, axis=-1)
    cases["fourd"] = write_case(root, "fourd", four_d, mask())
    cases["shape"] = write_case(root, "shape", ct_like(rng), mask((10, 10, 6)))
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.01
    cases["affine"] = write_case(root, "affine", ct_like(rng), mask(), label_affine=shifted)
    nan_image = ct_like(rng).astype(np.float32)
    nan_image[1, 1, 1], nan_image[2, 2, 2], nan_image[3, 3, 3] = np.nan, np.nan, np.inf
    cases["nan"] = write_case(root, "nan", nan_image, mask())
    cases["empty"] = write_case(root, "empty", ct_like(rng), np.zeros(SHAPE, np.uint8))
    fractional = mask().astype(np.float32)
    fractional[3, 3, 2] = 0.5
    cases["fractional"] = write_case(root, "fractional", ct_like(rng), fractional)
    cases["unexpected"] = write_case(root, "unexpected", ct_like(rng), mask(values=(1, 3, 7)))
    cases["negative"] = write_case(root, "negative", ct_like(rng), mask(values=(1,)).astype(np.int16) - 1)
    unit = (ct_like(rng).astype(np.float32) + 1000) / 3000
    cases["unit"] = write_case(root, "unit", unit, mask())
    cases["symmetric"] = write_case(root, "symmetric", unit * 2 - 1, mask())
    cases["raw"] = write_case(root, "raw", ct_like(rng) + 1024, mask())
    cases["constant"] = write_case(root, "constant", np.full(SHAPE, -1000, np.int16), mask())
    datalist = {
        "training": [{"image": str(i), "label": str(lbl), "fold": 0} for i, lbl in cases.values()],
        "testing": [{"image": str(cases["ok"][0]), "label": str(cases["ok"][1])}],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))

    problems = problems_of(lambda: validate_datalist(path, allowed_labels=[1, 2]))
    expected = {
        ("missing", 0): "missing file",
        ("missing", 1): "missing file",
        ("truncated", 0): "unreadable or corrupt file",
        ("random", 0): "unreadable or corrupt file",
        ("flat", 0): r"not a 3D volume \(shape \(10, 9\)\)",
        ("flat", 1): r"not a 3D volume \(shape \(10, 9\)\)",
        ("fourd", 0): r"not a 3D volume \(shape \(10, 9, 6, 2\), 2 channels\)",
        ("shape", 1): r"label shape \(10, 10, 6\) differs from image shape \(10, 9, 6\) .*off by one voxel",
        ("affine", 1): r"label affine differs from the affine of .*affine.nii.gz \(grid corners up to 0.01 mm apart\)",
        ("nan", 0): r"image has NaN or infinite values \(2 NaN, 1 inf\)",
        ("empty", 1): r"empty label \(every voxel is 0\)",
        ("fractional", 1): r"label has non-integer values \(1 voxels, e.g. \[0.5\]\)",
        ("unexpected", 1): r"label values \[3, 7\] not in allowed labels \[0, 1, 2\]",
        ("negative", 1): r"label has negative values \[-1\]",
        ("unit", 0): r"intensities in \[0, 0\.\d+\] look normalised",
        ("symmetric", 0): r"intensities in \[-1, -0\.\d+\] look normalised",
        ("raw", 0): r"no voxel below -500 HU \(range \[24, 12\d\d\]\): no air",
        ("constant", 0): r"constant image \(every voxel is -1000\)",
    }
    for (case, which), pattern in expected.items():
        path_of_file = str(cases[case][which])
        lines = [p for p in problems if p.startswith(path_of_file + ": ")]
        assert any(re.search(pattern, p) for p in lines), (case, which, lines)
    leak = [p for p in problems if "listed in both 'training' and 'testing'" in p]
    assert leak == [f"{cases['ok'][0]}: listed in both 'training' and 'testing' (the test split leaks into training)"]
    # every line starts with a path; the good case itself has no other problem; nothing is reported twice
    assert all(p.split(": ")[0].endswith((".nii.gz", ".json")) for p in problems)
    assert len(problems) == len(set(problems)) == len(expected) + 1
    assert not [p for p in problems if "ok.nii.gz" in p and "listed in both" not in p]


def test_hu_rules_can_be_switched_off(tmp_path, rng):
    image, _ = write_case(tmp_path, "crop", ct_like(rng)[3:6, 3:6, 2:4], None)  # soft tissue only: no air
    assert problems_of(lambda: validate_files(image))[0].endswith("8-bit or z-scored data)")
    assert validate_files(image, check_hu=False).n_cases == 1


@pytest.mark.realct
def test_hu_rules_accept_real_ct(real_ct_dir):
    report = validate_files(real_ct_dir / "ct.nii.gz", real_ct_dir / "masks" / "pancreas.nii.gz", allowed_labels=[1])
    assert report.cases[0].label_values == (0, 1)


def test_datalist_level_problems(tmp_path, rng):
    with pytest.raises(DataValidationError, match=r"nothing.json: missing file \(datalist not found\)"):
        validate_datalist(tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text("[1, 2")
    with pytest.raises(DataValidationError, match=r"broken.json: unreadable datalist"):
        validate_datalist(tmp_path / "broken.json")
    image, label = write_case(tmp_path, "a", ct_like(rng), mask())
    gaps = {"training": [{"image": str(image), "label": str(label), "fold": f} for f in (0, 2)]}
    assert problems_of(lambda: validate_datalist(gaps)) == ["datalist: fold numbers [0, 2] are not contiguous from 0"]
    assert problems_of(lambda: validate_datalist({"training": []})) == [
        "datalist: no cases (the 'training' and 'testing' lists are empty)"
    ]


def test_msd_dataset_json_with_relative_paths(tmp_path, rng):
    write_case(tmp_path, "a", ct_like(rng), mask())
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}], "test": []})
    )
    assert validate_datalist(tmp_path / "dataset.json").n_checked_files == 2
    assert validate_datalist(tmp_path).n_cases == 1  # a folder holding dataset.json


def test_check_inputs_runs_the_validate_checks_on_cases(tmp_path, rng):
    from ctsynth.data.validation import check_inputs

    good = write_case(tmp_path, "good", ct_like(rng), mask())
    cases = [{"image": str(good[0]), "label": str(good[1])}]
    assert check_inputs(cases, allowed_labels=[1, 2]) == cases
    nan_image = ct_like(rng).astype(np.float32)
    nan_image[4, 4, 3] = np.inf
    bad = write_case(tmp_path, "bad", nan_image, mask(values=(1, 5)))
    problems = problems_of(lambda: check_inputs([*cases, {"image": str(bad[0]), "label": str(bad[1])}], [1, 2]))
    assert problems == [
        f"{bad[0]}: image has NaN or infinite values (0 NaN, 1 inf)",
        f"{bad[1]}: label values [5] not in allowed labels [0, 1, 2]",
    ]
    datalist = write_valid_set(tmp_path / "set", rng, n=3)
    assert len(check_inputs(datalist, allowed_labels=[1, 2])) == 3
    assert problems_of(lambda: check_inputs([])) == [
        "datalist: no cases (the 'training' and 'testing' lists are empty)"
    ]
