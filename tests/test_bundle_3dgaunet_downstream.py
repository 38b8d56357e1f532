"""pancreas_ct_3dgaunet downstream pieces: PDAC classifier, rotation augmentation, ROC/PR, splits, balancing,
and the train_classifier / blend / evaluate configs run through ``python -m monai.bundle run`` on tiny inputs."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "pancreas_ct_3dgaunet"


@pytest.fixture(scope="module")
def bundle_scripts(bundle_runner):
    """The bundle's ``scripts`` package (the shared ``bundle_runner`` fixture restores ``sys.modules``/``sys.path``)."""
    with bundle_runner("pancreas_ct_3dgaunet").scripts() as scripts:
        import scripts.classifier
        import scripts.cross_validation
        import scripts.evaluation
        import scripts.prepare

        yield scripts


@pytest.fixture(scope="module")
def clf(bundle_scripts):
    return bundle_scripts.classifier


@pytest.fixture(scope="module")
def cv(bundle_scripts):
    return bundle_scripts.cross_validation


@pytest.fixture(scope="module")
def ev(bundle_scripts):
    return bundle_scripts.evaluation


# ----------------------------------------------------------------------------------------------- network


def test_classifier_parameter_count_matches_paper(clf):
    net = clf.PDACClassifier3D()
    assert clf.count_learnable_parameters(net) == 1_351_873
    # BatchNorm running statistics are buffers: 2 * (64 + 64 + 128 + 256) = 1,024 more in Keras' "total"
    n_buffers = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    assert clf.count_learnable_parameters(net) + n_buffers == 1_352_897


def test_classifier_paper_text_variant_count(clf):
    net = clf.PDACClassifier3D(filters="paper_text")
    # convs 1,792 + 221,312 + 884,992 + 3,539,456; BN 1,920; dense 262,656; head 513
    assert clf.count_learnable_parameters(net) == 4_912_641


def test_classifier_output_shape_and_layers(clf):
    torch.manual_seed(0)
    net = clf.PDACClassifier3D(filters=(4, 4, 8, 8)).eval()
    out = net(torch.rand(2, 1, 64, 64, 64))
    assert out.shape == (2, 1)
    # block order as in the paper: conv -> ReLU -> max-pool -> batch norm
    block = net.backbone.blocks[0]
    kinds = [type(m).__name__ for m in block.children()]
    assert kinds == ["Conv3d", "ReLU", "MaxPool3d", "BatchNorm3d"]
    assert net.dropout.p == pytest.approx(0.3)


def test_classifier_same_padding_takes_small_cubes(clf):
    net = clf.PDACClassifier3D(filters=(4, 4, 8, 8), padding="same").eval()
    assert net(torch.rand(1, 1, 16, 16, 16)).shape == (1, 1)


