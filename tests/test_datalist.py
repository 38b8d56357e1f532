"""Datalists: MSD dataset.json / NIfTI folders -> seeded folds and test split; loading and per-fold splits."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from ctsynth.data.datalist import datalist_split, find_cases, load_datalist, make_datalist, split_cases
from ctsynth.data.io import save_volume

TINY = np.zeros((4, 4, 3), dtype=np.int16)


def write_msd(root: Path, n: int, with_json: bool = True, image_suffix: str = "") -> Path:
    """A tiny MSD-style dataset: imagesTr/case_XXX{suffix}.nii.gz, labelsTr/case_XXX.nii.gz, dataset.json."""
    for i in range(n):
        save_volume(TINY, np.eye(4), root / "imagesTr" / f"case_{i:03d}{image_suffix}.nii.gz")
        save_volume(TINY.astype(np.uint8), np.eye(4), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    if with_json:
        meta = {
            "name": "TinyTask",
            "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
            "modality": {"0": "CT"},
            "training": [
                {"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"}
                for i in range(n)
            ],
            "test": ["./imagesTs/unused.nii.gz"],
        }
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def all_entries(datalist: dict) -> list[dict]:
    return datalist["training"] + datalist["testing"]


def test_msd_json_to_datalist(tmp_path):
    root = write_msd(tmp_path / "Task", 23)
    (root / "imagesTr" / "._case_000.nii.gz").write_bytes(b"\x00macos resource fork")  # as in the MSD archives
    out = make_datalist(root / "dataset.json", n_folds=5, test_fraction=0.2, seed=3)
    assert out == root / "datalist.json"
    datalist = json.loads(out.read_text())
    assert datalist["name"] == "TinyTask" and datalist["n_folds"] == 5 and datalist["seed"] == 3
    assert datalist["labels"]["1"] == "pancreas"
    # every case exactly once, paths relative to the datalist's folder, image and label of the same case
    images = [e["image"] for e in all_entries(datalist)]
    assert sorted(images) == [f"imagesTr/case_{i:03d}.nii.gz" for i in range(23)]
    for e in all_entries(datalist):
        assert e["label"] == e["image"].replace("imagesTr", "labelsTr")
        assert (root / e["image"]).is_file() and (root / e["label"]).is_file()
    # test split round(0.2 * 23) = 5, folds contiguous 0..4 with sizes differing by at most one (18 = 4+4+4+3+3)
    assert len(datalist["testing"]) == 5 and all("fold" not in e for e in datalist["testing"])
    sizes = Counter(e["fold"] for e in datalist["training"])
    assert sorted(sizes) == [0, 1, 2, 3, 4]
    assert sorted(sizes.values()) == [3, 3, 4, 4, 4]
    # readable by MONAI's own loader (Auto3DSeg reads it the same way)
    monai_test = load_decathlon_datalist(out, data_list_key="testing")
    assert all(Path(e["image"]).is_file() for e in monai_test)


def test_split_cases_follows_documented_algorithm():
    n, k, seed = 11, 3, 7
    assignment = split_cases(n, n_folds=k, test_fraction=0.25, seed=seed)
    order = np.random.default_rng(seed).permutation(n)
    n_test = 3  # round(2.75)
    assert set(np.flatnonzero(assignment == -1)) == set(order[:n_test])
    assert assignment[order[n_test:]].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert (split_cases(10, n_folds=5, test_fraction=0.0) >= 0).all()


def test_split_is_deterministic_and_location_independent(tmp_path):
    root = write_msd(tmp_path / "a" / "Task", 12)
    first = json.loads(make_datalist(root, seed=5).read_text())
    again = json.loads(make_datalist(root, seed=5).read_text())
    assert first == again
    moved = tmp_path / "elsewhere" / "Task"
    shutil.copytree(root, moved)
    assert json.loads(make_datalist(moved, seed=5).read_text()) == first
    other = json.loads(make_datalist(root, seed=6).read_text())
    assert other != first
    assert sorted(e["image"] for e in all_entries(other)) == sorted(e["image"] for e in all_entries(first))


def test_folders_matched_by_name_and_nnunet_suffix(tmp_path):
    root = write_msd(tmp_path / "nn", 6, with_json=False, image_suffix="_0000")
    save_volume(TINY, np.eye(4), root / "labelsTr" / "orphan.nii.gz")  # label with no image: ignored
    datalist = json.loads(make_datalist(root, n_folds=2, test_fraction=0.0).read_text())
    assert datalist["name"] == "nn" and datalist["testing"] == []
    for e in datalist["training"]:
        assert e["image"].replace("imagesTr", "labelsTr").replace("_0000", "") == e["label"]
    assert len(datalist["training"]) == 6


def test_images_only_folder(tmp_path):
    for i in range(5):
        save_volume(TINY, np.eye(4), tmp_path / "synthetic" / f"sample_{i}.nii.gz")
    out = make_datalist(tmp_path / "synthetic", out=tmp_path / "lists" / "synthetic.json", n_folds=2, seed=0)
    datalist = json.loads(out.read_text())
    entries = all_entries(datalist)
    assert len(entries) == 5 and all(set(e) <= {"image", "fold"} for e in entries)
    assert all(e["image"].startswith("../synthetic/sample_") for e in entries)  # relative to lists/
    assert all((out.parent / e["image"]).resolve().is_file() for e in entries)


def test_make_datalist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no_such_set: dataset source not found"):
        make_datalist(tmp_path / "no_such_set")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no images found"):
        make_datalist(tmp_path / "empty")
    root = write_msd(tmp_path / "unlabelled", 4, with_json=False)
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"case_002.nii.gz: image without matching label"):
        make_datalist(root)
    small = write_msd(tmp_path / "small", 4)
    with pytest.raises(ValueError, match=r"fewer cases than folds: 4 case\(s\), 1 held out"):
        make_datalist(small, n_folds=5)
    (small / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"labelsTr/case_001.nii.gz: file not found \(listed in .*dataset.json"):
        make_datalist(small, n_folds=2)
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        split_cases(10, n_folds=1)
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        split_cases(10, test_fraction=1.0)


def test_find_cases_returns_absolute_paths(tmp_path):
    root = write_msd(tmp_path / "Task", 3)
    found_root, cases, meta = find_cases(root)
    assert found_root == root and meta["name"] == "TinyTask"
    assert [c["image"] for c in cases] == [root / "imagesTr" / f"case_{i:03d}.nii.gz" for i in range(3)]


def test_load_datalist_absolute_paths(tmp_path):
    root = write_msd(tmp_path / "Task", 10)
    out = make_datalist(root, n_folds=2)
    datalist = load_datalist(out)
    assert datalist["n_folds"] == 2
    for e in all_entries(datalist):
        assert Path(e["image"]).is_absolute() and Path(e["image"]).is_file() and Path(e["label"]).is_file()
    # MSD dataset.json with ./ paths and a "test" list of plain paths
    msd = load_datalist(root / "dataset.json")
    assert msd["training"][0]["image"] == str(root / "imagesTr" / "case_000.nii.gz")
    assert msd["test"] == [{"image": str(root / "imagesTs" / "unused.nii.gz")}]
    # a folder argument prefers datalist.json; base_dir overrides the JSON's folder
    assert load_datalist(root) == datalist
    rebased = load_datalist(out, base_dir=tmp_path / "mirror")
    assert rebased["training"][0]["image"].startswith(str(tmp_path / "mirror"))


def test_load_datalist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gone.json: datalist not found"):
        load_datalist(tmp_path / "gone.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON"):
        load_datalist(tmp_path / "bad.json")


def test_datalist_split(tmp_path):
    out = make_datalist(write_msd(tmp_path / "Task", 13), n_folds=3, test_fraction=0.2, seed=1)
    datalist = load_datalist(out)
    all_training = sorted(e["image"] for e in datalist["training"])
    for fold in range(3):
        train, val = datalist_split(datalist, fold)
        assert val and all(e["fold"] == fold for e in val) and all(e["fold"] != fold for e in train)
        assert sorted(e["image"] for e in train + val) == all_training
    from_path = datalist_split(str(out), 1)
    assert from_path == datalist_split(datalist, 1)
    with pytest.raises(ValueError, match=r"fold 3 is not in the datalist; its folds are \[0, 1, 2\]"):
        datalist_split(datalist, 3)
    with pytest.raises(ValueError, match="datalist: training entry a.nii.gz has no 'fold'"):
        datalist_split({"training": [{"image": "a.nii.gz"}]}, 0)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            {"train": [{"image": "a.nii.gz"}]},
            r"no 'training' list \(keys found: 'train'\); a datalist holds 'training'",
        ),
        ({"training": "a.nii.gz"}, r"'training' must be a list of entries, got str 'a.nii.gz'"),
        ({"training": [None]}, r"entry 0 of 'training' must be an object with an 'image', got None"),
        (
            {"testing": [{"image": "b.nii.gz"}, {"img": "a.nii.gz"}]},
            r"entry 1 of 'testing' has no 'image' \(keys: 'img'\)",
        ),
    ],
    ids=["wrong-key", "not-a-list", "not-an-object", "entry-without-image"],
)
def test_malformed_datalists_name_the_file_and_entry(tmp_path, content, message):
    path = tmp_path / "dl.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        load_datalist(path)


def test_empty_or_foldless_lists_name_the_file(tmp_path):
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": [], "testing": [{"image": "a.nii.gz"}]}))
    assert load_datalist(path)["training"] == []
    with pytest.raises(ValueError, match=re.escape(f"{path}: no 'training' entries (the list is empty or absent)")):
        datalist_split(path, 0)
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz", "fold": 0}]}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: fold 1 is not in the datalist; its folds are [0]")):
        datalist_split(path, 1)
