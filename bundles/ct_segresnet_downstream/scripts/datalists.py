"""Inputs of the downstream study: real and synthetic image/label pairs, their checks, the patient split and the
Auto3DSeg datalists of each arm.

Everything is checked before anything is written (:func:`prepare_inputs` raises one
:class:`~ctsynth.data.validation.DataValidationError` listing every problem, each line naming the file):

- a pair whose label shape differs from its image's;
- a synthetic pair whose label is empty, or holds a value that is not a label of the real data;
- a synthetic source whose labels together do not cover the real label set (e.g. tumour only where the real data has
  pancreas and tumour);
- a synthetic source without a declared ``trained_on``, whose generator trained on a held-out test patient, or which
  holds a voxel-identical copy of a test scan (e.g. the real folder passed as synthetic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ctsynth.data.datalist import find_cases
from ctsynth.data.io import list_volumes, nifti_stem, write_json_atomic
from ctsynth.data.validation import DataValidationError
from ctsynth.experiments import PatientSplit, StudyArm, assert_no_test_leak, make_patient_split
from ctsynth.experiments.splits import SPLIT_FORMAT

__all__ = [
    "Pair",
    "StudyInputs",
    "SyntheticSource",
    "arm_datalist",
    "generator_training_cases",
    "prepare_inputs",
    "read_synthetic_pairs",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One image/label pair.

    Args:
        image: image file.
        label: label file.
        case: patient (case) id; a synthetic pair's is ``synthetic:<folder name>/<file stem>`` (never a patient's).
        source: ``"real"`` or ``"synthetic"``.
    """

    image: Path
    label: Path
    case: str
    source: str = "real"

    def record(self, fold: int | None = None) -> dict[str, Any]:
        """Datalist record (absolute paths; ``fold`` when given)."""
        rec: dict[str, Any] = {"image": str(self.image), "label": str(self.label), "case": self.case}
        rec["source"] = self.source
        if fold is not None:
            rec["fold"] = int(fold)
        return rec


@dataclass(frozen=True)
class SyntheticSource:
    """A folder of synthetic pairs and what its generator trained on.

    Args:
        path: an MSD-layout folder (``dataset.json`` or ``imagesTr/`` + ``labelsTr/``), or a generator bundle's sample
            folder (``samples.json`` manifest listing ``image`` and ``label`` per sample).
        trained_on: the patients the generator learnt from: a patient split JSON (its ``development`` patients,
            i.e. every non-test patient), a datalist / MSD JSON (the case ids of its images), or a list of case ids;
            ``[]`` for a source that saw no patient (e.g. phantoms). Required: an unknown provenance cannot be
            checked against the test patients.
    """

    path: str
    trained_on: str | Sequence[str] | None = None

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, Any]) -> SyntheticSource:
        """From a config entry: ``{"path": ..., "trained_on": ...}`` (a bare path has no declared provenance)."""
        return cls(spec) if isinstance(spec, str | os.PathLike) else cls(str(spec["path"]), spec.get("trained_on"))


def read_synthetic_pairs(path: str | os.PathLike) -> list[Pair]:
    """The pairs of a synthetic source (sample folder through its manifest, or an MSD-layout folder).

    Raises:
        FileNotFoundError: when the folder, a listed image or a label is missing.
        ValueError: when a sample has no label (the message names the manifest).
    """
    folder = Path(path)
    manifest = folder / "samples.json"
    if manifest.is_file():
        images = list_volumes(folder)
        records = json.loads(manifest.read_text())["samples"]
        labels = {str(folder / r["image"]): r.get("label") for r in records}
        pairs = []
        for image in images:
            label = labels.get(str(image))
            if not label:
                raise ValueError(f"{manifest}: sample {image.name} has no 'label': a segmenter needs image/label pairs")
            if not (folder / label).is_file():
                raise FileNotFoundError(f"{manifest}: label {folder / label} of sample {image.name} is missing")
            pairs.append(Pair(image, folder / label, f"synthetic:{folder.name}/{nifti_stem(image)}", "synthetic"))
        return pairs
    _, cases, _ = find_cases(folder)
    unlabelled = [c["image"] for c in cases if "label" not in c]
    if unlabelled:
        raise ValueError(f"{folder}: {len(unlabelled)} synthetic image(s) without a label, e.g. {unlabelled[0]}")
    return [
        Pair(Path(c["image"]), Path(c["label"]), f"synthetic:{folder.name}/{nifti_stem(c['image'])}", "synthetic")
        for c in cases
    ]