def test_classifier_bad_inputs(clf):
    net = clf.PDACClassifier3D(filters=(4, 4, 8, 8))
    with pytest.raises(ValueError, match="vanishes in the four conv/pool blocks"):
        net(torch.rand(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match=r"expected a \(N, C, D, H, W\) input"):
        net(torch.rand(1, 32, 32, 32))
    with pytest.raises(ValueError, match="unknown classifier variant"):
        clf.PDACClassifier3D(filters="wide")
    with pytest.raises(ValueError, match="dropout must be in"):
        clf.PDACClassifier3D(dropout=1.0)


# ----------------------------------------------------------------------------------------------- augmentation


def test_rotation_single_axis_allowed_angles_both_directions(clf):
    t = clf.RandSingleAxisRotated(keys="image")
    t.set_random_state(seed=0)
    seen = set()
    img = torch.rand(1, 6, 6, 6)
    for _ in range(200):
        t.randomize()  # what every call draws
        assert t.axis in (0, 1, 2)
        assert abs(t.angle_deg) in (5.0, 10.0, 20.0, 40.0)
        seen.add((t.axis, t.angle_deg))
    # every axis, every magnitude and both directions occur
    assert {a for a, _ in seen} == {0, 1, 2}
    assert {abs(g) for _, g in seen} == {5.0, 10.0, 20.0, 40.0}
    assert {math.copysign(1, g) for _, g in seen} == {1.0, -1.0}
    # seeded: the same sequence again
    t2 = clf.RandSingleAxisRotated(keys="image")
    t2.set_random_state(seed=0)
    t.set_random_state(seed=0)
    draws = []
    for tr in (t, t2):
        seq = []
        for _ in range(10):
            tr({"image": img})
            seq.append((tr.axis, tr.angle_deg))
        draws.append(seq)
    assert draws[0] == draws[1]


def test_rotation_turns_only_about_the_drawn_axis(clf):
    from scipy import ndimage

    # a volume that varies in every direction; the rotation about axis a must equal scipy's in-plane rotation
    # of each slice perpendicular to a (by +angle or -angle depending on the handedness convention)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 33)] * 3, indexing="ij")
    vol = (np.exp(-((x - 0.3) ** 2 + 2 * (y + 0.2) ** 2 + 3 * (z - 0.1) ** 2) * 3) + 0.2 * x).astype(np.float32)
    t = clf.RandSingleAxisRotated(keys="image", angles_deg=(20,), padding_mode="border")
    for seed in range(12):
        t.set_random_state(seed=seed)
        out = np.asarray(t({"image": torch.from_numpy(vol[None])})["image"])[0]
        plane = tuple(a for a in range(3) if a != t.axis)
        errors = []
        for sign in (1, -1):
            ref = ndimage.rotate(vol, sign * t.angle_deg, axes=plane, reshape=False, order=1, mode="nearest")
            inner = (slice(8, -8),) * 3
            errors.append(np.abs(out[inner] - ref[inner]).max())
        assert min(errors) < 0.02, (t.axis, t.angle_deg, errors)
        assert max(errors) > 0.05  # the other direction is really different


def test_rotation_bad_angles(clf):
    with pytest.raises(ValueError, match="angles_deg must be a non-empty list of positive angles"):
        clf.RandSingleAxisRotated(keys="image", angles_deg=(0, 5))
    t = clf.RandSingleAxisRotated(keys="image")
    with pytest.raises(ValueError, match=r"expects \(C, x, y, z\) volumes"):
        t({"image": torch.rand(8, 8, 8)})


# ----------------------------------------------------------------------------------------------- ROC / PR


def _auc_brute(y, s):
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    return float(np.mean(pairs))


def _ap_brute(y, s):
    # average over positives of the precision when predicting positive for score >= that positive's score
    return float(np.mean([np.sum((s >= t) & (y == 1)) / np.sum(s >= t) for t in s[y == 1]]))


@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_and_average_precision_vs_brute_force(clf, rng, ties):
    for _ in range(5):
        y = rng.integers(0, 2, size=40)
        y[:2] = [0, 1]
        s = rng.random(40)
        if ties:
            s = np.round(s * 4) / 4
        assert clf.roc_auc(y, s) == pytest.approx(_auc_brute(y, s), abs=1e-12)
        assert clf.average_precision(y, s) == pytest.approx(_ap_brute(y, s), abs=1e-12)


def test_roc_auc_agrees_with_monai(clf, rng):
    from monai.metrics import compute_roc_auc

    y = rng.integers(0, 2, size=50)
    y[:2] = [0, 1]
    s = rng.random(50)
    assert clf.roc_auc(y, s) == pytest.approx(compute_roc_auc(torch.tensor(s), torch.tensor(y)), abs=1e-9)


def test_curves_known_values(clf):
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, thr = clf.roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf
    assert clf.roc_auc(y, s) == pytest.approx(0.75)
    precision, recall, _ = clf.precision_recall_curve(y, s)
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precision, [1, 1, 0.5, 2 / 3, 0.5])
    assert clf.average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert clf.roc_auc([0, 1], [0.2, 0.9]) == 1.0
    assert clf.average_precision([0, 1, 1], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3)


