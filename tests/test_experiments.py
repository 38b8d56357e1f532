"""ctsynth.experiments: patient-level split, study arms and the study runner (overrides forwarded, metrics table)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ctsynth.experiments import (
    PatientSplit,
    StudyArm,
    StudyRunner,
    assert_no_test_leak,
    case_id_of,
    filter_records,
    load_or_make_patient_split,
    make_patient_split,
    overrides_from_argv,
    synthetic_counts_for_balance,
)
from ctsynth.experiments.runner import cli_value

CASES = [f"case_{i:03d}" for i in range(23)]

# ----------------------------------------------------------------------------------------------- split


def test_split_partitions_patients_and_follows_documented_algorithm():
    split = make_patient_split(CASES, n_folds=5, test_fraction=0.2, seed=3)
    assert sorted(split.cases) == CASES and len(split.cases) == 23  # every patient exactly once
    assert len(split.test) == 5  # round(0.2 * 23)
    assert sorted(len(f) for f in split.folds) == [3, 3, 4, 4, 4]
    order = [sorted(CASES)[i] for i in np.random.default_rng(3).permutation(23)]
    assert list(split.test) == order[:5]
    assert [list(f) for f in split.folds] == [order[5 + k :: 5] for k in range(5)]
    # the input order does not matter, the seed does
    assert make_patient_split(CASES[::-1], 5, 0.2, 3) == split
    assert make_patient_split(CASES, 5, 0.2, 4) != split


def test_split_roles_are_disjoint():
    split = make_patient_split(CASES, n_folds=3, test_fraction=0.25, seed=0)
    test = split.role_cases("test")
    assert split.role_cases("development") == set(CASES) - test
    for k in range(3):
        train, val = split.role_cases("train", k), split.role_cases("val", k)
        assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
        assert train | val == split.role_cases("development")
        assert all(split.fold_of(c) == k for c in val)
    assert split.fold_of(next(iter(test))) is None
    with pytest.raises(ValueError, match=r"role 'train' needs a fold in 0..2, got None"):
        split.role_cases("train")
    with pytest.raises(ValueError, match="unknown split role 'validation'"):
        split.role_cases("validation", 0)
    with pytest.raises(KeyError, match="case 'nobody' is not in the patient split"):
        split.fold_of("nobody")


def test_stratified_split_keeps_class_proportions():
    strata = {c: ("tumour" if i < 10 else "healthy") for i, c in enumerate(CASES)}  # 10 tumour, 13 healthy
    split = make_patient_split(CASES, n_folds=3, test_fraction=0.2, seed=1, stratify_by=strata)
    test_classes = Counter(strata[c] for c in split.test)
    assert test_classes == {"tumour": 2, "healthy": 3}  # round(0.2 * 10), round(0.2 * 13)
    sizes = [len(f) for f in split.folds]
    assert max(sizes) - min(sizes) <= 1
    for cls in ("tumour", "healthy"):
        per_fold = [sum(strata[c] == cls for c in f) for f in split.folds]
        assert max(per_fold) - min(per_fold) <= 1
    assert split.to_dict()["stratified"] is True and split.strata["case_000"] == "tumour"


def test_stratified_split_warns_about_rare_class(caplog):
    strata = {c: "healthy" for c in CASES[:10]} | {"rare": "tumour"}
    caplog.set_level(logging.WARNING, logger="ctsynth.experiments.splits")
    make_patient_split([*CASES[:10], "rare"], n_folds=3, test_fraction=0.0, stratify_by=strata)
    assert "class tumour has 1 non-test case(s) for 3 folds" in caplog.text


def test_split_errors():
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        make_patient_split(["a", "a", "b"], n_folds=2)
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        make_patient_split(CASES, n_folds=1)
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        make_patient_split(CASES, test_fraction=1.0)
    with pytest.raises(ValueError, match=r"fewer cases than folds: 4 case\(s\), 1 held out"):
        make_patient_split(CASES[:4], n_folds=5)
    with pytest.raises(ValueError, match=r"stratify_by has no class for 1 case\(s\), e.g. \['case_002'\]"):
        make_patient_split(CASES[:3], n_folds=2, test_fraction=0.0, stratify_by={"case_000": 0, "case_001": 1})
    with pytest.raises(ValueError, match="in more than one part"):
        PatientSplit(("a",), (("a", "b"), ("c",)))


def test_split_json_round_trip_and_errors(tmp_path):
    split = make_patient_split(CASES, n_folds=4, test_fraction=0.2, seed=7)
    path = split.save(tmp_path)
    assert path == tmp_path / "split.json"
    data = json.loads(path.read_text())
    assert data["format"] == "ctsynth.patient_split/1" and data["n_folds"] == 4 and data["seed"] == 7
    assert PatientSplit.load(tmp_path) == split == PatientSplit.load(path)
    assert not list(tmp_path.glob(".split.json.*"))  # atomic write leaves no temporary file
    with pytest.raises(FileNotFoundError, match=r"gone.json: patient split not found"):
        PatientSplit.load(tmp_path / "gone.json")
    (tmp_path / "other.json").write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match=r"other.json: not a patient split"):
        PatientSplit.load(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text(json.dumps({"format": "ctsynth.patient_split/1", "test": []}))
    with pytest.raises(ValueError, match=r"broken.json: malformed patient split \(KeyError"):
        PatientSplit.load(tmp_path / "broken.json")


def test_load_or_make_records_once(tmp_path, caplog):
    (tmp_path / "run").mkdir()
    first = load_or_make_patient_split(tmp_path / "run", CASES, n_folds=3, seed=0)
    assert (tmp_path / "run" / "split.json").is_file()
    caplog.set_level(logging.WARNING, logger="ctsynth.experiments.splits")
    again = load_or_make_patient_split(tmp_path / "run", reversed(CASES), n_folds=3, seed=99)
    assert again == first and "using the recorded split" in caplog.text
    with pytest.raises(ValueError, match=r"split.json: the recorded patient split does not match .*\['case_999'\]"):
        load_or_make_patient_split(tmp_path / "run", [*CASES, "case_999"], n_folds=3)


def test_filter_records_and_leak_check():
    split = make_patient_split(CASES, n_folds=3, test_fraction=0.2, seed=2)
    cubes = [{"image": f"/c/{c}_{tag}.nii.gz", "case": c} for c in CASES for tag in ("orig", "rot12")]
    train = filter_records(cubes, split, "train", fold=1)
    val = filter_records(cubes, split, "val", fold=1)
    test = filter_records(cubes, split, "test")
    assert len(train) + len(val) + len(test) == len(cubes)
    assert {r["case"] for r in train} == split.role_cases("train", 1)
    assert_no_test_leak(train + val, split, stage="GAN")
    leaked = sorted(split.test)[:2]
    with pytest.raises(
        ValueError, match=rf"classifier fold 1: test patient\(s\) in the training input: \['{leaked[0]}'"
    ):
        assert_no_test_leak(train + [r for r in cubes if r["case"] in leaked], split, stage="classifier fold 1")
    # records without a case key: the image's file name, as in MSD datalists
    entries = [{"image": f"imagesTr/{c}.nii.gz", "label": f"labelsTr/{c}.nii.gz"} for c in CASES]
    assert [case_id_of(e) for e in filter_records(entries, split, "test")] == [c for c in CASES if c in split.test]
    with pytest.raises(ValueError, match=r"1 record\(s\) of patients not in the split, e.g. \['stranger'\]"):
        filter_records([{"case": "stranger"}], split, "development")
    with pytest.raises(ValueError, match="record has no 'case' or 'image'"):
        case_id_of({"label": 1})


# ----------------------------------------------------------------------------------------------- arms


def test_balance_rule_reproduces_paper_counts():
    assert synthetic_counts_for_balance({1: 139, 0: 203}, {1: 500, 0: 500}, total=164) == {1: 114, 0: 50}
    assert synthetic_counts_for_balance({1: 139, 0: 203}, {1: 114, 0: 50}) == {1: 114, 0: 50}
    assert synthetic_counts_for_balance({1: 139, 0: 203}, {1: 500, 0: 500}) == {1: 500, 0: 436}
    assert synthetic_counts_for_balance({1: 139, 0: 203}, {1: 30, 0: 100}) == {1: 30, 0: 0}
    assert synthetic_counts_for_balance({1: 139, 0: 203}, {1: 500}, total=10) == {1: 10, 0: 0}
    assert synthetic_counts_for_balance({"a": 5, "b": 8, "c": 2}, {"a": 10, "b": 10, "c": 10}) == {
        "a": 7,
        "b": 4,
        "c": 10,
    }
    with pytest.raises(ValueError, match="counts must be non-negative integers"):
        synthetic_counts_for_balance({1: -1}, {})


def _records(n: int, label: int, tag: str) -> list[dict]:
    return [{"image": f"{tag}_{label}_{i}.nii.gz", "label": label} for i in range(n)]


def test_arms_build_training_lists():
    real = _records(8, 1, "r") + _records(11, 0, "r")
    pool = _records(6, 1, "s") + _records(6, 0, "s")
    real_only = StudyArm("I").training_records(real, pool)
    assert real_only == [{**r, "source": "real"} for r in real]
    balanced = StudyArm("II", "real+synthetic", balance_classes=True).training_records(real, pool, seed=0)
    added = [r for r in balanced if r["source"] == "synthetic"]
    assert Counter(r["label"] for r in balanced) == {1: 14, 0: 14}
    assert Counter(r["label"] for r in added) == {1: 6, 0: 3}
    assert balanced == StudyArm("II", "real+synthetic", balance_classes=True).training_records(real, pool, seed=0)
    other_seed = StudyArm("II", "real+synthetic", balance_classes=True).training_records(real, pool, seed=5)
    assert Counter(r["label"] for r in other_seed) == {1: 14, 0: 14}
    mixed = StudyArm("mix", "real+synthetic", mix_ratio=0.5).training_records(real, pool, seed=1)
    assert len(mixed) == 19 + 10 and sum(r["source"] == "synthetic" for r in mixed) == 10  # round(0.5 * 19)
    syn = StudyArm("syn", "synthetic").training_records(real, pool)
    assert len(syn) == 12 and all(r["source"] == "synthetic" for r in syn)
    assert len(StudyArm("syn5", "synthetic", n_synthetic=5).training_records(real, pool)) == 5
    assert all("source" not in r for r in real + pool)  # inputs untouched
    # balanced on a reference (e.g. the whole training set), so every fold gets the same synthetic subset
    arm = StudyArm("II", "real+synthetic", balance_classes=True)
    fold_a = arm.training_records(real[:5], pool, seed=0, balance_reference=real)
    fold_b = arm.training_records(real[5:], pool, seed=0, balance_reference=real)
    syn_a = [r for r in fold_a if r["source"] == "synthetic"]
    assert syn_a == [r for r in fold_b if r["source"] == "synthetic"] and len(syn_a) == 9


def test_arm_errors():
    with pytest.raises(ValueError, match="unknown kind 'fake'"):
        StudyArm("x", "fake")
    with pytest.raises(ValueError, match="needs exactly one of mix_ratio or balance_classes"):
        StudyArm("x", "real+synthetic")
    with pytest.raises(ValueError, match="apply to real\\+synthetic arms only"):
        StudyArm("x", "real", mix_ratio=1.0)
    with pytest.raises(ValueError, match=r"arm 'm': needs 4 synthetic record\(s\), the pool has 2"):
        StudyArm("m", "real+synthetic", mix_ratio=1.0).training_records(_records(4, 1, "r"), _records(2, 1, "s"))
    with pytest.raises(ValueError, match="balancing needs 'label' in every record"):
        StudyArm("b", "real+synthetic", balance_classes=True).training_records([{"image": "a"}], [])
    assert (
        StudyArm.from_dict({"name": "II", "kind": "real+synthetic", "balance_classes": True}).kind == "real+synthetic"
    )


# ----------------------------------------------------------------------------------------------- runner

# A bundle config whose run writes the values it received, so the test sees what each run got.
PROBE_CONFIG = {
    "imports": ["$import json", "$import os"],
    "arm": "none",
    "fold": -1,
    "output_dir": "out",
    "train": {"dataloader": {"batch_size": 8, "shuffle": True}},
    "lr": 0.1,
    "note": "default",
    "run_dir": "$os.path.join(@output_dir, str(@arm), 'fold_' + str(@fold))",
    "metrics": "${'auc': 0.5 + 0.1 * @fold + (0.2 if @arm == 'syn' else 0.0), 'nested': {'n': 3}, 'tag': 'x'}",
    "received": "${'batch_size': @train#dataloader#batch_size, 'shuffle': @train#dataloader#shuffle, 'lr': @lr, "
    "'note': @note}",
    "run": [
        "$os.makedirs(@run_dir, exist_ok=True)",
        "$open(os.path.join(@run_dir, 'received.json'), 'w').write(json.dumps(@received))",
        "$open(os.path.join(@run_dir, 'metrics.json'), 'w').write(json.dumps(@metrics))",
    ],
}


@pytest.fixture
def probe_config(tmp_path) -> Path:
    path = tmp_path / "bundle" / "configs" / "probe.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(PROBE_CONFIG))
    return path


def _received(out: Path, arm: str, fold: int) -> dict:
    return json.loads((out / arm / f"fold_{fold}" / "received.json").read_text())


def test_runner_in_process_forwards_nested_overrides_and_collects(probe_config, tmp_path):
    out = tmp_path / "study"
    overrides = {"train#dataloader#batch_size": 2, "lr": 0.01, "note": "a b"}
    runner = StudyRunner(probe_config, ["real", "syn"], 2, out, overrides=overrides)
    rows = runner.run()
    for arm in ("real", "syn"):
        for fold in (0, 1):
            assert _received(out, arm, fold) == {"batch_size": 2, "shuffle": True, "lr": 0.01, "note": "a b"}
    assert len(rows) == 4
    row = next(r for r in rows if r["arm"] == "syn" and r["fold"] == 1)
    assert row["auc"] == pytest.approx(0.8) and row["nested/n"] == 3.0 and "tag" not in row
    summary = json.loads((out / "study_summary.json").read_text())
    assert summary["real"]["test"]["auc"]["mean"] == pytest.approx(0.55)
    assert summary["real"]["test"]["auc"]["n"] == 2
    lines = (out / "study_metrics.csv").read_text().splitlines()
    assert lines[0] == "arm,fold,split,auc,nested/n" and len(lines) == 5
    # completed runs are skipped: a changed override does not re-run them
    StudyRunner(probe_config, ["real"], 1, out, overrides={"lr": 5.0}).run()
    assert _received(out, "real", 0)["lr"] == 0.01


def test_runner_subprocess_forwards_nested_override(probe_config, tmp_path):
    out = tmp_path / "study"
    overrides = {"train#dataloader#batch_size": 2, "train#dataloader#shuffle": False, "note": "7"}
    runner = StudyRunner(probe_config, ["real"], [1], out, overrides=overrides, in_process=False)
    cmd = runner.command("real", 1)
    assert cmd[1:5] == ["-m", "monai.bundle", "run", "run"]
    assert cmd[cmd.index("--train#dataloader#batch_size") + 1] == "2"
    rows = runner.run()
    # the string "7" stays a string on the other side of the command line
    assert _received(out, "real", 1) == {"batch_size": 2, "shuffle": False, "lr": 0.1, "note": "7"}
    assert rows == [{"arm": "real", "fold": 1, "split": "test", "auc": pytest.approx(0.6), "nested/n": 3.0}]


def test_runner_refuses_to_drop_overrides(probe_config, tmp_path):
    with pytest.raises(ValueError, match="override 'fold'=3: the study sets 'fold' for every run"):
        StudyRunner(probe_config, ["real"], 2, tmp_path, overrides={"fold": 3})
    with pytest.raises(ValueError, match="override 'output_dir'='/elsewhere' differs from the study's output folder"):
        StudyRunner(probe_config, ["real"], 2, tmp_path, overrides={"output_dir": "/elsewhere"})
    with pytest.raises(FileNotFoundError, match="nope.json: bundle config not found"):
        StudyRunner(tmp_path / "nope.json", ["real"], 2, tmp_path)
    assert cli_value("root", tmp_path) == str(tmp_path) and cli_value("n", "7") == "'7'"
    with pytest.raises(TypeError, match="override 'device': object value .* cannot be passed on a command line"):
        cli_value("device", object())
    failing = StudyRunner(probe_config, ["real"], 1, tmp_path / "x", overrides={"run": ["$1/0"]}, in_process=False)
    with pytest.raises(RuntimeError, match="study run arm real fold 0 failed"):
        failing.run()


def test_overrides_from_argv(tmp_path):
    argv = ["run", "make_datalist", "--config_file", "c.json", "--train#dataloader#batch_size", "2"]
    argv += ["--variant=[4,4,8,8]", "--amp", "--name", "abc", "--meta_file", "m.json"]
    assert overrides_from_argv(argv) == {
        "train#dataloader#batch_size": 2,
        "variant": [4, 4, 8, 8],
        "amp": True,
        "name": "abc",
    }
    (tmp_path / "args.json").write_text(json.dumps({"config_file": "c.json", "lr": 0.1, "name": "from_file"}))
    got = overrides_from_argv(["run", "--args_file", str(tmp_path / "args.json"), "--name", "cli"], exclude=["lr"])
    assert got == {"name": "cli"}
    with pytest.raises(ValueError, match=r"unexpected command-line argument '2' \(expected --id value\)"):
        overrides_from_argv(["run", "--a", "1", "2"])
