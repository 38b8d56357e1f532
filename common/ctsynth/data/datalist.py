"""Datalist JSON files: MSD ``dataset.json`` or NIfTI folders -> seeded cross-validation folds and a test split.

The written datalist is Auto3DSeg-compatible (MSD style)::

    {
        "name": "Task07_Pancreas", "n_folds": 5, "seed": 0, "test_fraction": 0.2,
        "training": [{"image": "imagesTr/pancreas_001.nii.gz", "label": "labelsTr/pancreas_001.nii.gz", "fold": 0}],
        "testing": [{"image": "imagesTr/pancreas_004.nii.gz", "label": "labelsTr/pancreas_004.nii.gz"}]
    }

Paths are relative to the datalist's own folder. Fold numbers run 0..k-1 and fold sizes differ by at most one.
The split depends only on the seed and the set of case paths (not on the file system's listing order).
Sets without labels (e.g. synthetic images) give entries with ``"image"`` only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

from ctsynth.data.io import is_nifti_file, nifti_stem, read_json, write_json_atomic

__all__ = ["datalist_split", "find_cases", "load_datalist", "make_datalist", "split_cases"]

logger = logging.getLogger(__name__)

MSD_JSON = "dataset.json"
DATALIST_JSON = "datalist.json"
#: Channel suffix of nnU-Net style image names (``case_0000.nii.gz`` for the label ``case.nii.gz``).
CHANNEL_SUFFIX = "_0000"
LIST_KEYS = ("training", "validation", "testing", "test")
#: MSD ``dataset.json`` keys carried over to the datalist.
CARRIED_KEYS = ("description", "labels", "modality", "reference", "licence", "tensorImageSize")


def _missing_message(missing: Sequence[Path], where: Path) -> str:
    lines = [f"{p}: file not found (listed in {where})" for p in missing[:20]]
    if len(missing) > 20:
        lines.append(f"... and {len(missing) - 20} more")
    return "\n".join(lines)


def _cases_from_msd_json(json_path: Path) -> tuple[list[dict[str, Path]], dict[str, Any]]:
    meta = read_json(json_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), list) or not meta["training"]:
        raise ValueError(f"{json_path}: no images found (expected a non-empty 'training' list)")
    root = json_path.parent
    cases: list[dict[str, Path]] = []
    for item in meta["training"]:
        entry = {"image": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{json_path}: 'training' entry {item!r} has no 'image'")
        case = {k: Path(os.path.normpath(root / entry[k])) for k in ("image", "label") if entry.get(k)}
        cases.append(case)
    missing = [p for case in cases for p in case.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(_missing_message(missing, json_path))
    extra = {k: meta[k] for k in CARRIED_KEYS if k in meta}
    extra["name"] = str(meta.get("name") or root.name)
    return cases, extra


def _cases_from_folders(images_dir: Path, labels_dir: Path | None) -> list[dict[str, Path]]:
    images = sorted(p for p in images_dir.iterdir() if is_nifti_file(p))
    if not images:
        raise FileNotFoundError(f"{images_dir}: no images found (no .nii or .nii.gz files)")
    if labels_dir is None:
        return [{"image": p} for p in images]
    labels = {p.name: p for p in labels_dir.iterdir() if is_nifti_file(p)}
    cases, unmatched = [], []
    for image in images:
        stem = nifti_stem(image)
        names = [image.name]
        if stem.endswith(CHANNEL_SUFFIX):
            names.append(stem[: -len(CHANNEL_SUFFIX)] + image.name[len(stem) :])
        label = next((labels[n] for n in names if n in labels), None)
        if label is None:
            unmatched.append(f"{image}: image without matching label (expected {labels_dir / image.name})")
        else:
            cases.append({"image": image, "label": label})
    if unmatched:
        raise ValueError("\n".join(unmatched))
    orphans = sorted(set(labels.values()) - {c["label"] for c in cases})
    if orphans:
        logger.warning("%s: %d label(s) without an image are ignored, e.g. %s", labels_dir, len(orphans), orphans[0])
    return cases


def find_cases(source: str | os.PathLike) -> tuple[Path, list[dict[str, Path]], dict[str, Any]]:
    """Find the image (and label) files of a dataset.

    Args:
        source: an MSD ``dataset.json``; a folder holding one; a folder with ``imagesTr/`` and ``labelsTr/``
            (matched by file name, also ``case_0000.nii.gz`` -> ``case.nii.gz``); a folder with ``imagesTr/``
            only; or a folder of NIfTI images (no labels, e.g. a synthetic set).

    Returns:
        ``(root, cases, meta)``: the dataset folder, the cases as ``{"image": Path, "label": Path}`` (absolute
        paths, ``"label"`` absent for unlabelled sets) and metadata (``name``, plus ``labels`` etc. from
        ``dataset.json``).

    Raises:
        FileNotFoundError: when ``source`` or a listed file does not exist, or no images are found.
        ValueError: when an image has no matching label or ``dataset.json`` is malformed.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: dataset source not found")
    if source.is_file():
        cases, meta = _cases_from_msd_json(source)
        return source.parent, cases, meta
    if (source / MSD_JSON).is_file():
        cases, meta = _cases_from_msd_json(source / MSD_JSON)
        return source, cases, meta
    images_dir, labels_dir = source / "imagesTr", source / "labelsTr"
    if images_dir.is_dir():
        cases = _cases_from_folders(images_dir, labels_dir if labels_dir.is_dir() else None)
    elif labels_dir.is_dir():
        raise FileNotFoundError(f"{source}: has labelsTr/ but no imagesTr/ folder")
    else:
        cases = _cases_from_folders(source, None)
    return source, cases, {"name": source.resolve().name}


