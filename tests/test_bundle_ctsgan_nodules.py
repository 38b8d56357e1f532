"""Tests of the nodule side of the chest_ct_sgan bundle: lung mask, injector/eraser VOI pairs, placement and pasting,
the cGAN step, the 3D SqueezeNet classifier (parameter count by hand), the patient-level split, and the configs
(train_nodule_gan.json, nodules.json, train_classifier.json) through ``monai.bundle`` with the smoke overlay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ctsynth.data.io import load_volume, save_volume, write_json_atomic

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def runner(bundle_runner):
    return bundle_runner("chest_ct_sgan")


@pytest.fixture(scope="module")
def sg(runner):
    with runner.scripts() as scripts:
        import scripts.classifier
        import scripts.nodules

        yield scripts


def _windowed(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu + 1000.0) / 1400.0 * 2 - 1, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def phantom():
    from ctsynth.data.phantoms import make_chest_phantom

    # an isolated nodule: a juxta-pleural one touches the chest wall, outside an intensity-based lung mask
    return make_chest_phantom(48, 7.0, seed=1, nodules=1, nodule_radius_mm=14.0, nodule_sites={"isolated": 1.0})


@pytest.fixture(scope="module")
def nodule_dir(tmp_path_factory):
    """3 chest phantoms (48^3 at 7 mm) with one 14 mm nodule each, MSD layout, so nodules survive the 32^3 cube."""
    from ctsynth.data.phantoms import make_chest_phantom

    root = tmp_path_factory.mktemp("nodules") / "chest"
    training = []
    for i in range(3):
        v = make_chest_phantom(48, 7.0, seed=i, nodules=1, nodule_radius_mm=14.0)
        save_volume(v.image.astype(np.float32), v.affine, root / "imagesTr" / f"case{i}.nii.gz")
        save_volume(v.label, v.affine, root / "labelsTr" / f"case{i}.nii.gz")
        training.append({"image": f"./imagesTr/case{i}.nii.gz", "label": f"./labelsTr/case{i}.nii.gz"})
    write_json_atomic({"training": training}, root / "dataset.json")
    return root


# ---------------------------------------------------------------- lung mask, VOIs


def test_lung_mask_matches_the_phantom_lungs(sg, phantom):
    lungs = sg.nodules.lung_mask(_windowed(phantom.image))
    truth = np.isin(phantom.organs, [1, 2, 3, 4])  # nodule, lung, vessel, airway: the lung field
    iou = (lungs & truth).sum() / (lungs | truth).sum()
    assert iou > 0.85 and lungs[phantom.label > 0].all()  # the nodule is inside (holes filled)


def test_voi_pairs_mask_the_centre_and_give_the_condition(sg, phantom):
    n = sg.nodules
    data = {"image": torch.tensor(_windowed(phantom.image))[None], "label": torch.tensor(phantom.label)[None]}
    inject = n.VOIPaird(mode="inject", voi_size=16, mask_size=8, fill=0.0)
    inject.set_random_state(0)
    out = inject(data)
    x, target, region = out["input"].numpy(), out["target"][0].numpy(), out["region"][0].numpy() > 0
    assert x.shape == (2, 16, 16, 16) and target.shape == (16, 16, 16)
    assert (x[0][region] == 0).all() and np.array_equal(x[0][~region], target[~region])
    assert x[1].any() and region[x[1] > 0].all()  # the nodule mask lies inside the erased region
    erase = n.VOIPaird(mode="erase", voi_size=16, mask_size=8)
    erase.set_random_state(0)
    out = erase(data)
    assert np.array_equal(out["input"][1].numpy() > 0, n.centre_cube(16, 8))
    with pytest.raises(ValueError, match="mode must be one of \\('inject', 'erase'\\), got 'add'"):
        n.VOIPaird(mode="add")
    with pytest.raises(ValueError, match="need 0 < mask_size <= voi_size, got 20 and 16"):
        n.VOIPaird(voi_size=16, mask_size=20)
    from monai.data import MetaTensor

    empty = {"image": MetaTensor(data["image"], meta={"filename_or_obj": "clean.nii.gz"}), "label": data["label"] * 0}
    with pytest.raises(ValueError, match="clean.nii.gz: no nodule in the label map"):
        inject(empty)


def test_crop_and_paste_at_the_border(sg):
    n = sg.nodules
    vol = -np.arange(8.0**3, dtype=np.float32).reshape(8, 8, 8)
    voi = n.crop_voi(vol, (0, 4, 7), 4, fill=-5.0)
    assert voi[0, 0, 0] == -5.0 and voi[2, 2, 2] == vol[0, 4, 7]
    region = n.centre_cube(4, 2)
    out = vol.copy()
    n.paste_centre(out, np.full((4, 4, 4), 99.0, np.float32), (4, 4, 4), region)
    assert (out[3:5, 3:5, 3:5] == 99).all() and (out == 99).sum() == 8


# ---------------------------------------------------------------- injector / eraser


def test_injector_places_the_drawn_count_of_balls_in_the_lungs(sg, phantom):
    n = sg.nodules
    x = _windowed(phantom.image)
    torch.manual_seed(0)
    injector = n.NoduleInjector(n.VOIGenerator((4, 8)), voi_size=16, mask_size=8, radius=2.0, count_probs={"3": 1.0})
    out, mask, placed = injector(x, np.random.default_rng(0))
    lungs = n.lung_mask(x)
    assert len(placed) == 3 and all(lungs[tuple(p["centre"])] for p in placed)
    assert mask.sum() == 3 * n.ball(16, 2.0).sum()  # 3 separate balls of radius 2 (min distance 2r + 2)
    edited = np.zeros(x.shape, bool)
    for p in placed:
        edited[tuple(slice(c - 4, c + 4) for c in p["centre"])] = True
    assert np.array_equal(out[~edited], x[~edited]) and not np.array_equal(out[edited], x[edited])
    counts = [len(injector.__class__(injector.generator, 16, 8, 2.0, {0: 0.5, 1: 0.5})(x, np.random.default_rng(s))[2])
              for s in range(20)]  # fmt: skip
    assert set(counts) == {0, 1}
    with pytest.raises(ValueError, match="radius 5.0 does not fit the erased cube of 8 voxels"):
        n.NoduleInjector(injector.generator, 16, 8, radius=5.0)
    with pytest.raises(ValueError, match="count_probs must map counts >= 0 to non-negative probabilities"):
        n.NoduleInjector(injector.generator, 16, 8, radius=2.0, count_probs={1: -1.0})


def test_eraser_clears_every_nodule_and_edits_only_around_them(sg, phantom):
    n = sg.nodules
    x = _windowed(phantom.image)
    out, label, count = n.NoduleEraser(n.VOIGenerator((4, 8)), voi_size=16, mask_size=8)(x, phantom.label)
    assert count == 1 and label.sum() == 0
    centre = np.argwhere(phantom.label > 0).mean(0).round().astype(int)
    far = np.ones(x.shape, bool)
    far[tuple(slice(max(c - 8, 0), c + 8) for c in centre)] = False
    assert np.array_equal(out[far], x[far]) and not np.array_equal(out, x)


def test_voi_gan_step_updates_both_networks(sg):
    n = sg.nodules
    torch.manual_seed(0)
    nets = {"generator": n.VOIGenerator((4, 8)), "discriminator": n.VOIDiscriminator((4, 8))}
    opts = {k: torch.optim.Adam(v.parameters(), 1e-3) for k, v in nets.items()}
    region = torch.tensor(n.centre_cube(16, 8), dtype=torch.float32)[None]
    data = [{"input": torch.rand(2, 16, 16, 16), "target": torch.rand(1, 16, 16, 16), "region": region}] * 2
    trainer = n.VOIGANTrainer("cpu", 1, torch.utils.data.DataLoader(data, batch_size=2), nets, opts)
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in nets.items()}
    trainer.run()
    assert all(math.isfinite(trainer.state.metrics[k]) for k in ("d_loss", "g_adv", "g_l1"))
    for k, v in nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], v.parameters(), strict=True)), k


# ---------------------------------------------------------------- classifier


def _fire(c_in: int, s: int, e1: int, e3: int) -> int:
    """Fire3d without norm: squeeze 1x1x1 (c_in*s + s), expand 1x1x1 (s*e1 + e1), expand 3x3x3 (s*e3*27 + e3)."""
    return c_in * s + s + s * e1 + e1 + s * e3 * 27 + e3


def test_squeezenet_parameter_count_by_hand(sg):
    c = sg.classifier
    fires = [(64, 16, 64, 64), (128, 16, 64, 64), (128, 32, 128, 128), (256, 32, 128, 128)]
    fires += [(256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), (512, 64, 256, 256)]
    expect = 27 * 64 + 64 + sum(_fire(*f) for f in fires) + 512 + 1  # stem conv, fires, classifier conv 512 -> 1
    net = c.SqueezeNet3D(norm=False)
    assert sum(p.numel() for p in net.parameters()) == expect == 1_828_929
    bn = 2 * 64 + sum(2 * (s + e1 + e3) for _, s, e1, e3 in fires)  # BatchNorm3d gamma and beta
    assert sum(p.numel() for p in c.SqueezeNet3D().parameters()) == expect + bn
    assert c.SqueezeNet3D(width=0.125)(torch.zeros(2, 1, 32, 32, 32)).shape == (2, 1)


def test_classifier_roles_and_gan_records_follow_the_recorded_split(runner, tmp_path):
    from ctsynth.experiments import make_patient_split

    with runner.scripts():
        import scripts.study as study
    cases = [f"p{i}" for i in range(10)]
    split = make_patient_split(cases, n_folds=2, test_fraction=0.2, seed=1)
    split.save(tmp_path / "split.json")
    entries = [{"image": f"/x/{c}.nii.gz", "label": float(i % 2), "case": c} for i, c in enumerate(cases)]
    roles = study.classifier_splits(entries, split, fold=1)
    assert {e["case"] for e in roles["test"]} == set(split.test)
    assert {e["case"] for e in roles["val"]} == set(split.folds[1])
    assert {e["case"] for e in roles["train"]} == set(split.folds[0])
    kept = study.development_records([{"image": f"/d/{c}.nii.gz"} for c in cases], tmp_path / "split.json")
    assert len(kept) == 8 and {Path(k["image"]).name[:-7] for k in kept}.isdisjoint(split.test)
    assert study.development_records(entries, None) == entries
    with pytest.raises(ValueError, match=r"record\(s\) of patients not in the split, e.g. \['stranger'\]"):
        study.development_records([{"image": "/d/stranger.nii.gz"}], tmp_path / "split.json")


def test_classifier_datalist_errors_name_the_file(sg, tmp_path):
    c = sg.classifier
    with pytest.raises(FileNotFoundError, match="no datalist \\(write one with configs/nodules.json\\)"):
        c.load_classifier_datalist(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": "a.nii.gz"}]}))
    with pytest.raises(ValueError, match="bad.json: entry 0 of 'training' needs 'image' and 'nodule'"):
        c.load_classifier_datalist(bad)


# ---------------------------------------------------------------- configs end to end


@pytest.fixture(scope="module")
def nodule_runs(runner, nodule_dir):
    out = {}
    for mode in ("inject", "erase"):
        out[mode] = nodule_dir.parent / f"run_{mode}"
        runner.run("train_nodule_gan.json", mode=mode, dataset_dir=str(nodule_dir), output_dir=str(out[mode]))
    return out


def test_nodule_gans_train_and_edit_scans(runner, nodule_runs, nodule_dir, tmp_path):
    for mode in ("inject", "erase"):
        assert (nodule_runs[mode] / "losses.csv").read_text().splitlines()[0] == "epoch,d_loss,g_adv,g_l1"
    inj = tmp_path / "injected"
    runner.run(
        "nodules.json",
        ckpt_path=str(nodule_runs["inject"] / "checkpoints" / "checkpoint_epoch=1.pt"),
        source=str(nodule_dir / "imagesTr"),
        output_dir=str(inj),
        count_probs={"2": 1.0},
    )
    items = json.loads((inj / "datalist.json").read_text())["training"]
    assert [i["nodule"] for i in items] == [0, 1, 0]  # fraction 0.5 of 3: the second volume
    assert len(items[1]["injected"]) == 2 and load_volume(inj / items[1]["label"])[0].sum() > 0
    assert np.array_equal(load_volume(inj / items[0]["image"])[0], load_volume(nodule_dir / "imagesTr/case0.nii.gz")[0])
    with pytest.raises(RuntimeError) as info:
        runner.run(
            "nodules.json",
            ckpt_path=str(nodule_runs["inject"] / "checkpoints" / "checkpoint_epoch=1.pt"),
            mode="erase",
            source=str(nodule_dir / "dataset.json"),
            output_dir=str(tmp_path / "x"),
        )
    assert "trained with model='nodule_inject', but this run asks for model='nodule_erase'" in str(info.value.__cause__)
    er = tmp_path / "erased"
    runner.run(
        "nodules.json",
        ckpt_path=str(nodule_runs["erase"] / "checkpoints" / "checkpoint_epoch=1.pt"),
        mode="erase",
        source=str(nodule_dir / "dataset.json"),
        output_dir=str(er),
        fraction=1.0,
    )
    items = json.loads((er / "datalist.json").read_text())["training"]
    assert [i["nodule"] for i in items] == [0, 0, 0] and all(i["erased"] >= 1 for i in items)


@pytest.fixture(scope="module")
def classifier_datalist(tmp_path_factory):
    """12 single-scan patients in HU (32^3 at 9 mm), every second with a 14 mm nodule."""
    from ctsynth.data.phantoms import make_chest_phantom

    root = tmp_path_factory.mktemp("cls")
    items = []
    for i in range(12):
        v = make_chest_phantom(32, 9.0, seed=i, nodules=i % 2, nodule_radius_mm=14.0)
        save_volume(v.image.astype(np.float32), v.affine, root / "imagesTr" / f"p{i}.nii.gz")
        items.append({"image": f"imagesTr/p{i}.nii.gz", "nodule": i % 2})
    write_json_atomic({"training": items}, root / "datalist.json")
    return root / "datalist.json"


def test_classifier_experiments_real_synthetic_finetune(runner, classifier_datalist, tmp_path):
    from ctsynth.experiments import make_patient_split

    # 12 patients: 2 test, 5 folds of 2; fold 0 validates, 8 train
    split = make_patient_split([f"p{i}" for i in range(12)], n_folds=5, test_fraction=1 / 6, seed=0)
    split_file = str(split.save(tmp_path / "split.json"))
    common = dict(real_datalist=str(classifier_datalist), split_file=split_file, study_dir=str(tmp_path))
    # a synthetic set of other "patients": the real volumes under other names
    syn_list = json.loads(classifier_datalist.read_text())
    syn_list["training"] = [{**e, "case": f"syn{i}"} for i, e in enumerate(syn_list["training"])]
    write_json_atomic(syn_list, classifier_datalist.parent / "synthetic.json")
    common["synthetic_datalist"] = str(classifier_datalist.parent / "synthetic.json")
    runner.run("train_classifier.json", experiment="synthetic", **common)
    syn = json.loads((tmp_path / "synthetic" / "seed_0" / "test_metrics.json").read_text())
    assert syn["experiment"] == "synthetic" and syn["n_train"] == 12 and syn["n_test"] == 2
    assert 0.0 <= syn["accuracy"] <= 1.0
    runner.run("train_classifier.json", experiment="finetune", **common)  # starts from synthetic/seed_0
    ft = json.loads((tmp_path / "finetune" / "seed_0" / "test_metrics.json").read_text())
    assert ft["experiment"] == "finetune" and ft["n_train"] == 8  # the training patients of fold 0
    # the real datalist as the "synthetic" set puts test patients into the training input: refused
    with pytest.raises(RuntimeError) as info:
        runner.run("train_classifier.json", **{**common, "synthetic_datalist": str(classifier_datalist)},
                   experiment="synthetic", seed=1)  # fmt: skip
    leaked = sorted(split.test)
    assert f"classifier synthetic seed 1: test patient(s) in the training input: {leaked}" in str(info.value.__cause__)
    with pytest.raises(RuntimeError) as info:
        runner.run(
            "train_classifier.json", experiment="finetune", pretrained_ckpt=str(tmp_path / "none.pt"), seed=2,
            **common,
        )  # fmt: skip
    assert "no pre-trained classifier (run the 'synthetic' experiment first)" in str(info.value.__cause__)


def test_smoke_overlay_covers_every_config(runner):
    """Every top-level size the smoke overlay sets is a variable of some config (no silently ignored override)."""
    smoke = json.loads((runner.configs / "smoke.json").read_text())
    names = set()
    for path in Path(runner.configs).glob("*.json"):
        if path.name not in ("smoke.json", "metadata.json"):
            names |= set(json.loads(path.read_text()))
    assert sorted(k for k in smoke if not k.startswith("_") and k not in names) == []


def test_prepare_data_writes_cubes_with_labels(runner, nodule_dir, tmp_path):
    runner.run(
        "prepare_data.json", dataset_dir=str(nodule_dir), output_dir=str(tmp_path / "cubes"), n_folds=2,
        test_fraction=0.34,
    )  # fmt: skip
    dataset = json.loads((tmp_path / "cubes" / "dataset.json").read_text())
    assert [e["image"] for e in dataset["training"]] == [f"./imagesTr/case{i}.nii.gz" for i in range(3)]
    assert [e["case"] for e in dataset["training"]] == [f"case{i}" for i in range(3)]
    split = json.loads((tmp_path / "cubes" / "split.json").read_text())  # recorded in the run folder
    assert len(split["test"]) == 1 and sorted(split["test"] + sum(split["folds"], [])) == ["case0", "case1", "case2"]
    image, affine = load_volume(tmp_path / "cubes" / "imagesTr" / "case0.nii.gz")
    label, _ = load_volume(tmp_path / "cubes" / "labelsTr" / "case0.nii.gz")
    assert image.shape == label.shape == (32, 32, 32) and image.min() >= -1000 and image.max() <= 400
    assert label.sum() > 0 and np.allclose(np.abs(np.diag(affine)[:3]), np.abs(affine[0, 0]))  # isotropic


@pytest.mark.parametrize(
    "problem, message",
    [("nan", "NaN or infinite"), ("label", "label values [2] not in allowed labels [0, 1]"), ("hu", "not HU")],
)
def test_prepare_data_refuses_bad_inputs_naming_the_file(runner, nodule_dir, tmp_path, problem, message):
    """The shared input checks run first: nothing is written for a dataset with a NaN scan, a label other than the
    nodule's 1, or intensities that are not HU; the error names the file."""
    import shutil

    data = tmp_path / "chest"
    shutil.copytree(nodule_dir, data)
    bad = data / ("labelsTr" if problem == "label" else "imagesTr") / "case1.nii.gz"
    volume, affine = load_volume(bad)
    if problem == "nan":
        volume[3, 4, 5] = np.nan
    elif problem == "label":
        volume[volume > 0] = 2
    else:
        volume = (volume + 1000.0) / 1400.0  # scaled to [0, 1]
    save_volume(volume.astype(np.uint8 if problem == "label" else np.float32), affine, bad)
    with pytest.raises(RuntimeError) as info:
        runner.run("prepare_data.json", dataset_dir=str(data), output_dir=str(tmp_path / "cubes"), n_folds=2)
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any(str(bad) in m and message in m for m in chain), chain
    assert not (tmp_path / "cubes").exists()


