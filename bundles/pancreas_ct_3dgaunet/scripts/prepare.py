"""Offline data preparation of 3DGAUnet training cubes (driven by ``configs/prepare_data.json``).

For every labelled CT (pancreas = 1, tumour = 2): the config's preprocessing (load, RAS, 1 mm, marker replacement)
runs once, then each cube extractor (tumour 32^3, pancreas tissue 64^3) cuts one cube, the offline augmenter adds
its rotated/flipped copies, and everything is written as NIfTI in HU at 1 mm with an MSD-style datalist per cube
type (``<output_dir>/<kind>/datalist.json``). Windowing to [0, 1] happens when training loads the cubes.

The study's patient-level split (:mod:`ctsynth.experiments.splits`) is made here, first, and recorded as
``<output_dir>/split.json``: the GAN cubes are cut from the development (non-test) patients only, every cube records
its ``case``, and every later stage (both GANs, blending, the classifier's cubes and runs) reads the same split, so no
held-out test patient's voxels reach a generator or a classifier's training data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctsynth.data.datalist import find_cases
from ctsynth.data.io import atomic_directory, is_nifti_file, load_volume, require_finite, save_volume, write_json_atomic
from ctsynth.experiments.splits import PatientSplit, assert_no_test_leak, case_id_of
from ctsynth.transforms.cubes import CubeRejectedError, ExtractPancreasCubed, ExtractTumorCubed
from scripts.augmentation import OfflineAugmenter

__all__ = [
    "assert_inputs_outside_test",
    "cube_case_ids",
    "find_labelled_cases",
    "load_cube_datalist",
    "prepare_cubes",
    "random_abdominal_cube_starts",
    "tumour_strata",
    "write_cubes",
    "write_random_abdominal_cubes",
]

logger = logging.getLogger(__name__)


def find_labelled_cases(
    dataset_dir: str | os.PathLike, max_cases: int | None = None, extra_dirs: Sequence[str | os.PathLike] = ()
) -> list[dict[str, str]]:
    """The labelled cases of an MSD-style dataset (``dataset.json`` or ``imagesTr/`` + ``labelsTr/``).

    Args:
        dataset_dir: dataset folder (or its ``dataset.json``).
        max_cases: keep only the first N cases of each folder (None: all).
        extra_dirs: more dataset folders whose cases are appended, e.g. a healthy-only dataset (NIH Pancreas-CT
            converted to NIfTI in the same layout: pancreas = 1, no tumour label) as the source of healthy pancreas
            cubes; case ids must be unique across the folders.

    Returns:
        ``[{"image": path, "label": path}, ...]`` with absolute paths.

    Raises:
        FileNotFoundError: when the folder or a listed file does not exist.
        ValueError: when the dataset has no label maps.
    """
    root, cases, _ = find_cases(dataset_dir)
    if not cases:
        raise FileNotFoundError(f"{dataset_dir}: no CT images found")
    unlabelled = [str(c["image"]) for c in cases if "label" not in c]
    if unlabelled:
        raise ValueError(
            f"{root}: {len(unlabelled)} image(s) without a label map (e.g. {unlabelled[0]}); prepare_data needs CT "
            "with pancreas (1) and tumour (2) labels, as MSD Task07 labelsTr/"
        )
    out = [{"image": str(c["image"]), "label": str(c["label"])} for c in cases]
    out = out[: int(max_cases)] if max_cases else out
    for extra in extra_dirs or ():
        out += find_labelled_cases(extra, max_cases=max_cases)
    ids = [case_id_of(c) for c in out]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{dataset_dir} and {list(extra_dirs)}: case ids occur twice: {duplicates[:5]}")
    return out


def tumour_strata(cases: list[Mapping[str, str]], tumor_label: int = 2) -> dict[str, str]:
    """Class of each case for a stratified patient split: ``"tumour"`` when its label map holds ``tumor_label``,
    else ``"healthy"`` (keys: :func:`ctsynth.experiments.splits.case_id_of` of the case)."""
    return {case_id_of(c): "tumour" if np.any(load_volume(c["label"])[0] == tumor_label) else "healthy" for c in cases}


def load_cube_datalist(
    datalist_file: str | os.PathLike, base_dir: str | os.PathLike | None = None, cube_size: int | None = None
) -> list[dict]:
    """The ``training`` items of a cube datalist written by :func:`prepare_cubes`, with absolute paths.

    When the datalist records the patient split it was cut under (``split_file``) and that file exists, the items are
    checked against it: a cube of a held-out test patient stops the load (a generator must never train on it).

    Args:
        datalist_file: ``<cubes>/<kind>/datalist.json``.
        base_dir: folder the item paths are relative to (default: the datalist's folder).
        cube_size: the edge every cube must have (checked from the NIfTI headers, before any training starts).

    Returns:
        MONAI's :func:`~monai.data.load_decathlon_datalist` items (``{"image": ..., "label": ..., ...}``).

    Raises:
        FileNotFoundError: when the datalist or one of its cubes is missing; the message names the file and says
            how to make the cubes.
        ValueError: when a cube belongs to a test patient of the recorded split, cannot be read, or is not
            ``cube_size``^3 (the message names the cube).
    """
    import nibabel as nib
    from monai.data import load_decathlon_datalist

    path = Path(datalist_file)
    hint = (
        "make the cubes first with `python -m monai.bundle run --config_file configs/prepare_data.json "
        "--dataset_dir <labelled CT> --output_dir <cubes>`, then pass --dataset_dir <cubes>/tumor or <cubes>/pancreas"
    )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cube datalist not found; {hint}")
    items = load_decathlon_datalist(
        str(path), is_segmentation=False, data_list_key="training", base_dir=str(base_dir or path.parent)
    )
    missing = [str(it["image"]) for it in items if not Path(str(it["image"])).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} listed cube(s) not found (e.g. {missing[0]}); {hint}")
    for item in items:
        try:
            shape = tuple(int(n) for n in nib.load(str(item["image"])).shape)
        except Exception as e:  # nibabel raises several types for corrupt headers
            raise ValueError(f"{item['image']}: cube cannot be read as NIfTI ({type(e).__name__}: {e}); {hint}") from e
        if cube_size is not None and shape != (int(cube_size),) * 3:
            raise ValueError(
                f"{item['image']}: cube of shape {shape}, expected {(int(cube_size),) * 3} (listed in {path}); "
                f"cubes of mixed sizes cannot be batched: re-run prepare_data.json, or check --model"
            )
    split_file = json.loads(path.read_text()).get("split_file")
    if split_file and (path.parent / split_file).is_file():
        assert_no_test_leak(items, PatientSplit.load(path.parent / split_file), stage=f"{path}")
    return items


def cube_case_ids(files: Sequence[str | os.PathLike], warn: bool = True) -> list[str]:
    """Patient (case) id of each cube file.

    ``prepare_cubes`` writes ``<kind>/images/<case>_<tag>.nii.gz`` with a ``<kind>/datalist.json`` whose items carry
    ``case``: that is used when present. Otherwise a ``<case>_orig`` name gives ``<case>``, and any other file counts
    as its own patient (its absolute path without ``.nii.gz``; logged when ``warn``, since cubes of one scan could
    then straddle the split).
    """
    lookups: dict[Path, dict[str, str]] = {}
    ids, unknown = [], []
    for f in files:
        path = Path(f)
        kind_dir = path.parent.parent
        if kind_dir not in lookups:
            datalist = kind_dir / "datalist.json"
            items = json.loads(datalist.read_text()).get("training", []) if datalist.is_file() else []
            lookups[kind_dir] = {Path(it["image"]).name: str(it["case"]) for it in items if "case" in it}
        stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
        case = lookups[kind_dir].get(path.name)
        if case is None and stem.endswith("_orig"):
            case = stem[: -len("_orig")]
        if case is None:  # the absolute path: same-named files of two folders are two patients
            case = path.resolve().with_name(stem).as_posix()
            unknown.append(path.name)
        ids.append(case)
    if unknown and warn:
        logger.warning(
            "%d cube(s) without a recorded case (e.g. %s): each counts as its own patient", len(unknown), unknown[0]
        )
    return ids


def assert_inputs_outside_test(source: str | os.PathLike, split_file: str | os.PathLike | None) -> None:
    """Raise when a NIfTI file of ``source`` (a folder, searched recursively) is a cube of a test patient of the
    recorded split; nothing to check when ``split_file`` is ``None`` or does not exist.

    A stage whose inputs may be real cubes (blending takes real pancreas cubes as tissue, for instance) calls this, so
    that a folder of real cubes that includes the test patients (e.g. the classifier's real cubes) cannot feed it.
    Synthetic samples carry no patient and always pass.

    Raises:
        ValueError: naming the folder and the leaked case ids.
    """
    if split_file is None or not Path(split_file).is_file():
        return
    files = sorted(p for p in Path(source).rglob("*") if is_nifti_file(p))
    assert_no_test_leak(cube_case_ids(files, warn=False), PatientSplit.load(split_file), stage=f"{source}", case_of=str)


def _has_target(extractor: Callable, label: torch.Tensor) -> bool:
    """Whether the label holds what the extractor cuts around (cases without it are skipped, not errors)."""
    if isinstance(extractor, ExtractTumorCubed):
        return bool((torch.as_tensor(label) == extractor.tumor_label).any())
    if isinstance(extractor, ExtractPancreasCubed):
        return bool(extractor.pancreas_mask(torch.as_tensor(label)).any())
    return True


def _affine(cube: torch.Tensor, spacing_mm: float) -> np.ndarray:
    affine = getattr(cube, "affine", None)
    if affine is None:
        return np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    return np.asarray(torch.as_tensor(affine), dtype=np.float64)


def prepare_cubes(
    cases: list[Mapping[str, str]],
    preprocessing: Callable[[dict], dict],
    extractors: Mapping[str, Callable[[dict], dict]],
    output_dir: str | os.PathLike,
    **kwargs: Any,
) -> dict[str, Path]:
    """Cut, augment and write the training cubes of every case into ``output_dir`` as a whole.

    Everything is written into a temporary sibling folder that replaces ``output_dir`` only when every case is
    done (:func:`ctsynth.data.io.atomic_directory`): a failed or killed run leaves the previous cubes untouched
    and no partial folder. Arguments as :func:`write_cubes`.

    Returns:
        ``{kind: datalist path}`` inside ``output_dir``.
    """
    split, split_file = kwargs.get("split"), kwargs.get("split_file")
    with atomic_directory(output_dir) as partial:
        if (
            split is not None
            and split_file is not None
            and Path(split_file).parent.resolve() == Path(output_dir).resolve()
        ):
            # the recorded split lives beside the cubes: it moves into place with them
            kwargs["split_file"] = split.save(partial / Path(split_file).name)
        written = write_cubes(cases, preprocessing, extractors, partial, **kwargs)
    return {kind: Path(output_dir) / path.relative_to(partial) for kind, path in written.items()}


def write_cubes(
    cases: list[Mapping[str, str]],
    preprocessing: Callable[[dict], dict],
    extractors: Mapping[str, Callable[[dict], dict]],
    output_dir: str | os.PathLike,
    augmenter: OfflineAugmenter | None = None,
    spacing_mm: float = 1.0,
    image_key: str = "image",
    label_key: str = "label",
    split: PatientSplit | None = None,
    split_file: str | os.PathLike | None = None,
    required_kinds: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Cut, augment and write the training cubes of every case; one datalist per cube kind.

    A case without the extractor's target (no tumour, no pancreas) or whose cube is rejected
    (:class:`~ctsynth.transforms.cubes.CubeRejectedError`, e.g. no tumour-free pancreas box) is skipped for that kind
    with a warning.

    Args:
        cases: ``[{"image": path, "label": path}]``.
        preprocessing: transform applied once per case (returns channel-first HU image and label at 1 mm).
        extractors: ``{kind: cube transform}``, e.g. ``{"tumor": ExtractTumorCubed(...), "pancreas": ...}``.
        output_dir: destination; cubes go to ``<output_dir>/<kind>/{images,labels}/``.
        augmenter: offline augmenter (None: originals only).
        spacing_mm: voxel spacing of the cubes (for the affine when the cube carries none).
        image_key: key of the image.
        label_key: key of the label map.
        split: the study's patient split; when given, ``cases`` must hold no test patient (they are cubes a
            generator trains on; filter with ``ctsynth.experiments.filter_records(cases, split, "development")``).
        split_file: where ``split`` is recorded; stored (relative) in each datalist so later stages can check.
        required_kinds: kinds that must yield at least one cube (``None``: every kind). A kind outside it that yields
            none (e.g. ``tumor`` for a healthy-only dataset) is logged and gets no folder or datalist.

    Returns:
        ``{kind: datalist path}`` of the kinds with cubes.

    Raises:
        ValueError: when no case yields a cube of a required kind (the message lists the kinds and the dataset size), a
            case is a test patient of ``split``, or a preprocessed image holds NaN or infinite values (the message
            names its file).
    """
    out_root = Path(output_dir)
    if split is not None:
        assert_no_test_leak(cases, split, stage="prepare_data (GAN training cubes)")
    entries: dict[str, list[dict[str, Any]]] = {k: [] for k in extractors}
    for index, case in enumerate(cases):
        data = preprocessing(dict(case))
        require_finite(np.asarray(torch.as_tensor(data[image_key])), case[image_key], "image (after preprocessing)")
        case_id = case_id_of(case, image_key=image_key)
        for kind, extract in extractors.items():
            if not _has_target(extract, data[label_key]):
                logger.warning("%s: no %s target in %s, skipped", kind, kind, case[label_key])
                continue
            try:
                cube = extract({image_key: data[image_key], label_key: data[label_key]})
            except CubeRejectedError as e:
                logger.warning("%s: cube of %s rejected, skipped: %s", kind, case[label_key], e)
                continue
            image, label = cube[image_key], cube[label_key]
            affine = _affine(image, spacing_mm)
            copies = [("orig", image, label)]
            if augmenter is not None:
                copies += [(v.name, img, lbl) for v, img, lbl in augmenter(image, label, volume_index=index)]
            for tag, img, lbl in copies:
                rel_img = Path(kind) / "images" / f"{case_id}_{tag}.nii.gz"
                rel_lbl = Path(kind) / "labels" / f"{case_id}_{tag}.nii.gz"
                save_volume(np.asarray(torch.as_tensor(img)[0], dtype=np.float32), affine, out_root / rel_img)
                save_volume(np.asarray(torch.as_tensor(lbl)[0]).astype(np.uint8), affine, out_root / rel_lbl)
                entries[kind].append(
                    {
                        "image": str(rel_img.relative_to(kind)),
                        "label": str(rel_lbl.relative_to(kind)),
                        "case": case_id,
                        "augmentation": tag,
                    }
                )
        logger.info("case %d/%d (%s) done", index + 1, len(cases), case_id)
    required = list(entries) if required_kinds is None else [str(k) for k in required_kinds]
    empty = [k for k, v in entries.items() if not v]
    missing = [k for k in empty if k in required]
    if missing:
        raise ValueError(f"no {', '.join(missing)} cube could be cut from the {len(cases)} case(s) given")
    for kind in empty:
        logger.warning("%s: no cube in the %d case(s) given (healthy-only data?): none written", kind, len(cases))
    written = {}
    for kind, items in entries.items():
        if not items:
            continue
        path = out_root / kind / "datalist.json"
        datalist: dict[str, Any] = {"description": f"3DGAUnet {kind} cubes (HU, {spacing_mm} mm)", "cube_kind": kind}
        if split_file is not None:
            datalist["split_file"] = os.path.relpath(Path(split_file).resolve(), path.parent.resolve())
        write_json_atomic({**datalist, "training": items}, path)
        written[kind] = path
        logger.info("%s: %d cubes -> %s", kind, len(items), path)
    return written


def random_abdominal_cube_starts(
    image: np.ndarray, n: int, cube_size: int, rng: np.random.Generator, body_hu: float = -500.0
) -> list[tuple[int, int, int]]:
    """Starts of ``n`` random ``cube_size``^3 boxes inside the volume whose centre voxel lies in the body.

    The body is the largest connected component of voxels above ``body_hu`` (air and the table's gap excluded).
    Boxes fit inside the volume on every axis that is at least ``cube_size`` long (others start at 0 and are padded by
    the caller). Draws are with replacement, uniform over the admissible centres.

    Raises:
        ValueError: when no body voxel can centre a box.
    """
    from monai.transforms.utils import get_largest_connected_component_mask

    body = np.asarray(get_largest_connected_component_mask(image > body_hu, connectivity=1), dtype=bool)
    half = cube_size // 2
    admissible = np.zeros_like(body)
    sl = tuple(slice(half, max(half, s - cube_size + half) + 1) if s >= cube_size else slice(None) for s in image.shape)
    admissible[sl] = body[sl]
    centres = np.argwhere(admissible)
    if centres.size == 0:
        raise ValueError(f"no body voxel (> {body_hu} HU) can centre a {cube_size}^3 cube in a {image.shape} volume")
    picks = centres[rng.integers(0, len(centres), size=int(n))]
    sizes = np.asarray(image.shape)
    starts = np.where(sizes >= cube_size, picks - half, 0)
    return [tuple(int(v) for v in s) for s in starts]


def write_random_abdominal_cubes(
    cases: list[Mapping[str, str]],
    preprocessing: Callable[[dict], dict],
    output_dir: str | os.PathLike,
    n: int = 100,
    cube_size: int = 64,
    seed: int = 0,
    body_hu: float = -500.0,
    image_key: str = "image",
    split: PatientSplit | None = None,
    split_file: str | os.PathLike | None = None,
) -> Path:
    """The 3DGAUnet paper's negative set: ``n`` random abdominal ``cube_size``^3 cubes (HU, 1 mm), one datalist.

    "100 random abdominal CT images are cropped into 64 x 64 x 64 cubes as a negative sample set, and are used to
    compare 3D metrics with the blended volumes" (Shi et al. 2023, section 3.3). The cases are shuffled with ``seed``
    and dealt round-robin (one cube per case when there are at least ``n`` cases); each cube is centred on a random
    body voxel (:func:`random_abdominal_cube_starts`). Written atomically as
    ``<output_dir>/images/<case>_neg<k>.nii.gz`` plus ``<output_dir>/datalist.json`` (items carry ``case``); the blends'
    table uses it as its real reference (``configs/evaluate.json``).

    Args:
        cases: ``[{"image": path, "label": path}]``; with ``split``, development patients only.
        preprocessing: the per-case transform of ``configs/prepare_data.json`` (HU, RAS, 1 mm).
        output_dir: destination folder (replaced as a whole).
        n: number of cubes (100 in the paper).
        cube_size: cube edge in voxels (64).
        seed: seed of the case order and the positions.
        body_hu: body threshold in HU.
        image_key: key of the image.
        split: the study's patient split; a test patient among ``cases`` is an error.
        split_file: recorded in the datalist (relative), as for the GAN cubes.

    Returns:
        Path of the written datalist.

    Raises:
        ValueError: when ``cases`` is empty or holds a test patient, or ``n`` < 1.
    """
    if not cases:
        raise ValueError("no case to cut random abdominal cubes from")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if split is not None:
        assert_no_test_leak(cases, split, stage="prepare_data (negative abdominal cubes)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    per_case = [int(np.sum(np.arange(int(n)) % len(cases) == i)) for i in range(len(cases))]
    items: list[dict[str, Any]] = []
    with atomic_directory(output_dir) as partial:
        for rank, index in enumerate(order):
            if per_case[rank] == 0:
                continue
            case = cases[int(index)]
            data = preprocessing(dict(case))
            image = torch.as_tensor(data[image_key])
            hu = np.asarray(image[0], dtype=np.float32)
            require_finite(hu, case[image_key], "image (after preprocessing)")
            affine = _affine(image, 1.0)
            pad = [(0, max(0, cube_size - s)) for s in hu.shape]
            padded = np.pad(hu, pad, constant_values=-1024.0)
            case_id = case_id_of(case, image_key=image_key)
            for k, start in enumerate(random_abdominal_cube_starts(hu, per_case[rank], cube_size, rng, body_hu)):
                box = tuple(slice(a, a + cube_size) for a in start)
                cube_affine = affine.copy()
                cube_affine[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
                rel = Path("images") / f"{case_id}_neg{k}.nii.gz"
                save_volume(padded[box].astype(np.float32), cube_affine, partial / rel)
                items.append({"image": str(rel), "case": case_id, "start_voxel": list(start)})
        datalist: dict[str, Any] = {
            "description": f"{len(items)} random abdominal {cube_size}^3 cubes (HU, 1 mm): the 3DGAUnet negative set",
            "seed": int(seed),
        }
        if split_file is not None:
            datalist["split_file"] = os.path.relpath(Path(split_file).resolve(), Path(output_dir).resolve())
        write_json_atomic({**datalist, "training": items}, partial / "datalist.json")
    logger.info("negative set: %d random abdominal cubes -> %s", len(items), output_dir)
    return Path(output_dir) / "datalist.json"