def split_cases(n_cases: int, n_folds: int = 5, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Seeded assignment of cases to a test split and to cross-validation folds, by index.

    The project's one splitter, :func:`ctsynth.experiments.splits.make_patient_split`, applied to the case indices:
    the cases are shuffled with ``numpy.random.default_rng(seed)``; the first ``round(test_fraction * n)`` go to
    the test split and the rest are dealt to folds 0, 1, ..., k-1, 0, 1, ... so fold sizes differ by at most one.

    Args:
        n_cases: number of cases.
        n_folds: number of folds (at least 2).
        test_fraction: fraction held out for testing, in [0, 1).
        seed: seed of the shuffle.

    Returns:
        int array of length ``n_cases``: the fold of each case, or -1 for test cases.

    Raises:
        ValueError: for bad arguments or fewer non-test cases than folds.
    """
    from ctsynth.experiments.splits import make_patient_split

    ids = [f"{i:012d}" for i in range(int(n_cases))]  # zero-padded: sorted like the indices
    split = make_patient_split(ids, n_folds=n_folds, test_fraction=test_fraction, seed=seed)
    assignment = np.full(int(n_cases), -1, dtype=np.int64)
    for k, fold in enumerate(split.folds):
        assignment[[int(c) for c in fold]] = k
    return assignment


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive on Windows: keep the absolute path
        return path.resolve().as_posix()


def make_datalist(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    n_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Path:
    """Write a datalist JSON with seeded cross-validation folds and a held-out test split.

    Args:
        source: see :func:`find_cases` (MSD ``dataset.json``, a folder holding one, ``imagesTr/`` +
            ``labelsTr/``, or a folder of NIfTI images).
        out: destination JSON (default: ``<dataset folder>/datalist.json``; an existing folder gets
            ``datalist.json`` inside it).
        n_folds: number of cross-validation folds over the non-test cases (at least 2).
        test_fraction: fraction of the cases held out in ``"testing"``, in [0, 1).
        seed: seed of the split; the same seed and files give the same datalist.

    Returns:
        Path of the written datalist.

    Raises:
        FileNotFoundError: when the source or a listed file is missing, or no images are found.
        ValueError: when an image has no matching label, or there are fewer cases than folds.
    """
    root, cases, meta = find_cases(source)
    out_path = root / DATALIST_JSON if out is None else Path(out)
    if out_path.is_dir():
        out_path = out_path / DATALIST_JSON
    # cases are identified by their path relative to the dataset folder, so the split does not depend on where the
    # dataset lives
    cases = sorted(cases, key=lambda c: _relative(c["image"], root))
    assignment = split_cases(len(cases), n_folds=n_folds, test_fraction=test_fraction, seed=seed)
    base = out_path.parent
    training, testing = [], []
    for case, fold in zip(cases, assignment, strict=True):
        entry: dict[str, Any] = {k: _relative(case[k], base) for k in ("image", "label") if k in case}
        if fold < 0:
            testing.append(entry)
        else:
            training.append({**entry, "fold": int(fold)})
    datalist = {
        "name": meta.pop("name"),
        "n_folds": int(n_folds),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        **meta,
        "training": training,
        "testing": testing,
    }
    write_json_atomic(datalist, out_path)
    logger.info("%s: %d training cases in %d folds, %d test cases", out_path, len(training), n_folds, len(testing))
    return out_path


def load_datalist(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read a datalist (or an MSD ``dataset.json``) with absolute file paths.

    Uses :func:`monai.data.load_decathlon_datalist` for every list present (``training``, ``validation``,
    ``testing`` and MSD's ``test`` list of plain paths, which becomes ``[{"image": ...}]``); other keys are
    copied unchanged. ``./imagesTr/x.nii.gz`` style paths are normalised.

    Args:
        path: the JSON file, or a folder holding ``datalist.json`` (preferred) or ``dataset.json``.
        base_dir: folder the relative paths are relative to (default: the JSON's folder).

    Returns:
        The datalist as a dict, with absolute ``image`` / ``label`` paths (strings).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not valid JSON, not a JSON object, has none of the lists, or a list holds an
            entry without an ``image`` (the message names the file, the list and the entry).
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in (DATALIST_JSON, MSD_JSON) if (path / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: no {DATALIST_JSON} or {MSD_JSON} in this folder")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist not found")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a datalist must be a JSON object with a 'training' list")
    _check_lists(raw, path)
    base = Path(base_dir) if base_dir is not None else path.parent
    datalist = {k: v for k, v in raw.items() if k not in LIST_KEYS}
    for key in LIST_KEYS:
        if key in raw and not raw[key]:  # MONAI's loader fails on an empty "test" list
            datalist[key] = []
        elif key in raw:
            items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=key, base_dir=base)
            datalist[key] = [{k: _absolute(v) if k in ("image", "label") else v for k, v in i.items()} for i in items]
    return datalist


def _check_lists(raw: dict[str, Any], path: Path) -> None:
    """Refuse a datalist without any list, with a list that is not a list, or with an entry without an image.

    Raises:
        ValueError: naming ``path``, the list and the entry.
    """
    present = [k for k in LIST_KEYS if k in raw]
    if not present:
        found = ", ".join(f"'{k}'" for k in raw) or "none"
        raise ValueError(
            f"{path}: no 'training' list (keys found: {found}); a datalist holds 'training' (and 'testing') lists "
            'of {"image": ..., "label": ...} entries'
        )
    for key in present:
        items = raw[key]
        if items in (None, []):
            continue
        if not isinstance(items, list):
            raise ValueError(f"{path}: '{key}' must be a list of entries, got {type(items).__name__} {items!r:.60}")
        for n, item in enumerate(items):
            if isinstance(item, str) and item:  # MSD's "test" list holds plain image paths
                continue
            if not isinstance(item, dict):
                raise ValueError(f"{path}: entry {n} of '{key}' must be an object with an 'image', got {item!r:.60}")
            if not item.get("image"):
                keys = ", ".join(f"'{k}'" for k in item) or "none"
                raise ValueError(f"{path}: entry {n} of '{key}' has no 'image' (keys: {keys})")


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return os.path.abspath(value) if isinstance(value, (str, os.PathLike)) else value


def datalist_split(
    datalist: dict[str, Any] | str | os.PathLike, fold: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation lists of one cross-validation fold.

    Usable from a bundle config, e.g. ``"$ctsynth.data.datalist.datalist_split(@datalist, @fold)[0]"``.

    Args:
        datalist: a datalist dict (as from :func:`load_datalist`) or its JSON path (then loaded with absolute
            paths).
        fold: the validation fold.

    Returns:
        ``(train, val)``: copies of the ``"training"`` entries whose fold differs from / equals ``fold``.

    Raises:
        ValueError: when the datalist has no training list, an entry has no ``"fold"``, or ``fold`` is not one
            of the datalist's folds.
    """
    source = "datalist"
    if not isinstance(datalist, dict):
        source = str(datalist)
        datalist = load_datalist(datalist)
    entries = datalist.get("training")
    if not entries:
        raise ValueError(f"{source}: no 'training' entries (the list is empty or absent)")
    without = [e.get("image") for e in entries if "fold" not in e]
    if without:
        raise ValueError(f"{source}: training entry {without[0]} has no 'fold' ({len(without)} such entries)")
    folds = sorted({int(e["fold"]) for e in entries})
    if int(fold) not in folds:
        raise ValueError(f"{source}: fold {fold} is not in the datalist; its folds are {folds}")
    train = [dict(e) for e in entries if int(e["fold"]) != int(fold)]
    val = [dict(e) for e in entries if int(e["fold"]) == int(fold)]
    return train, val