def test_classifier_report_table_and_plot(runner, tmp_path):
    runs = tmp_path / "runs"
    for experiment, base in (("real", 0.6), ("synthetic", 0.7), ("finetune", 0.8)):
        for radius in (7, 8):
            for seed in range(3):
                acc = base + 0.01 * seed + 0.05 * (radius - 7)
                info = {"experiment": experiment, "seed": seed, "nodule_radius": radius, "accuracy": acc}
                write_json_atomic(info, runs / f"{experiment}_{radius}_{seed}" / "test_metrics.json")
    runner.run("classifier_report.json", runs_dir=str(runs), output_dir=str(tmp_path / "report"))
    rows = json.loads((tmp_path / "report" / "accuracy.json").read_text())["rows"]
    assert [(r["nodule_radius"], r["experiment"]) for r in rows[:3]] == [(7, "real"), (7, "synthetic"), (7, "finetune")]
    assert rows[0]["mean"] == pytest.approx(0.61) and rows[0]["std"] == pytest.approx(np.std([0.6, 0.61, 0.62]))
    assert rows[0]["seeds"] == [0, 1, 2] and len(rows) == 6
    assert "| 8 | finetune | 0.860 ± 0.008 | [0, 1, 2] |" in (tmp_path / "report" / "accuracy.md").read_text()
    assert (tmp_path / "report" / "accuracy.png").stat().st_size > 1000
    with pytest.raises(RuntimeError) as info:
        runner.run("classifier_report.json", runs_dir=str(tmp_path / "none"), output_dir=str(tmp_path / "r2"))
    assert "no test_metrics.json (run configs/train_classifier.json first)" in str(info.value.__cause__)


