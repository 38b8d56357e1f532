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