def generator_training_cases(trained_on: str | Sequence[str]) -> set[str]:
    """Case ids a generator trained on (see :class:`SyntheticSource`).

    Raises:
        FileNotFoundError: when a named file does not exist.
    """
    if isinstance(trained_on, str | os.PathLike):
        path = Path(trained_on)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: 'trained_on' file not found")
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("format") == SPLIT_FORMAT:
            return PatientSplit.from_dict(data, source=str(path)).role_cases("development")
        if isinstance(data, list):
            return {str(c) for c in data}
        _, cases, _ = find_cases(path)
        return {nifti_stem(c["image"]) for c in cases}
    return {str(c) for c in trained_on}


def _header_shape(path: Path) -> tuple[int, ...]:
    return tuple(int(s) for s in nib.load(str(path)).shape[:3])


def _voxel_digest(path: Path) -> str:
    """SHA-1 of an image's shape and voxel values (a copy of a scan under another name has the same digest)."""
    array = np.ascontiguousarray(np.asarray(nib.load(str(path)).dataobj))
    return hashlib.sha1(repr((array.shape, str(array.dtype))).encode() + array.tobytes()).hexdigest()


def _label_values(path: Path) -> set[int]:
    return {int(v) for v in np.unique(np.asarray(nib.load(str(path)).dataobj))}


@dataclass
class StudyInputs:
    """Checked inputs of a study.

    Args:
        real: the real pairs.
        synthetic: the synthetic pool (all sources, in order).
        split: the patient split of the real patients.
        labels: the real label values (background included).
        split_path: where the split is (to be) recorded.
    """

    real: list[Pair]
    synthetic: list[Pair]
    split: PatientSplit
    labels: list[int]
    split_path: Path
    sources: list[dict[str, Any]] = field(default_factory=list)

    def save_split(self) -> Path:
        """Record the split (kept when it is already recorded)."""
        if not self.split_path.is_file():
            self.split.save(self.split_path)
        return self.split_path


def _check_pairs(pairs: Iterable[Pair], real_labels: set[int] | None, problems: list[str]) -> set[int]:
    """Shape checks for every pair; emptiness and label values for synthetic ones. Returns the label values seen."""
    seen: set[int] = set()
    for p in pairs:
        if not p.label.is_file():
            problems.append(f"{p.label}: label of {p.image} not found")
            continue
        shape_i, shape_l = _header_shape(p.image), _header_shape(p.label)
        if shape_i != shape_l:
            problems.append(f"{p.label}: label shape {shape_l} does not match its image {p.image} {shape_i}")
            continue
        if real_labels is None:
            continue
        values = _label_values(p.label)
        seen |= values
        if not values - {0}:
            problems.append(f"{p.label}: empty label (no foreground voxel) of synthetic image {p.image}")
        elif values - real_labels:
            problems.append(
                f"{p.label}: label value(s) {sorted(values - real_labels)} are not labels of the real data "
                f"{sorted(real_labels)}"
            )
    return seen


