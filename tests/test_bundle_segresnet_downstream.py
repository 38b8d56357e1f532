"""Bundle ct_segresnet_downstream: input checks, arm datalists, scoring, the Auto3DSeg template and the smoke runs."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ct_segresnet_downstream"
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Real = 6 abdominal phantoms (seeds 0..5), synthetic = 4 more (seeds 100..103); 32^3 at 4 mm."""
    from ctsynth.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("segresnet_phantoms")
    write_phantom_dataset(root / "real", kind="abdomen", n=6, size=32, spacing=4.0, seed=0)
    write_phantom_dataset(root / "synthetic", kind="abdomen", n=4, size=32, spacing=4.0, seed=100)
    return root


@pytest.fixture
def seg(bundle_runner):
    with bundle_runner(BUNDLE).scripts() as scripts:
        import scripts.datalists
        import scripts.evaluation
        import scripts.study

        yield scripts


def _copy_synthetic(phantoms: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "syn"
    shutil.copytree(phantoms / "synthetic", dst)
    return dst


def _rewrite(path: Path, array: np.ndarray) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(array.astype(np.int16), img.affine), str(path))


def _run(seg, phantoms: Path, tmp_path: Path, sources, arm: str = "real+synthetic"):
    arms = [{"name": "real", "kind": "real"}, {"name": "real+synthetic", "kind": "real+synthetic", "mix_ratio": 1.0}]
    return seg.study.Auto3DSegRun(
        real_dataset=str(phantoms / "real"),
        synthetic_sources=sources,
        split_file=str(tmp_path / "study" / "split.json"),
        arm=seg.study.find_arm(arms, arm),
        num_fold=1,
        output_dir=str(tmp_path / "study" / arm / "folds_1"),
        n_folds=2,
        test_fraction=0.34,
    )


# ------------------------------------------------------------------ metadata and configs
def test_metadata_validates(bundle_runner, schema_dir, tmp_path):
    meta = bundle_runner("ct_segresnet_downstream").verify_metadata(schema_dir, tmp_path)
    assert meta["version"] in meta["changelog"]


def test_config_properties(bundle_runner, phantoms, tmp_path):
    runner = bundle_runner(BUNDLE)
    with runner.scripts():
        train = runner.workflow(
            "train.json",
            workflow_type="train",
            smoke=True,
            dataset_dir=str(phantoms / "real"),
            synthetic_sources=[{"path": str(phantoms / "synthetic"), "trained_on": []}],
            study_dir=str(tmp_path / "study"),
        )
        assert train.check_properties() == []
        assert train.max_epochs == 1
        assert train.parser.get_parsed_content("train#params")["roi_size"] == [32, 32, 32]
    assert not (tmp_path / "study").exists()  # building the workflow writes nothing


def test_no_download_in_default_path(seg, tmp_path, monkeypatch):
    import monai.apps.auto3dseg.bundle_gen as bundle_gen

    def no_network(*args, **kwargs):
        raise AssertionError("Auto3DSeg tried to download its algorithm templates")

    monkeypatch.setattr(bundle_gen, "download_and_extract", no_network)
    monkeypatch.setattr(bundle_gen, "_download_algos_url", no_network)
    algos, templates = seg.study.auto3dseg_algos(None)
    gen = bundle_gen.BundleGen(algo_path=str(tmp_path), algos=algos, templates_path_or_url=templates)
    assert [type(a).__name__ for a in gen.algos] == ["CtsegresnetAlgo"] and gen.algos[0].name == "ctsegresnet"
    assert not (tmp_path / "algorithm_templates").exists()  # nothing copied or fetched
    assert templates is None and isinstance(algos, dict)  # a dict of algos: AutoRunner never fetches its archive
    spec = algos["ctsegresnet"]
    assert (Path(spec["template_path"]) / "ctsegresnet" / "scripts" / "algo.py").is_file()
    assert "_" not in "ctsegresnet"  # Auto3DSeg's fold ensemble parses "<name>_<fold>"
    with pytest.raises(FileNotFoundError, match="no Auto3DSeg template segresnet/scripts/algo.py"):
        seg.study.auto3dseg_algos(str(tmp_path))
    (tmp_path / "segresnet" / "scripts").mkdir(parents=True)
    (tmp_path / "segresnet" / "scripts" / "algo.py").write_text("")
    assert seg.study.auto3dseg_algos(str(tmp_path)) == ("segresnet", str(tmp_path))