# ---------------------------------------------------------------- the classifier study end to end


def _chest_dataset(root: Path, names: list[str], seed: int, labels: bool = True) -> None:
    """Chest phantoms (48^3 at 7 mm, one 14 mm nodule each: it survives the 32^3 cube), MSD layout."""
    from ctsynth.data.phantoms import make_chest_phantom

    training = []
    for i, name in enumerate(names):
        v = make_chest_phantom(48, 7.0, seed=seed + i, nodules=1, nodule_radius_mm=14.0)
        save_volume(v.image.astype(np.float32), v.affine, root / "imagesTr" / f"{name}.nii.gz")
        entry = {"image": f"./imagesTr/{name}.nii.gz"}
        if labels:
            save_volume(v.label, v.affine, root / "labelsTr" / f"{name}.nii.gz")
            entry["label"] = f"./labelsTr/{name}.nii.gz"
        training.append(entry)
    write_json_atomic({"training": training}, root / "dataset.json")


@pytest.mark.slow
def test_study_keeps_test_patients_out_of_every_training_input(runner, tmp_path):
    """The whole study through monai.bundle on phantoms (1 seed, 1 nodule radius, 32^3 cubes): the split is made
    first and recorded; no test patient is in the training input of either nodule GAN or any classifier run; the
    accuracy table covers every experiment."""
    from monai.bundle import ConfigParser

    from ctsynth.experiments import PatientSplit, case_id_of

    cases = [f"pat{i}" for i in range(6)]
    _chest_dataset(tmp_path / "chest", cases, seed=0)
    cubes = tmp_path / "cubes"
    runner.run("prepare_data.json", dataset_dir=str(tmp_path / "chest"), output_dir=str(cubes), n_folds=2,
               test_fraction=0.34)  # fmt: skip
    split_file = cubes / "split.json"
    split = PatientSplit.load(split_file)
    test = set(split.test)
    assert set(split.cases) == set(cases) and len(test) == 2

    # nodule GANs: only development patients reach the trainer
    gan_runs = {}
    for mode in ("inject", "erase"):
        gan_runs[mode] = tmp_path / f"run_{mode}"
        overrides = {"mode": mode, "dataset_dir": str(tmp_path / "chest"), "split_file": str(split_file)}
        runner.run("train_nodule_gan.json", output_dir=str(gan_runs[mode]), **overrides)
        with runner.scripts():
            parser = ConfigParser()
            parser.read_config(runner.config_files("train_nodule_gan.json"))
            parser.update({"bundle_root": str(runner.root), **overrides})
            items = parser.get_parsed_content("train#datalist")
        assert {case_id_of(it) for it in items} == set(split.cases) - test, mode

    # the classifier's real set: half of the real cubes with their nodules erased (test patients' cubes are its test
    # set); the synthetic source: "CT-SGAN volumes" of other patients
    real = tmp_path / "classifier_real"
    erase_ckpt = str(gan_runs["erase"] / "checkpoints" / "checkpoint_epoch=1.pt")
    runner.run("nodules.json", mode="erase", ckpt_path=erase_ckpt, source=str(cubes / "dataset.json"),
               output_dir=str(real))  # fmt: skip
    _chest_dataset(tmp_path / "samples", [f"sample_{i}" for i in range(4)], seed=50, labels=False)
    study = tmp_path / "study"
    runner.run(
        "train_classifier.json",
        run_id="run_study",
        bundle_root=str(runner.root),
        study_dir=str(study),
        real_datalist=str(real / "datalist.json"),
        split_file=str(split_file),
        inject_ckpt=str(gan_runs["inject"] / "checkpoints" / "checkpoint_epoch=1.pt"),
        ctsgan_samples=str(tmp_path / "samples" / "imagesTr"),
        nodule_radii=[2.0],
        study_seeds=[0],
    )
    rows = json.loads((study / "report" / "accuracy.json").read_text())["rows"]
    assert [(r["experiment"], r["nodule_radius"], r["seeds"]) for r in rows] == [
        ("synthetic", 2.0, [0]),
        ("finetune", 2.0, [0]),
        ("real", None, [0]),
    ]
    assert "| real nodules | real |" in (study / "report" / "accuracy.md").read_text()
    assert (study / "radius_2" / "study_metrics.csv").is_file() and (study / "real" / "study_summary.json").is_file()

    # every classifier run: what it trained and validated on, read back from its config, holds no test patient
    runs = {"real": study / "real", "synthetic": study / "radius_2", "finetune": study / "radius_2"}
    synthetic_list = study / "radius_2" / "synthetic" / "datalist.json"
    for experiment, study_dir in runs.items():
        metrics = json.loads((study_dir / experiment / "seed_0" / "test_metrics.json").read_text())
        assert metrics["experiment"] == experiment and metrics["n_test"] == 2  # the 2 test patients' cubes
        with runner.scripts():
            parser = ConfigParser()
            parser.read_config(runner.config_files("train_classifier.json"))
            parser.update({"bundle_root": str(runner.root), "experiment": experiment, "study_dir": str(study_dir),
                           "real_datalist": str(real / "datalist.json"), "split_file": str(split_file),
                           "synthetic_datalist": str(synthetic_list)})  # fmt: skip
            train = parser.get_parsed_content("train_entries") + parser.get_parsed_content("splits")["val"]
        assert train and {case_id_of(it) for it in train}.isdisjoint(test), experiment
