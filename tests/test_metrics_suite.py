"""End-to-end evaluation suite: evaluate() on tiny NIfTI sets, the EvaluationSuite object, and the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ctsynth.data.io import save_volume
from ctsynth.metrics.suite import METRICS, EvaluationSuite, evaluate, list_volumes

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
FAST_F3D = {"f3d": {"padding": "same", "resize_to": None}}  # keeps the test fast: no 32^3 -> 64^3 upsampling


def _volume(rng, size=32, shift=0.0):
    body = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 2.0) * 2500.0 + 40.0 + shift
    body[:3] = -1000.0  # a slab of air
    return body.astype(np.float32)


def _mask(rng, size=32):
    m = np.zeros((size,) * 3, dtype=np.uint8)
    c = rng.integers(10, 22, size=3)
    m[c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4, c[2] - 3 : c[2] + 3] = 1
    m[c[0] - 1 : c[0] + 1, c[1] - 1 : c[1] + 1, c[2] - 1 : c[2] + 1] = 2
    return m


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("eval")
    real_imgs, entries = [], []
    for i in range(6):
        img, lbl = root / "real" / f"case{i}.nii.gz", root / "real_labels" / f"case{i}.nii.gz"
        real_imgs.append(_volume(rng))
        save_volume(real_imgs[-1], AFFINE, img)
        save_volume(_mask(rng), AFFINE, lbl, dtype=np.uint8)
        entries.append({"image": str(img), "label": str(lbl)})
    (root / "datalist.json").write_text(json.dumps({"training": entries[:4], "testing": entries[4:]}))
    for i in range(6):
        # samples 0 and 1 copy real volumes (with faint noise / mirrored): the memorisation audit must flag them
        if i == 0:
            v = real_imgs[2] + rng.normal(0, 5.0, real_imgs[2].shape).astype(np.float32)
        elif i == 1:
            v = real_imgs[4][::-1].copy()
        else:
            v = _volume(rng, shift=60.0)
        save_volume(v, AFFINE, root / "syn" / f"sample_{i}.nii.gz")
        save_volume(_mask(rng), AFFINE, root / "syn" / f"sample_{i}_label.nii.gz", dtype=np.uint8)
        save_volume(_mask(rng), AFFINE, root / "syn_labels" / f"sample_{i}.nii.gz", dtype=np.uint8)
        save_volume(_mask(rng), AFFINE, root / "syn_ref" / f"sample_{i}.nii.gz", dtype=np.uint8)
    return root


def test_list_volumes(sets):
    syn = list_volumes(sets / "syn")
    assert [p.name for p in syn] == [f"sample_{i}.nii.gz" for i in range(6)]  # *_label files excluded
    assert len(list_volumes(sets / "datalist.json")) == 6
    with pytest.raises(FileNotFoundError, match="not found"):
        list_volumes(sets / "nope")
    (sets / "empty").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="no NIfTI volumes"):
        list_volumes(sets / "empty")


def test_list_volumes_skips_hidden_resource_forks(tmp_path):
    save_volume(np.zeros((4, 4, 4), np.float32), AFFINE, tmp_path / "sample_0.nii.gz")
    (tmp_path / "._sample_0.nii.gz").write_bytes(b"\x00macos resource fork")  # unreadable: would fail the suite
    assert [p.name for p in list_volumes(tmp_path)] == ["sample_0.nii.gz"]


@pytest.mark.slow
def test_evaluate_default_suite(sets):
    out = sets / "out_default"
    path = evaluate(
        sets / "datalist.json",
        sets / "syn",
        out,
        synthetic_label_dir=sets / "syn_labels",
        synthetic_reference_label_dir=sets / "syn_ref",
        extractor_kwargs=FAST_F3D,
        batch_size=4,
        progress=False,
    )
    report = json.loads(Path(path).read_text())
    expected = {"f3d", "mmd_linear", "mmd_gaussian", "msssim", "psnr", "histogram", "prdc", "memorisation", "masks"}
    assert set(report["metrics"]) == expected
    assert report["n_real"] == 6 and report["n_synthetic"] == 6 and report["random_weights_used"] is False
    assert {"torch", "monai", "numpy"} <= set(report["versions"])
    for name in expected:
        assert "protocol" in report["metrics"][name], name
        assert (out / f"{name}.csv").exists(), name
    assert (out / "histogram_overlay.png").stat().st_size > 1000
    assert (out / "embedding_f3d.png").stat().st_size > 1000
    mem = report["metrics"]["memorisation"]
    assert mem["likely_copies"] == ["sample_0.nii.gz", "sample_1.nii.gz"]
    with open(out / "memorisation.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["voxel_nn_index"] == "case2.nii.gz" and rows[1]["voxel_nn_flip_axis"] == "0"
    masks = report["metrics"]["masks"]
    assert masks["labels"] == [1, 2] and masks["n_real_masks"] == 6 and masks["n_paired"] == 6
    # 8 x 8 x 6 voxels of 1.5 x 1.5 x 2 mm minus the 2^3 label-2 core = (384 - 8) * 4.5 / 1000 mL
    assert masks["label_volumes"]["1"]["real_mean_ml"] == pytest.approx(376 * 4.5 / 1000)
    hist = report["metrics"]["histogram"]
    assert hist["real_peaks_hu"]["air"] is None  # inside the body mask (default): the air slab is not counted
    assert hist["protocol"]["mask"].startswith("ctsynth.transforms.body_mask")
    assert report["metrics"]["msssim"]["protocol"]["config"]["kernel_size"] == 5
    assert 0 < report["metrics"]["prdc"]["k"] <= 5


def test_suite_object_and_distances_grow_with_shift(sets, tmp_path):
    values = []
    for shift in (0.0, 150.0):
        syn = tmp_path / f"syn{int(shift)}"
        for p in list_volumes(sets / "real"):
            from ctsynth.data.io import load_volume

            v, aff = load_volume(p)
            save_volume(v + shift, aff, syn / p.name)
        suite = EvaluationSuite(
            real=sets / "real", synthetic=syn, out=tmp_path / f"o{int(shift)}", metrics="mmd_linear,histogram,psnr"
        )
        values.append(json.loads(suite.run().read_text())["metrics"])
    same, shifted = values
    # each volume differs from the mean real histogram, but the mean synthetic histogram equals it exactly
    assert same["histogram"]["wasserstein_hu_of_mean_histogram"] == pytest.approx(0.0, abs=1e-9)
    assert shifted["histogram"]["wasserstein_hu_of_mean_histogram"] == pytest.approx(150, abs=8)
    assert shifted["histogram"]["wasserstein_hu_mean"] > 100
    assert shifted["mmd_linear"]["value"] > same["mmd_linear"]["value"]
    assert shifted["psnr"]["axial"]["mean"] < same["psnr"]["axial"]["mean"]


def test_bad_inputs(sets, tmp_path):
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(sets / "real", sets / "syn", tmp_path / "o", metrics=["fid_magic"])
    with pytest.raises(ValueError, match="needs synthetic_label_dir"):
        evaluate(sets / "real", sets / "syn", tmp_path / "o", metrics=["masks"])
    odd = tmp_path / "odd"
    save_volume(np.zeros((32, 32, 30), np.float32), AFFINE, odd / "a.nii.gz")
    save_volume(np.zeros((32, 32, 32), np.float32), AFFINE, odd / "b.nii.gz")
    with pytest.raises(ValueError, match="pass resize_to"):
        evaluate(sets / "real", odd, tmp_path / "o", metrics=["mmd_linear"])
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are validated
    path = evaluate(sets / "real", odd, tmp_path / "o2", metrics=["mmd_linear"], resize_to=(16, 16, 16))
    assert json.loads(path.read_text())["volume_shape"] == [16, 16, 16]
    with pytest.raises(Exception, match="weights"):
        evaluate(sets / "real", sets / "syn", tmp_path / "o3", metrics=["fid3d_medicalnet"])
    assert "masks" in METRICS


def test_feature_metrics_is_and_prdc(sets, tmp_path):
    path = evaluate(sets / "real", sets / "syn", tmp_path / "o", metrics="is,prdc", extractor_kwargs=FAST_F3D)
    report = json.loads(path.read_text())
    assert (
        report["metrics"]["is"]["standard"] is False
        and "NON-STANDARD" in report["metrics"]["is"]["protocol"]["definition"]
    )
    assert report["metrics"]["is"]["value"] >= 1.0
    assert set(report["feature_extractors"]) == {"f3d"}
    assert 0.0 <= report["metrics"]["prdc"]["coverage"] <= 1.0


@pytest.mark.slow
def test_cli_evaluate(sets, tmp_path):
    exe = Path(sys.executable).parent / "ctsynth"
    out = tmp_path / "cli"
    cmd = [str(exe), "evaluate", "--real", str(sets / "real"), "--synthetic", str(sets / "syn"), "--out", str(out)]
    res = subprocess.run([*cmd, "--metrics", "mmd_linear,histogram"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"mmd_linear", "histogram"}
    assert (out / "histogram.csv").exists() and (out / "histogram_overlay.png").exists()


def test_evaluate_refuses_nan_and_normalised_volumes(sets, tmp_path):
    rng = np.random.default_rng(0)
    nan_set = tmp_path / "nan"
    v = _volume(rng)
    save_volume(_volume(rng), AFFINE, nan_set / "a.nii.gz")
    v[1, 2, 3] = np.nan
    save_volume(v, AFFINE, nan_set / "b.nii.gz")
    with pytest.raises(ValueError, match=r"nan/b.nii.gz: real volume has 1 NaN and 0 infinite value\(s\)"):
        evaluate(nan_set, sets / "syn", tmp_path / "o", metrics=["mmd_linear"])
    unit = tmp_path / "unit"
    for name in ("a", "b"):
        save_volume(rng.random((32, 32, 32)).astype(np.float32), AFFINE, unit / f"{name}.nii.gz")
    with pytest.raises(ValueError, match=r"unit/a.nii.gz: real volume has intensities in .*, which look normalised"):
        evaluate(unit, sets / "syn", tmp_path / "o", metrics=["mmd_linear"])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.json"))