def test_template_rules():
    import sys

    sys.path.insert(0, str(BUNDLE / "scripts" / "algorithm_templates"))
    try:
        from ctsegresnet.scripts.algo import epochs_for, roi_for
    finally:
        sys.path.remove(str(BUNDLE / "scripts" / "algorithm_templates"))
    assert epochs_for(752) == 300  # thesis 1-fold mixed run: 80000 / 752 = 107 -> clipped to 300
    assert epochs_for(100) == 800 and epochs_for(10) == 1250
    assert roi_for([128.0, 128.0, 64.0]) == [128, 128, 64]
    assert roi_for([330.0, 300.0, 200.0]) == [224, 224, 144]
    assert roi_for([30.0, 33.0, 8.0]) == [32, 48, 16]


def test_tiny_segresnetds_parameter_count():
    """The smoke network (init 4, blocks_down [1, 1], dsdepth 2, 1 -> 3 channels), counted by hand.

    Encoder: stem conv 1->4 (3^3, no bias) 108; level 0 block (2 instance norms 2x8 + 2 convs 4->4 2x432) 880;
    down conv 4->8 (3^3, stride 2) 864; level 1 block (norms 2x16, convs 8->8 2x1728) 3488.
    Decoder level (8 -> 4): upsample transposed conv 8->4 (3^3, stride 2, no bias) 864, block 880, head 4->3
    (1^3 + bias) 15. With two levels there is one decoder level, so dsdepth 2 adds no further head.
    """
    from monai.networks.nets import SegResNetDS

    net = SegResNetDS(init_filters=4, blocks_down=(1, 1), in_channels=1, out_channels=3, dsdepth=2, norm="INSTANCE")
    encoder = 108 + 880 + 864 + 3488
    decoder = 864 + 880 + 15
    assert sum(p.numel() for p in net.parameters()) == encoder + decoder


# ------------------------------------------------------------------ datalists
def test_arm_datalists_keep_test_patients_out(seg, phantoms, tmp_path):
    sources = [{"path": str(phantoms / "synthetic"), "trained_on": []}]
    inputs = seg.datalists.prepare_inputs(
        phantoms / "real", sources, tmp_path / "split.json", n_folds=2, test_fraction=0.34
    )
    assert not (tmp_path / "split.json").exists()  # nothing written while checking
    split = inputs.split
    assert len(split.test) == 2 and inputs.labels == [0, 1, 2]
    real = seg.datalists.arm_datalist(inputs, seg.study.find_arm([{"name": "r", "kind": "real"}], "r"))
    assert {r["case"] for r in real["testing"]} == set(split.test)
    assert not {r["case"] for r in real["training"]} & set(split.test)
    assert all(r["fold"] == split.fold_of(r["case"]) for r in real["training"])
    mixed = seg.datalists.arm_datalist(
        inputs, seg.study.find_arm([{"name": "m", "kind": "real+synthetic", "mix_ratio": 0.5}], "m")
    )
    syn = [r for r in mixed["training"] if r["source"] == "synthetic"]
    assert len(syn) == 2 and [r["fold"] for r in syn] == [0, 1]  # round(0.5 * 4 real), dealt over the folds
    assert all(r["case"].startswith("synthetic:") for r in syn)
    only = seg.datalists.arm_datalist(inputs, seg.study.find_arm([{"name": "s", "kind": "synthetic"}], "s"))
    assert {r["source"] for r in only["training"]} == {"synthetic"} and len(only["training"]) == 4
    assert only["testing"] == real["testing"]
    inputs.save_split()
    again = seg.datalists.prepare_inputs(phantoms / "real", sources, tmp_path / "split.json", n_folds=3, seed=7)
    assert again.split == split  # the recorded split wins


