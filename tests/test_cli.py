"""The ``ctsynth`` command line, run as users run it (console script in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ctsynth.data.io import save_volume

CLI = [sys.executable, "-m", "ctsynth.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_phantoms_datalist_validate_preview(tmp_path):
    out = tmp_path / "ph"
    r = _run("make-phantoms", "--kind", "abdomen", "--n", "4", "--size", "48", "--spacing", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    ds = json.loads((out / "dataset.json").read_text())
    assert len(ds["training"]) == 4
    r = _run("make-datalist", "--source", str(out), "--n_folds", "2", "--test_fraction", "0.25")
    assert r.returncode == 0, r.stderr
    dl = json.loads((out / "datalist.json").read_text())
    assert len(dl["training"]) == 3 and len(dl["testing"]) == 1
    r = _run("validate", str(out / "datalist.json"), "--labels", "1,2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "4 cases OK" in r.stdout
    case = ds["training"][0]
    png = tmp_path / "p.png"
    r = _run("preview", "--image", str(out / case["image"]), "--label", str(out / case["label"]), "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 1000


def test_validate_reports_bad_file_and_exits_nonzero(tmp_path):
    img = save_volume(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4), tmp_path / "a.nii.gz")
    lbl = save_volume(np.ones((8, 8, 9), np.uint8), np.eye(4), tmp_path / "a_lbl.nii.gz")
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": Path(img).name, "label": Path(lbl).name}]}))
    r = _run("validate", str(dl), "--labels", "1")
    assert r.returncode == 1
    assert "a.nii.gz" in r.stderr and "shape" in r.stderr


# ---------------------------------------------------------------- user errors: one paragraph, exit status, no traceback


def _assert_user_error(r: subprocess.CompletedProcess, command: str, message: str, status: int = 1) -> None:
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"ctsynth {command}: error: "), r.stderr
    assert message in r.stderr, r.stderr
    assert r.stderr.rstrip().endswith("(run again with --debug to see the traceback)")
    assert "\n\n" not in r.stderr.strip()  # one paragraph


def test_missing_and_corrupt_files_are_messages_not_tracebacks(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    r = _run("preview", "--image", str(missing), "--out", str(tmp_path / "p.png"))
    _assert_user_error(r, "preview", f"{missing}: file not found")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b truncated")
    r = _run("preview", "--image", str(corrupt), "--out", str(tmp_path / "p.png"))
    _assert_user_error(r, "preview", f"{corrupt}: cannot be read as NIfTI")
    assert not (tmp_path / "p.png").exists()


def test_wrong_and_unknown_flags_exit_2_naming_the_flag(tmp_path):
    out = tmp_path / "ph"
    r = _run("make-phantoms", "--out", str(out), "--n", "abc")
    _assert_user_error(r, "make-phantoms", "--n expects an integer; got 'abc'", status=2)
    r = _run("make-phantoms", "--out", str(out), "--n_cases", "2")  # fire would run with defaults, then fail
    _assert_user_error(r, "make-phantoms", "unknown flag --n_cases; `ctsynth make-phantoms` takes --kind, --n,", 2)
    r = _run("make-phantoms", "--out", str(out), "--kind", "liver", "--n", "1", "--size", "16")
    _assert_user_error(r, "make-phantoms", "unknown phantom kind 'liver'")
    r = _run("validate", str(tmp_path / "dl.json"), "--labels", "pancreas")
    _assert_user_error(r, "validate", "--labels expects integer label values such as --labels 1,2", status=2)
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    r = _run("preview", "--image", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "p.png"), "--debug")
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "FileNotFoundError: " in r.stderr and "missing.nii.gz" in r.stderr


def test_hints_name_cli_flags_not_keyword_arguments(tmp_path, rng):
    from test_dicom import ORIENTATIONS, known_hu, stacked_positions, write_ct_series

    row, column = ORIENTATIONS["axial"]
    write_ct_series(tmp_path / "mr", known_hu(rng), row, column, stacked_positions(row, column), modality="MR")
    r = _run("dicom-to-nifti", "--dicom_dir", str(tmp_path / "mr"), "--out", str(tmp_path / "mr.nii.gz"))
    _assert_user_error(r, "dicom-to-nifti", "has Modality MR, not CT, so its values are not HU (pass --allow_non_ct to")
    assert "allow_non_ct=True" not in r.stderr


def test_keyword_hints_become_flags():
    from ctsynth.cli import as_flag_hints

    assert as_flag_hints("x: 2 series; pass series_uid=<SeriesInstanceUID> to pick one") == (
        "x: 2 series; pass --series_uid=<SeriesInstanceUID> to pick one"
    )
    assert as_flag_hints("(pass allow_non_ct=True to convert)") == "(pass --allow_non_ct to convert)"
    assert as_flag_hints("pass resize_to=(D, H, W).") == "pass --resize_to=(D,H,W)."
    assert as_flag_hints("loaded with weights_only=True") == "loaded with weights_only=True"  # not a hint