def prepare_inputs(
    real_dataset: str | os.PathLike,
    synthetic_sources: Sequence[str | Mapping[str, Any]],
    split_path: str | os.PathLike,
    n_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    require_synthetic: bool = True,
) -> StudyInputs:
    """Read and check the real and synthetic pairs and the patient split; writes nothing.

    Args:
        real_dataset: MSD-layout real dataset (``dataset.json`` or ``imagesTr/`` + ``labelsTr/``); one case per patient.
        synthetic_sources: :class:`SyntheticSource` specs.
        split_path: the study's patient split (reused when recorded, else made here and recorded by
            :meth:`StudyInputs.save_split`).
        n_folds: cross-validation folds over the non-test patients.
        test_fraction: fraction of real patients held out for testing.
        seed: split seed.
        require_synthetic: whether an empty synthetic pool is an error (arms that use synthetic data).

    Returns:
        The checked :class:`StudyInputs`.

    Raises:
        DataValidationError: listing every problem found (see the module docstring), each naming its file.
    """
    _, cases, _ = find_cases(real_dataset)
    problems: list[str] = []
    real = []
    for c in cases:
        if "label" not in c:
            problems.append(f"{c['image']}: real image without a label")
        else:
            real.append(Pair(Path(c["image"]), Path(c["label"]), nifti_stem(c["image"]), "real"))
    ids = [p.case for p in real]
    split_file = Path(split_path)
    if split_file.is_file():
        split = PatientSplit.load(split_file)
        if set(split.cases) != set(ids):
            raise DataValidationError(
                [f"{split_file}: the recorded patient split does not hold the real cases of {real_dataset}"]
            )
    else:
        split = make_patient_split(ids, n_folds, test_fraction, seed)
    real_labels: set[int] = set()
    for p in real:
        if p.label.is_file():
            real_labels |= _label_values(p.label)
    _check_pairs(real, None, problems)
    test = set(split.test)
    test_digests = {_voxel_digest(p.image) for p in real if p.case in test}
    synthetic: list[Pair] = []
    described = []
    for spec in synthetic_sources:
        source = SyntheticSource.from_spec(spec)
        try:
            pairs = read_synthetic_pairs(source.path)
        except (FileNotFoundError, ValueError) as e:
            problems.append(str(e))
            continue
        if source.trained_on is None:
            problems.append(
                f"{source.path}: synthetic source without 'trained_on' (the patients its generator learnt from: a "
                "split JSON, a datalist or a list of case ids, [] for none); the test patients cannot be checked"
            )
        else:
            leaked = sorted(generator_training_cases(source.trained_on) & test)
            if leaked:
                problems.append(
                    f"{source.path}: its generator trained on held-out test patient(s) {leaked[:10]} "
                    f"(trained_on {source.trained_on}); retrain it on the development patients of {split_file}"
                )
        copies = sorted(str(p.image) for p in pairs if _voxel_digest(p.image) in test_digests)
        if copies:
            problems.append(f"{source.path}: synthetic image(s) identical to a held-out test scan, e.g. {copies[:3]}")
        n_before = len(problems)
        seen = _check_pairs(pairs, real_labels, problems)
        if pairs and len(problems) == n_before and seen != real_labels:
            problems.append(
                f"{source.path}: the synthetic label set {sorted(seen)} differs from the real one {sorted(real_labels)}"
            )
        synthetic += pairs
        described.append({"path": str(source.path), "trained_on": source.trained_on, "n_pairs": len(pairs)})
    if require_synthetic and not synthetic and not problems:
        problems.append("no synthetic pairs: the real+synthetic and synthetic arms need at least one synthetic source")
    if problems:
        raise DataValidationError(problems)
    return StudyInputs(real, synthetic, split, sorted(real_labels), split_file, described)


def arm_datalist(inputs: StudyInputs, arm: StudyArm, seed: int = 0) -> dict[str, Any]:
    """Auto3DSeg datalist of one arm.

    ``training``: the arm's records over the development (non-test) patients: real records keep their patient's
    fold; synthetic records are dealt round-robin over the folds (spread evenly, as in the HA-GAN thesis's mixed
    5-fold runs). ``testing``: the held-out real test patients (with labels, for scoring).

    Raises:
        ValueError: when a test patient reaches the training records, or the pool is too small for the arm.
    """
    split = inputs.split
    dev = [p.record(split.fold_of(p.case)) for p in inputs.real if p.case not in split.test]
    pool = [p.record() for p in inputs.synthetic]
    records = arm.training_records(dev, pool, seed=seed)
    n_syn = 0
    for rec in records:
        if rec["source"] == "synthetic":
            rec["fold"] = n_syn % split.n_folds
            n_syn += 1
    assert_no_test_leak([r for r in records if r["source"] == "real"], split, stage=f"arm {arm.name}")
    testing = [p.record() for p in inputs.real if p.case in split.test]
    return {"training": records, "testing": testing}


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a datalist JSON atomically."""
    return write_json_atomic(dict(datalist), path)