def test_threshold_metrics_confusion(clf):
    y = [1, 1, 1, 0, 0, 0, 0]
    p = [0.9, 0.5, 0.2, 0.7, 0.1, 0.3, 0.49]
    m = clf.binary_threshold_metrics(y, p, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
    assert m["confusion_matrix"] == [[3, 1], [1, 2]]
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == m["tpr"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 4)
    assert math.isnan(clf.binary_threshold_metrics([0, 0], [0.1, 0.2])["precision"])
    s = clf.classification_summary([0, 0], [0.1, 0.2])
    assert math.isnan(s["roc_auc"]) and math.isnan(s["pr_auc"])
    assert clf.json_safe({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


def test_metric_bad_inputs(clf):
    with pytest.raises(ValueError, match="ROC needs both classes"):
        clf.roc_curve([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="needs at least one positive"):
        clf.precision_recall_curve([0, 0], [0.2, 0.3])
    with pytest.raises(ValueError, match="only 0 \\(healthy\\) and 1 \\(PDAC\\)"):
        clf.roc_auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        clf.roc_auc([0, 1], [0.2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        clf.roc_auc([0, 1], [0.2, float("nan")])


def test_save_curve_plots(clf, tmp_path):
    paths = clf.save_curve_plots({"a": ([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.3])}, tmp_path, title="t", prefix="x_")
    for p in paths.values():
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------------- splits / balancing


def test_patient_split_reproduces_paper_counts():
    """One cube per patient, stratified by class: the paper's 35 PDAC + 51 healthy test cubes of 174 + 254."""
    from ctsynth.experiments import make_patient_split

    strata = {f"p{i:03d}": int(i < 174) for i in range(428)}
    split = make_patient_split(list(strata), n_folds=3, test_fraction=0.2, seed=0, stratify_by=strata)
    assert sum(strata[c] for c in split.test) == 35 and sum(1 - strata[c] for c in split.test) == 51
    for fold in split.folds:  # 139 PDAC / 203 healthy dealt over 3 folds
        assert sum(strata[c] for c in fold) in (46, 47) and sum(1 - strata[c] for c in fold) in (67, 68)


def test_balancing_rule_reproduces_paper(cv):
    assert cv.synthetic_counts_for_balance(139, 203, 500, 500, total=164) == (114, 50)
    assert cv.synthetic_counts_for_balance(139, 203, 114, 50) == (114, 50)
    assert cv.synthetic_counts_for_balance(139, 203, 114, 500) == (114, 50)
    # no budget: as many as possible while balanced
    assert cv.synthetic_counts_for_balance(139, 203, 500, 500) == (500, 436)
    # too few synthetic PDAC to balance: all of the minority class, nothing of the majority
    assert cv.synthetic_counts_for_balance(139, 203, 30, 100) == (30, 0)
    # mirrored classes
    assert cv.synthetic_counts_for_balance(203, 139, 500, 500, total=164) == (50, 114)
    assert cv.synthetic_counts_for_balance(10, 10, 7, 9) == (7, 7)
    with pytest.raises(ValueError, match="non-negative integers"):
        cv.synthetic_counts_for_balance(-1, 3, 1, 1)


def _classifier_config() -> dict:
    return json.loads((BUNDLE / "configs" / "train_classifier.json").read_text())


def test_default_synthetic_budget_reproduces_the_papers_counts(cv):
    """With the paper's real training counts (139 PDAC / 203 healthy over 3 folds) and plenty of synthetic cubes, the
    config's defaults add +114 PDAC / +50 healthy (Table 4), the same subset in every fold (about 42 % synthetic)."""
    config = _classifier_config()
    assert config["n_synthetic_total"] is None
    real = [{"image": f"p{i}", "label": 1, "source": "real", "fold": i % 3} for i in range(139)]
    real += [{"image": f"h{i}", "label": 0, "source": "real", "fold": i % 3} for i in range(203)]
    synthetic = [{"image": f"s{i}", "label": i % 2, "source": "synthetic"} for i in range(1000)]
    datalist = {"training": real, "testing": [], "synthetic": synthetic, "n_folds": 3}
    subsets = []
    for fold in range(3):
        run = cv.select_run_data(datalist, "II", fold, synthetic_budget_fraction=config["synthetic_budget_fraction"])
        counts = run["counts"]
        assert counts["train_synthetic"] == {"pdac": 114, "healthy": 50} and counts["synthetic_budget"] == 164
        n_train = counts["train"]["pdac"] + counts["train"]["healthy"]
        assert counts["synthetic_fraction_of_train"] == pytest.approx(164 / n_train) == pytest.approx(0.418, abs=2e-3)
        subsets.append(sorted(it["image"] for it in run["train"] if it["source"] == "synthetic"))
    assert subsets[0] == subsets[1] == subsets[2]
    assert cv.synthetic_budget(342, None) is None
    with pytest.raises(ValueError, match="synthetic_budget_fraction must be >= 0"):
        cv.synthetic_budget(342, -0.1)


def test_classifier_is_tested_with_the_validation_selected_checkpoint(cv, clf, tmp_path):
    """run_one loads model_best.pt (highest validation ROC AUC) before the test evaluator runs; 'final' keeps the
    last weights; a missing best checkpoint is an error naming the file."""
    run_one = _classifier_config()["run_one"]
    load = next(i for i, step in enumerate(run_one) if "load_test_checkpoint" in step)
    assert load < next(i for i, step in enumerate(run_one) if "@test#evaluator.run()" in step)
    assert load > next(i for i, step in enumerate(run_one) if "@train#trainer.run()" in step)
    assert _classifier_config()["test_checkpoint"] == "best"
    net = clf.PDACClassifier3D(filters=[2, 2, 2, 2], padding="same")
    best = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(best, tmp_path / "model_best.pt")
    assert cv.load_test_checkpoint(net, tmp_path, "final") == "final weights"
    assert not torch.equal(net.state_dict()["head.weight"], best["head.weight"])
    assert cv.load_test_checkpoint(net, tmp_path) == str(tmp_path / "model_best.pt")
    assert torch.equal(net.state_dict()["head.weight"], best["head.weight"])
    assert json.loads((tmp_path / "test_checkpoint.json").read_text())["test_checkpoint"] == "best"
    with pytest.raises(FileNotFoundError, match="model_best.pt: no validation-selected checkpoint"):
        cv.load_test_checkpoint(net, tmp_path / "empty")
    with pytest.raises(ValueError, match="test_checkpoint must be 'best' or 'final'"):
        cv.load_test_checkpoint(net, tmp_path, "last")


def _write_cubes(folder: Path, n: int, size: int, seed: int, bright: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        vol = rng.normal(40.0, 15.0, size=(size,) * 3).astype(np.float32)
        c = size // 2
        r = size // 5
        vol[c - r : c + r, c - r : c + r, c - r : c + r] += bright  # hypodense PDAC: bright < 0
        p = folder / f"cube_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(p))
        paths.append(p)
    return paths


def test_build_datalist_and_select_run_data(cv, tmp_path):
    _write_cubes(tmp_path / "real_pdac", 10, 8, 0, -60.0)
    _write_cubes(tmp_path / "real_healthy", 14, 8, 1, 0.0)
    _write_cubes(tmp_path / "syn_pdac", 6, 8, 2, -60.0)
    _write_cubes(tmp_path / "syn_healthy", 6, 8, 3, 0.0)
    out = tmp_path / "lists" / "dl.json"
    dl = cv.build_classifier_datalist(
        tmp_path / "real_pdac", tmp_path / "real_healthy", tmp_path / "syn_pdac", tmp_path / "syn_healthy", out=out
    )
    assert [len(dl[k]) for k in ("training", "testing", "synthetic")] == [19, 5, 12]
    # folders without a cube datalist: each cube is its own patient, stratified by class
    assert sum(it["label"] for it in dl["testing"]) == 2  # round(0.2 * 10) PDAC, round(0.2 * 14) = 3 healthy
    assert dl["training"][0]["image"].startswith("..")  # stored relative to the datalist folder
    loaded = cv.load_classifier_datalist(out)
    assert all(Path(it["image"]).is_file() for k in ("training", "testing", "synthetic") for it in loaded[k])
    test_files = {it["image"] for it in loaded["testing"]}
    vals = []
    for fold in range(3):
        r1 = cv.select_run_data(loaded, "I", fold)
        r2 = cv.select_run_data(loaded, "II", fold)
        assert all(it["source"] == "real" for it in r1["train"] + r1["validate"] + r1["test"])
        assert {it["image"] for it in r1["train"]}.isdisjoint(it["image"] for it in r1["validate"])
        assert test_files.isdisjoint(it["image"] for it in r1["train"] + r1["validate"])
        assert r1["validate"] == r2["validate"] and r1["test"] == r2["test"]
        # real training set 8 PDAC / 11 healthy -> + 6 synthetic PDAC + 3 synthetic healthy (14 / 14 overall)
        assert r2["counts"]["train_synthetic"] == {"pdac": 6, "healthy": 3}
        assert len(r2["train"]) == len(r1["train"]) + 9
        vals += [it["image"] for it in r1["validate"]]
    assert sorted(vals) == sorted(it["image"] for it in loaded["training"])  # folds partition the training set
    with pytest.raises(ValueError, match="experiment must be 'I'"):
        cv.select_run_data(loaded, "III", 0)
    with pytest.raises(ValueError, match="fold must be in 0..2"):
        cv.select_run_data(loaded, "I", 3)
    with pytest.raises(FileNotFoundError, match="classifier datalist not found"):
        cv.load_classifier_datalist(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="folder of cubes not found"):
        cv.build_classifier_datalist(tmp_path / "nope", tmp_path / "real_healthy")


def test_latest_checkpoint(cv, tmp_path):
    assert cv.latest_checkpoint(tmp_path) is None
    for e in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={e}.pt").write_bytes(b"")
    assert cv.latest_checkpoint(tmp_path).endswith("checkpoint_epoch=10.pt")


def test_write_table_layout(ev, tmp_path):
    rows = [{"Model": "3DGAUNet", "FID-Sag": 1.234, "FID-Ax": None}]
    paths = ev.write_table(rows, ["Model", "FID-Sag", "FID-Ax"], tmp_path, "t1", title="T", notes=["n1"])
    md = paths["md"].read_text()
    assert "| Model | FID-Sag | FID-Ax |" in md and "| 3DGAUNet | 1.23 | n/a |" in md and "- n1" in md
    assert json.loads(paths["json"].read_text())["rows"][0]["FID-Ax"] is None
    assert paths["csv"].read_text().splitlines()[1] == "3DGAUNet,1.234,"
    assert ev.PAPER_TABLE1[("pancreas", "3DGAUNet")]["FID-Ax"] == 435.72
    assert ev.PAPER_TABLE3["Blend III"]["FID-Cor"] == 10.06


# ----------------------------------------------------------------------------------------------- configs


def _bundle_run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BUNDLE), str(REPO / "common")])}
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    res = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_train_classifier_properties(cv, tmp_path):
    from monai.bundle import ConfigWorkflow

    _write_cubes(tmp_path / "pdac", 4, 8, 0, -60.0)
    _write_cubes(tmp_path / "healthy", 4, 8, 1, 0.0)
    cv.build_classifier_datalist(tmp_path / "pdac", tmp_path / "healthy", out=tmp_path / "dl.json")
    wf = ConfigWorkflow(
        datalist=str(tmp_path / "dl.json"),
        output_dir=str(tmp_path / "out"),
        config_file=str(BUNDLE / "configs" / "train_classifier.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
    )
    wf.initialize()
    assert wf.check_properties() == []


def test_evaluate_properties(ev):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "evaluate.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
    )
    wf.initialize()
    assert wf.check_properties() == []


@pytest.mark.slow
def test_train_classifier_study_runs(tmp_path):
    """Datalist from folders, then Config I and II x 3 folds, 1 epoch on 32^3 cubes: metrics, curves, table; a nested
    override of the command line reaches every run."""
    _write_cubes(tmp_path / "real_pdac", 8, 32, 0, -60.0)
    _write_cubes(tmp_path / "real_healthy", 11, 32, 1, 0.0)
    _write_cubes(tmp_path / "syn_pdac", 5, 32, 2, -60.0)
    _write_cubes(tmp_path / "syn_healthy", 5, 32, 3, 0.0)
    common = ["--config_file", "configs/train_classifier.json", "--dataset_dir", str(tmp_path / "data")]
    common += ["--split_file", str(tmp_path / "split.json")]
    _bundle_run(
        "make_datalist",
        *common,
        "--real_pdac_dir", str(tmp_path / "real_pdac"),
        "--real_healthy", str(tmp_path / "real_healthy"),
        "--synthetic_pdac_dir", str(tmp_path / "syn_pdac"),
        "--synthetic_healthy_dir", str(tmp_path / "syn_healthy"),
    )  # fmt: skip
    out = tmp_path / "eval"
    tiny = ["--cube_size", "32", "--padding", "same", "--variant", "[4,4,8,8]", "--max_epochs", "1"]
    nested = ["--train#checkpoint_saver#final_filename", "model_last.pt"]
    _bundle_run(*common, "--output_dir", str(out), *tiny, "--batch_size", "2", *nested)
    assert json.loads((tmp_path / "split.json").read_text())["n_folds"] == 3  # recorded by make_datalist
    for exp in ("I", "II"):
        for fold in range(3):
            run = out / f"config_{exp}" / f"fold_{fold}"
            for split in ("validation", "test"):
                m = json.loads((run / split / "metrics.json").read_text())
                assert {"roc_auc", "pr_auc", "precision", "recall", "tpr", "fpr", "confusion_matrix"} <= set(m)
                assert (run / split / "roc.png").is_file() and (run / split / "pr.png").is_file()
            counts = json.loads((run / "counts.json").read_text())
            n_syn = counts["train_synthetic"]
            assert n_syn == ({"pdac": 0, "healthy": 0} if exp == "I" else {"pdac": 5, "healthy": 2})
            assert (run / "model_last.pt").is_file() and not (run / "model_final.pt").exists()  # nested override
            final = torch.load(run / "model_last.pt", weights_only=True)  # network, optimizer, trainer states
            assert "head.weight" in final["model"] and final["trainer"]["max_epochs"] == 1
            assert "head.weight" in torch.load(run / "model_best.pt", weights_only=True)
            used = json.loads((run / "test_checkpoint.json").read_text())  # test scored with the best weights
            assert used == {"test_checkpoint": "best", "weights": str(run / "model_best.pt")}
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["comparison"]["configs"]) == {"I", "II"}
    md = (out / "comparison.md").read_text()
    assert "| Config I |" in md and "| Config II |" in md and "0.670" in md and "0.870" in md
    assert "- ROC AUC (test): **ordering only**" in md and "Protocol: patient-level split" in md
    assert (out / "test_roc.png").is_file() and (out / "test_pr.png").is_file()
    rows = list(csv.DictReader((out / "study_metrics.csv").open()))
    assert len(rows) == 12 and {r["split"] for r in rows} == {"validation", "test"}


def _write_blend_inputs(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "tumor").mkdir(parents=True)
    (root / "tissue").mkdir(parents=True)
    for i in range(3):
        t = np.full((8, 8, 8), -100.0, np.float32)
        t[2:6, 2:6, 2:6] = rng.normal(20, 5, (4, 4, 4))
        nib.save(nib.Nifti1Image(t, np.eye(4)), str(root / "tumor" / f"t{i}.nii.gz"))
        p = rng.normal(100, 10, (16, 16, 16)).astype(np.float32)
        nib.save(nib.Nifti1Image(p, np.eye(4)), str(root / "tissue" / f"p{i}.nii.gz"))


def test_blend_config_runs(tmp_path):
    _write_blend_inputs(tmp_path)
    args = ["--config_file", "configs/blend.json", "--tumor_dir", str(tmp_path / "tumor")]
    args += ["--tissue_dir", str(tmp_path / "tissue"), "--blend_root", str(tmp_path / "out"), "--n_pairs", "2"]
    _bundle_run(*args, "--method", "copy_paste")
    out = tmp_path / "out" / "copy_paste"
    images = sorted((out / "imagesTr").glob("*.nii.gz"))
    assert len(images) == 2 and len(list((out / "labelsTr").glob("*.nii.gz"))) == 2
    img = nib.load(str(images[0]))
    assert img.shape == (16, 16, 16) and np.allclose(img.header.get_zooms(), 1.0)
    data = np.asarray(img.dataobj)
    assert data.max() > 60 and data.min() >= -100.5  # in HU, within the [-100, 170] window
    lbl = np.asarray(nib.load(str(out / "labelsTr" / images[0].name)).dataobj)
    assert set(np.unique(lbl)) <= {0, 1, 2} and (lbl == 2).any()


def _write_eval_inputs(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name, mean in (("tumor_real", 40), ("tumor_syn", 60), ("blend_ref", 40), ("blend/style/imagesTr", 50)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            v = rng.normal(mean, 30, (16, 16, 16)).astype(np.float32)
            nib.save(nib.Nifti1Image(v, np.eye(4)), str(root / name / f"v{i}.nii.gz"))


@pytest.mark.slow
def test_evaluate_config_writes_tables(tmp_path):
    _write_eval_inputs(tmp_path)
    _bundle_run(
        "--config_file", "configs/evaluate.json",
        "--tumor_real", str(tmp_path / "tumor_real"),
        "--tumor_synthetic_dir", str(tmp_path / "tumor_syn"),
        "--pancreas_real", str(tmp_path / "tumor_real"),
        "--pancreas_synthetic_dir", str(tmp_path / "missing"),
        "--blend_reference", str(tmp_path / "blend_ref"),
        "--blend_dir", str(tmp_path / "blend"),
        "--output_dir", str(tmp_path / "out"),
        "--allow_random_weights", "true",
        "--extra_metrics", "[]",
    )  # fmt: skip
    out = tmp_path / "out"
    t1 = json.loads((out / "table1.json").read_text())
    ours = [r for r in t1["rows"] if r["Source"] == "ours"]
    assert len(ours) == 1 and ours[0]["Tissue"] == "tumor" and ours[0]["Model"] == "3DGAUNet"
    assert all(ours[0][c] is not None and ours[0][c] > 0 for c in ("FID-Sag", "FID-Ax", "FID-Cor", "PSNR-Ax"))
    assert t1["random_weights_used"]["tumor_3DGAUNet"] is True
    t2 = json.loads((out / "table2.json").read_text())
    row2 = next(r for r in t2["rows"] if r["Source"] == "ours")
    assert row2["MMD^2"] is not None and 0 < row2["MS-SSIM"] < 1
    md3 = (out / "table3.md").read_text()
    assert "| Blend III | ours |" in md3 and "| Blend III | paper (Shi et al. 2023) | 13.21 | 13.88 | 10.06 |" in md3
    assert "random weights" in (out / "table1.md").read_text()


def test_evaluate_without_inception_weights_fails_clearly(ev, tmp_path):
    from monai.bundle import ConfigWorkflow

    _write_eval_inputs(tmp_path)
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "evaluate.json"),
        meta_file=None,
        logging_file=False,
        tumor_real=str(tmp_path / "tumor_real"),
        tumor_synthetic_dir=str(tmp_path / "tumor_syn"),
        pancreas_synthetic_dir=str(tmp_path / "missing"),
        blend_dir=str(tmp_path / "none"),
        blend_reference=str(tmp_path / "blend_ref"),
        output_dir=str(tmp_path / "out"),
        bundle_root=str(BUNDLE),
    )
    wf.initialize()
    with pytest.raises(RuntimeError) as info:
        wf.run()
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("needs a pretrained weights file" in m for m in chain), chain
    assert not (tmp_path / "out" / "table1.md").exists()


def test_table_values_keep_significant_digits_below_one(ev):
    format_value = ev.format_value
    assert format_value(271.314) == "271.31"
    assert format_value(0.0012345) == "0.00123"
    assert format_value(0.0) == "0.00"
    assert format_value(None) == "n/a"


def test_table_cells_keep_the_column_decimals(ev):
    # 0.67 in a 3-decimal comparison column reads 0.670 like its neighbours; 2-decimal paper cells stay as printed
    assert ev.format_value(0.67, digits=3) == "0.670"
    assert ev.format_value(0.86) == "0.86"
    assert ev.format_value(0.05, digits=3) == "0.050"
    assert ev.format_value(0.05) == "0.0500"  # below 0.1 with 2 decimals: 3 significant digits


def _fake_report(random_extractors: list[str]) -> dict:
    feats = {"fid2d_slices": "inception2d", "f3d": "f3d"}
    metrics = {
        m: {"value": 1.0, "protocol": {"features": feats.get(m)}}
        for m in ("fid2d_slices", "psnr", "f3d", "mmd_linear", "msssim")
    }
    return {
        "random_weights_used": bool(random_extractors),
        "random_weights_notes": {e: "random weights" for e in random_extractors},
        "metrics": metrics,
    }


def test_paper_tables_carry_only_their_own_notes(ev, tmp_path, monkeypatch):
    """Table 2 (F3D's network is untrained by design) is not flagged by random Inception weights, and the notes of
    skipped GAN sets / blends go only to the tables they concern."""
    (tmp_path / "syn").mkdir()
    (tmp_path / "blend3").mkdir()
    evaluation = ev.PaperEvaluation(
        sets=[
            {"tissue": "tumor", "model": "3DGAUNet", "real": "r", "synthetic": str(tmp_path / "syn")},
            {"tissue": "tumor", "model": "3D-GAN", "real": "r", "synthetic": str(tmp_path / "no_gan")},
        ],
        out=tmp_path / "out",
        blend_sets={"Blend I": str(tmp_path / "no_blend"), "Blend III": str(tmp_path / "blend3")},
        blend_reference="ref",
    )
    monkeypatch.setattr(evaluation, "_evaluate", lambda real, syn, out, metrics: _fake_report(["inception2d"]))
    md = {k: Path(v).read_text() for k, v in evaluation.run().items()}
    assert "random weights" in md["table1"] and "random weights" in md["table3"]
    assert "random weights" not in md["table2"]
    assert "no synthetic set" in md["table1"] and "no synthetic set" in md["table2"]
    assert "no synthetic set" not in md["table3"] and "no blended set" in md["table3"]
    assert "no blended set" not in md["table1"] + md["table2"]
    monkeypatch.setattr(evaluation, "_evaluate", lambda real, syn, out, metrics: _fake_report(["f3d"]))
    md = {k: Path(v).read_text() for k, v in evaluation.run().items()}
    # Table 3 carries the blends' F3D too (against the negative set)
    assert "random weights" in md["table2"] + md["table3"] and "random weights" not in md["table1"]


def test_table_header_notes_say_what_is_comparable(ev, tmp_path, monkeypatch):
    """Every value column of Tables 1-3 carries its comparability; F3D follows the input-scale option; Table 3 names
    its reference set (the paper's 100 random abdominal 64^3 cubes) and carries the blends' 3D metrics."""
    for scale, level in ((1.0, "not comparable"), (255.0, "ordering only")):
        tables = ev.paper_tables(f3d_input_scale=scale)
        for table in tables.values():
            values = [c for c in table.columns if c not in (*table.key_columns, "Source")]
            assert set(table.comparability) == set(values), table.name
        assert str(tables["table2"].comparability["F3D"].level) == level
    assert "100 random abdominal 64^3 cubes" in ev.PAPER_TABLES["table3"].protocol
    assert {"F3D", "MMD^2"} <= set(ev.PAPER_TABLES["table3"].columns)
    (tmp_path / "syn").mkdir()
    (tmp_path / "blend2").mkdir()
    evaluation = ev.PaperEvaluation(
        sets=[{"tissue": "tumor", "model": "3DGAUNet", "real": "r", "synthetic": str(tmp_path / "syn")}],
        out=tmp_path / "out",
        blend_sets={"Blend II": str(tmp_path / "blend2")},
        blend_reference="ref",
        suite_options={"f3d_input_scale": 255.0},
    )
    assert evaluation.blend_metrics == ["fid2d_slices", "f3d", "mmd_linear"]
    monkeypatch.setattr(evaluation, "_evaluate", lambda real, syn, out, metrics: _fake_report([]))
    md = {k: Path(v).read_text() for k, v in evaluation.run().items()}
    assert "- F3D: **ordering only** (0-255 input" in md["table2"]
    assert "- MMD^2: **not comparable**" in md["table2"] and "- MS-SSIM: **ordering only**" in md["table2"]
    assert "input [0, 255]" in md["table2"] and "100 random abdominal 64^3 cubes" in md["table3"]
    assert "- F3D, MMD^2: **ordering only** (no published value" in md["table3"]
    assert "| Blend II | ours | n/a | n/a | n/a | 1.00 | 1.00 |" in md["table3"]  # the fake has no per-plane FID


def test_build_datalist_too_few_cubes_names_the_folder(cv, tmp_path):
    # 3 PDAC cubes: round(0.2 * 3) = 1 goes to the test set, 2 are left for 3 folds
    _write_cubes(tmp_path / "pdac", 3, 4, 0, -60.0)
    _write_cubes(tmp_path / "healthy", 6, 4, 1, 0.0)
    msg = f"3 real PDAC cube\\(s\\) from {tmp_path / 'pdac'}: 2 left after the 0.2 test split, fewer than n_folds=3"
    with pytest.raises(ValueError, match=msg):
        cv.build_classifier_datalist(tmp_path / "pdac", tmp_path / "healthy")
    assert len(cv.build_classifier_datalist(tmp_path / "pdac", tmp_path / "healthy", n_folds=2)["training"]) == 7


def test_config_ii_without_synthetic_cubes_warns(cv, tmp_path, caplog):
    _write_cubes(tmp_path / "pdac", 5, 4, 0, -60.0)
    _write_cubes(tmp_path / "healthy", 7, 4, 1, 0.0)
    dl = cv.build_classifier_datalist(tmp_path / "pdac", tmp_path / "healthy")
    caplog.set_level("WARNING", logger=cv.logger.name)
    run_i, run_ii = cv.select_run_data(dl, "I", 0), cv.select_run_data(dl, "II", 0)
    assert run_ii["train"] == run_i["train"]
    assert "Config II fold 0: no synthetic cube added (0 synthetic PDAC, 0 synthetic healthy" in caplog.text
    caplog.clear()
    cv.select_run_data(dl, "I", 0)
    assert "no synthetic cube" not in caplog.text


# ----------------------------------------------------------------------------------------------- patient split


def _run_config(config: str, run_id: str = "run", **overrides) -> None:
    """``monai.bundle.run`` of a bundle config in process (a ``scripts`` fixture puts the bundle on sys.path)."""
    from monai.bundle import run

    run(run_id=run_id, config_file=str(BUNDLE / "configs" / config), logging_file=False, **overrides)


def test_build_datalist_keeps_each_patient_on_one_side(cv, tmp_path):
    """Cubes cut by prepare_cubes (PDAC and healthy of the same scans): split by patient, never by cube."""
    from ctsynth.experiments import make_patient_split

    cases = [f"scan_{i}" for i in range(9)]
    for kind, bright in (("pdac", -60.0), ("healthy", 0.0)):
        paths = _write_cubes(tmp_path / kind / "images", 9, 4, 0, bright)
        items = []
        for case, p in zip(cases, paths, strict=True):
            p.rename(p.with_name(f"{case}_orig.nii.gz"))
            items.append({"image": f"images/{case}_orig.nii.gz", "case": case, "augmentation": "orig"})
        (tmp_path / kind / "datalist.json").write_text(json.dumps({"training": items}))
    split = make_patient_split(cases, n_folds=2, test_fraction=0.3, seed=4)
    split.save(tmp_path / "split.json")
    dl = cv.build_classifier_datalist(
        tmp_path / "pdac" / "images", tmp_path / "healthy" / "images", n_folds=2, split_file=tmp_path / "split.json"
    )
    assert {it["case"] for it in dl["testing"]} == set(split.test) and len(dl["testing"]) == 2 * len(split.test)
    for it in dl["training"]:
        assert it["fold"] == split.fold_of(it["case"])  # both cubes of a scan in its patient's fold
    with pytest.raises(ValueError, match="the recorded patient split has 2 folds, not n_folds=3"):
        cv.build_classifier_datalist(
            tmp_path / "pdac" / "images", tmp_path / "healthy" / "images", split_file=tmp_path / "split.json"
        )
    leaky = {**dl, "training": dl["training"] + [{**dl["testing"][0], "fold": 0}]}
    with pytest.raises(ValueError, match=r"Config I fold 1: test patient\(s\) in the training input"):
        cv.select_run_data(leaky, "I", 1)


@pytest.mark.slow
def test_study_keeps_test_patients_out_of_every_training_input(cv, bundle_scripts, tmp_path):
    """A small study on phantoms (with and without tumours): the split is made first and recorded, and no stage's
    training input (GAN cubes of both GANs, blend inputs, every classifier arm and fold) holds a test patient."""
    from monai.bundle import ConfigParser

    from ctsynth.data.phantoms import write_phantom_dataset
    from ctsynth.experiments import PatientSplit, case_id_of

    dataset = write_phantom_dataset(
        tmp_path / "phantoms", kind="abdomen", n=6, size=64, spacing=2.0, seed=0, tumor_fraction=0.5
    )
    cubes = tmp_path / "cubes"
    _run_config(
        "prepare_data.json",
        dataset_dir=str(dataset.parent),
        output_dir=str(cubes),
        augment_per_volume=1,
        n_folds=2,
        test_fraction=0.34,
    )
    split = PatientSplit.load(cubes / "split.json")  # recorded in the run folder
    all_cases = {case_id_of(c) for c in json.loads(dataset.read_text())["training"]}
    test = set(split.test)
    assert set(split.cases) == all_cases and len(test) == 2 and split.to_dict()["stratified"]
    assert sorted(split.strata[c] for c in test) == ["healthy", "tumour"]  # one of each class held out

    # both GANs: what train.json feeds its trainer
    for model in ("tumor", "pancreas"):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "train.json"))
        parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(cubes / model), "model": model})
        items = parser.get_parsed_content("train#datalist")
        assert items and {it["case"] for it in items}.isdisjoint(test), model
    # a cube datalist that lists a test patient's cube is refused when a GAN loads it
    datalist_file = cubes / "tumor" / "datalist.json"
    data = json.loads(datalist_file.read_text())
    data["training"].append({**data["training"][0], "case": sorted(test)[0]})
    datalist_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"test patient\(s\) in the training input: \['{sorted(test)[0]}'\]"):
        bundle_scripts.prepare.load_cube_datalist(datalist_file)
    data["training"].pop()
    datalist_file.write_text(json.dumps(data))

    # classifier: cubes from every patient (test patients' cubes are test cubes), split by the recorded split
    clf_dir = tmp_path / "clf"
    common = {"dataset_dir": str(clf_dir), "real_ct_dir": str(dataset.parent), "split_file": str(cubes / "split.json")}
    _run_config("train_classifier.json", "make_cubes", **common)
    _write_cubes(tmp_path / "syn_pdac", 3, 8, 2, -60.0)
    _write_cubes(tmp_path / "syn_healthy", 3, 8, 3, 0.0)
    syn = {"synthetic_pdac_dir": str(tmp_path / "syn_pdac"), "synthetic_healthy_dir": str(tmp_path / "syn_healthy")}
    _run_config("train_classifier.json", "make_datalist", n_folds=2, **common, **syn)
    datalist = cv.load_classifier_datalist(clf_dir / "classifier_datalist.json")
    assert Path(datalist["split_file"]) == cubes / "split.json"
    assert {it["case"] for it in datalist["testing"]} <= test and datalist["testing"]
    assert all(it["case"] not in test for it in datalist["training"])
    for experiment in ("I", "II"):
        for fold in range(2):
            run_data = cv.select_run_data(datalist, experiment, fold)
            real_train = [it for it in run_data["train"] + run_data["validate"] if it["source"] == "real"]
            cases = {cv.cube_case_ids([it["image"]], warn=False)[0] for it in real_train}
            assert cases and cases.isdisjoint(test), (experiment, fold)

    # blending: real cubes of test patients are refused as inputs; the GAN training cubes pass
    blend = {"blend_root": str(tmp_path / "blended"), "n_pairs": 2, "method": "copy_paste"}
    blend["split_file"] = str(cubes / "split.json")
    real_healthy = clf_dir / "real_cubes" / "healthy" / "images"
    with pytest.raises(RuntimeError) as info:  # the config's evaluation error, caused by the leak check
        _run_config("blend.json", tumor_dir=str(cubes / "tumor" / "images"), tissue_dir=str(real_healthy), **blend)
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    leak = f"{real_healthy}: test patient(s) in the training input: {sorted(test)}"
    assert any(m == leak for m in chain), chain
    _run_config(
        "blend.json", tumor_dir=str(cubes / "tumor" / "images"), tissue_dir=str(cubes / "pancreas" / "images"), **blend
    )
    assert len(list((tmp_path / "blended" / "copy_paste" / "imagesTr").glob("*.nii.gz"))) == 2