def test_sample_folder_read_through_its_manifest(seg, phantoms, tmp_path):
    from ctsynth.data.io import save_volume

    folder = tmp_path / "samples"
    (folder / "labels").mkdir(parents=True)
    img = nib.load(str(phantoms / "synthetic" / "imagesTr" / "phantom_abdomen_000.nii.gz"))
    lbl = nib.load(str(phantoms / "synthetic" / "labelsTr" / "phantom_abdomen_000.nii.gz"))
    save_volume(np.asarray(img.dataobj), img.affine, folder / "sample_0000.nii.gz")
    save_volume(np.asarray(lbl.dataobj), lbl.affine, folder / "labels" / "sample_0000.nii.gz")
    save_volume(np.asarray(img.dataobj), img.affine, folder / "stray_from_old_run.nii.gz")
    manifest = {"samples": [{"index": 0, "image": "sample_0000.nii.gz", "label": "labels/sample_0000.nii.gz"}]}
    (folder / "samples.json").write_text(json.dumps(manifest))
    pairs = seg.datalists.read_synthetic_pairs(folder)
    assert [(p.image.name, p.label.parent.name) for p in pairs] == [("sample_0000.nii.gz", "labels")]
    manifest["samples"][0].pop("label")
    (folder / "samples.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="sample sample_0000.nii.gz has no 'label'"):
        seg.datalists.read_synthetic_pairs(folder)


# ------------------------------------------------------------------ bad inputs: reported before anything is written
def _assert_refused(seg, phantoms, tmp_path, sources, *patterns):
    from ctsynth.data.validation import DataValidationError

    run = _run(seg, phantoms, tmp_path, sources)
    with pytest.raises(DataValidationError) as info:
        run.run()
    for pattern in patterns:
        assert pattern in str(info.value), str(info.value)
    assert not (tmp_path / "study").exists()


def test_empty_synthetic_label_refused(seg, phantoms, tmp_path):
    syn = _copy_synthetic(phantoms, tmp_path)
    label = syn / "labelsTr" / "phantom_abdomen_001.nii.gz"
    _rewrite(label, np.zeros(nib.load(str(label)).shape))
    _assert_refused(seg, phantoms, tmp_path, [{"path": str(syn), "trained_on": []}], f"{label}: empty label")


def test_label_shape_mismatch_refused(seg, phantoms, tmp_path):
    syn = _copy_synthetic(phantoms, tmp_path)
    label = syn / "labelsTr" / "phantom_abdomen_002.nii.gz"
    _rewrite(label, np.asarray(nib.load(str(label)).dataobj)[:, :, :30])
    _assert_refused(
        seg,
        phantoms,
        tmp_path,
        [{"path": str(syn), "trained_on": []}],
        f"{label}: label shape (32, 32, 30) does not match its image",
    )


def test_label_set_differs_refused(seg, phantoms, tmp_path):
    syn = _copy_synthetic(phantoms, tmp_path)
    for label in sorted((syn / "labelsTr").glob("*.nii.gz")):  # tumour relabelled as pancreas: {0, 1} vs {0, 1, 2}
        _rewrite(label, np.minimum(np.asarray(nib.load(str(label)).dataobj), 1))
    _assert_refused(
        seg,
        phantoms,
        tmp_path,
        [{"path": str(syn), "trained_on": []}],
        "the synthetic label set [0, 1] differs from the real one [0, 1, 2]",
    )
    foreign = syn / "labelsTr" / "phantom_abdomen_000.nii.gz"
    _rewrite(foreign, np.asarray(nib.load(str(foreign)).dataobj) * 3)
    _assert_refused(
        seg,
        phantoms,
        tmp_path,
        [{"path": str(syn), "trained_on": []}],
        f"{foreign}: label value(s) [3] are not labels of the real data [0, 1, 2]",
    )


def test_generator_trained_on_test_patients_refused(seg, phantoms, tmp_path):
    from ctsynth.experiments import make_patient_split

    real_ids = [f"phantom_abdomen_{i:03d}" for i in range(6)]
    split = make_patient_split(real_ids, n_folds=2, test_fraction=0.34)
    sources = [{"path": str(phantoms / "synthetic"), "trained_on": real_ids}]  # a GAN trained on all patients
    _assert_refused(
        seg, phantoms, tmp_path, sources, "its generator trained on held-out test patient(s)", split.test[0]
    )
    _assert_refused(seg, phantoms, tmp_path, [str(phantoms / "synthetic")], "synthetic source without 'trained_on'")
    gan_split = tmp_path / "gan_split.json"
    split.save(gan_split)  # a generator trained on the study split's development patients: accepted
    ok = _run(seg, phantoms, tmp_path, [{"path": str(phantoms / "synthetic"), "trained_on": str(gan_split)}])
    assert len(ok.check()["training"]) == 8


def test_copy_of_a_test_scan_refused(seg, phantoms, tmp_path):
    from ctsynth.experiments import make_patient_split

    split = make_patient_split([f"phantom_abdomen_{i:03d}" for i in range(6)], n_folds=2, test_fraction=0.34)
    syn = _copy_synthetic(phantoms, tmp_path)
    for sub in ("imagesTr", "labelsTr"):
        shutil.copy(phantoms / "real" / sub / f"{split.test[0]}.nii.gz", syn / sub / "phantom_abdomen_001.nii.gz")
    _assert_refused(
        seg, phantoms, tmp_path, [{"path": str(syn), "trained_on": []}], "identical to a held-out test scan"
    )


def test_class_names_must_match_labels(seg, phantoms, tmp_path):
    run = _run(seg, phantoms, tmp_path, [{"path": str(phantoms / "synthetic"), "trained_on": []}])
    run.class_names = ["tumor"]
    with pytest.raises(ValueError, match=r"class_names \['tumor'\] name 1 class\(es\); the real labels"):
        run.run()
    assert not (tmp_path / "study").exists()


# ------------------------------------------------------------------ scoring
def test_case_scores_by_hand(seg):
    label = np.zeros((20, 20, 20), np.int64)
    label[5:10, 5:10, 5:10] = 1
    pred = np.zeros_like(label)
    pred[5:10, 5:10, 7:12] = 1  # shifted by 2 voxels along z: overlap 5x5x3
    row = seg.evaluation.case_scores(pred, label, [1], spacing=(1.0, 1.0, 2.0))
    assert row["dice_1"] == pytest.approx(2 * 75 / 250)
    assert row["hd95_1"] == pytest.approx(4.0)  # 2 voxels x 2 mm
    empty = seg.evaluation.case_scores(np.zeros_like(label), label, [1], spacing=(1, 1, 1))
    assert empty["dice"] == 0.0 and math.isnan(empty["hd95"])
    with pytest.raises(ValueError, match="prediction shape"):
        seg.evaluation.case_scores(pred[:-1], label, [1], spacing=(1, 1, 1))


def test_bootstrap_and_paired_test(seg):
    from scipy import stats

    values = [0.2, 0.4, 0.5, 0.7, 0.9, float("nan")]
    low, high = seg.evaluation.bootstrap_ci(values, n_resamples=2000, seed=1)
    assert low < np.nanmean(values) < high and (low, high) == seg.evaluation.bootstrap_ci(values, 2000, seed=1)
    a = {f"c{i}": v for i, v in enumerate([0.5, 0.6, 0.7, 0.8, 0.75, 0.4])}
    b = {f"c{i}": v for i, v in enumerate([0.4, 0.5, 0.72, 0.6, 0.7, 0.35])}
    out = seg.evaluation.paired_test(a, b)
    assert out["p_value"] == pytest.approx(stats.wilcoxon(np.array(list(a.values())) - list(b.values())).pvalue)
    assert out["n"] == 6
    same = seg.evaluation.paired_test(a, a)
    assert math.isnan(same["p_value"]) and "undefined" in same["note"]


def test_compare_runs_writes_thesis_table_and_plot(seg, tmp_path):
    rng = np.random.default_rng(0)
    for arm, shift in (("real", 0.0), ("real+synthetic", 0.05)):
        for k in (1, 5):
            out = tmp_path / arm / f"folds_{k}" / "test"
            out.mkdir(parents=True)
            with open(out / "per_case.csv", "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=["case", "dice", "hd95"])
                w.writeheader()
                for i in range(8):
                    w.writerow({"case": f"p{i}", "dice": 0.4 + shift + 0.05 * rng.random(), "hd95": 10 + i})
    paths = seg.evaluation.compare_runs(tmp_path, ["real", "real+synthetic"], [1, 5], n_resamples=500)
    md = paths["md"].read_text()
    assert "0.5219" in md and "0.4869" in md and "not comparable" in md
    assert "| real+synthetic | 5 | ours |" in md  # our row right under the paper's
    table = json.loads(paths["json"].read_text())
    paper = [r for r in table["rows"] if r["Source"].startswith("paper")]
    assert {(r["Model"], r["Folds"], r["Test Dice"]) for r in paper} >= {("real+synthetic", "5", 0.52193)}
    comparison = json.loads(paths["comparison"].read_text())
    mixed = [r for r in comparison["runs"] if r["arm"] == "real+synthetic" and r["folds"] == 5][0]
    assert mixed["vs_real"]["p_value"] == pytest.approx(2 * 1 / 2**8)  # all 8 differences positive: exact p
    assert paths["plot"].stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="synthetic/folds_1/test/per_case.csv"):
        seg.evaluation.compare_runs(tmp_path, ["synthetic"], [1])


# ------------------------------------------------------------------ smoke runs through monai.bundle (AutoRunner)
@pytest.mark.slow
def test_train_config_smoke_cli(bundle_runner, phantoms, tmp_path):
    """train.json alone: the real+synthetic arm with 2 folds (data analysis, generation, two trainings, the fold
    ensemble on the test patients, scores)."""
    pytest.importorskip("yaml", reason="MONAI Auto3DSeg needs PyYAML")
    study = tmp_path / "study"
    synthetic = repr([{"path": str(phantoms / "synthetic"), "trained_on": []}])
    args = ("--dataset_dir", str(phantoms / "real"), "--synthetic_sources", synthetic, "--study_dir", str(study))
    bundle_runner(BUNDLE).run_cli("train.json", args=(*args, "--arm", "real+synthetic", "--num_fold", "2"), timeout=300)
    run = study / "real+synthetic" / "folds_2"
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["n_cases"] == 2 and 0.0 <= metrics["dice"] <= 1.0
    split = json.loads((study / "split.json").read_text())
    datalist = json.loads((run / "datalist.json").read_text())
    assert not {r["case"] for r in datalist["training"]} & set(split["test"])
    assert {Path(r["image"]).name for r in datalist["testing"]} == {f"{c}.nii.gz" for c in split["test"]}
    inputs = json.loads((run / "run_inputs.json").read_text())
    assert (inputs["n_training_real"], inputs["n_training_synthetic"]) == (4, 4)
    for fold in (0, 1):
        assert (run / "auto3dseg" / f"ctsegresnet_{fold}" / "model" / "model.pt").is_file()
    assert len(list((run / "predictions").glob("*_seg.nii.gz"))) == 2


@pytest.mark.slow
def test_study_smoke_cli(bundle_runner, phantoms, tmp_path):
    """study.json: real-only and synthetic-only arms, 1 fold each, then the table, plot and paired test."""
    pytest.importorskip("yaml", reason="MONAI Auto3DSeg needs PyYAML")
    study = tmp_path / "study"
    arms = repr([{"name": "real", "kind": "real"}, {"name": "synthetic", "kind": "synthetic"}])
    args = ("--dataset_dir", str(phantoms / "real"), "--synthetic_dir", str(phantoms / "synthetic"))
    args += ("--synthetic_trained_on", "[]", "--study_dir", str(study))
    bundle_runner(BUNDLE).run_cli(
        "train.json", "study.json", args=(*args, "--arms", arms, "--fold_settings", "[1]"), timeout=400
    )
    split = json.loads((study / "split.json").read_text())
    for arm, sources in (("real", {"real"}), ("synthetic", {"synthetic"})):
        run = study / arm / "folds_1"
        datalist = json.loads((run / "datalist.json").read_text())
        assert {r["source"] for r in datalist["training"]} == sources
        assert not {r["case"] for r in datalist["training"]} & set(split["test"])
        assert (run / "auto3dseg" / "ctsegresnet_0" / "model" / "model.pt").is_file()
        assert not (run / "auto3dseg" / "ctsegresnet_1").exists()  # 1 fold: only the fold-0 algorithm
    comparison = json.loads((study / "comparison.json").read_text())
    assert [(r["arm"], r["folds"]) for r in comparison["runs"]] == [("real", 1), ("synthetic", 1)]
    assert comparison["runs"][1]["vs_real"]["n"] == 2
    table = (study / "table_test_dice.md").read_text()
    assert "| real | 1 | ours |" in table and "| synthetic | 1 | ours |" in table
    assert (study / "dice_by_arm.png").stat().st_size > 0
