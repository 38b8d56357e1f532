"""Patient-level splits: held-out test patients and cross-validation folds by patient, made once and recorded.

Every stage of a study that learns from the data (generator training, cube cutting, blending inputs, downstream
models) filters its records through the same :class:`PatientSplit`, so no test patient's voxels reach a model's
training input. The split works on case ids (one id per patient), never on files or cubes: all the cubes of one scan
land on the same side.

Algorithm (deterministic for a given seed and *set* of case ids; the input order does not matter):

1. the case ids are sorted and shuffled with ``numpy.random.default_rng(seed).permutation``;
2. unstratified: the first ``round(test_fraction * n)`` shuffled cases are the test patients
   (:func:`monai.data.partition_dataset` with ratios); stratified: the same per class
   (:func:`monai.data.partition_dataset_classes`), so each class keeps its proportion in the test set;
3. the remaining cases are dealt round-robin to folds 0, 1, ..., k-1, 0, ... (:func:`monai.data.partition_dataset`
   with ``num_partitions=k``); stratified, they are dealt class after class, so fold sizes differ by at most one
   and so do each class's counts per fold.

MONAI's :class:`monai.apps.CrossValidation` partitions one dataset object per fold; here the folds must be shared by
several datasets (GAN cubes, classifier cubes, datalists) of the same patients, so the split is a recorded list of
case ids instead.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from monai.data import partition_dataset, partition_dataset_classes

from ctsynth.data.io import nifti_stem, read_json, write_json_atomic

__all__ = [
    "SPLIT_FORMAT",
    "SPLIT_JSON",
    "PatientSplit",
    "SplitRole",
    "assert_no_test_leak",
    "case_id_of",
    "filter_records",
    "load_or_make_patient_split",
    "make_patient_split",
]

logger = logging.getLogger(__name__)

SPLIT_FORMAT = "ctsynth.patient_split/1"
SPLIT_JSON = "split.json"
#: ``train`` / ``val``: the training and validation patients of one fold; ``test``: the held-out patients;
#: ``development``: every non-test patient (what a generator trains on).
SplitRole = Literal["train", "val", "test", "development"]
ROLES = ("train", "val", "test", "development")


@dataclass(frozen=True)
class PatientSplit:
    """A recorded patient-level split.

    Args:
        test: case ids of the held-out test patients.
        folds: case ids of each cross-validation fold (the non-test patients, each in exactly one fold).
        seed: seed it was made with.
        test_fraction: requested test fraction.
        strata: class of each case when the split was stratified, else empty.
    """

    test: tuple[str, ...]
    folds: tuple[tuple[str, ...], ...]
    seed: int = 0
    test_fraction: float = 0.2
    strata: Mapping[str, Hashable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen = Counter([*self.test, *(c for fold in self.folds for c in fold)])
        twice = sorted(c for c, n in seen.items() if n > 1)
        if twice:
            raise ValueError(f"patient split: case id(s) in more than one part: {twice[:10]}")
        if len(self.folds) < 1:
            raise ValueError("patient split: needs at least one fold")

    @property
    def n_folds(self) -> int:
        """Number of cross-validation folds."""
        return len(self.folds)

    @property
    def cases(self) -> tuple[str, ...]:
        """All case ids (test first, then the folds in order)."""
        return (*self.test, *(c for fold in self.folds for c in fold))

    def role_cases(self, role: SplitRole, fold: int | None = None) -> set[str]:
        """Case ids of a role.

        Args:
            role: ``"train"`` / ``"val"`` (of ``fold``), ``"test"`` or ``"development"`` (all non-test patients).
            fold: the validation fold; required for ``"train"`` and ``"val"``.

        Raises:
            ValueError: for an unknown role, or a missing / out-of-range fold.
        """
        if role not in ROLES:
            raise ValueError(f"unknown split role {role!r}; use one of {list(ROLES)}")
        if role == "test":
            return set(self.test)
        if role == "development":
            return {c for f in self.folds for c in f}
        if fold is None or not 0 <= int(fold) < self.n_folds:
            raise ValueError(f"role {role!r} needs a fold in 0..{self.n_folds - 1}, got {fold}")
        if role == "val":
            return set(self.folds[int(fold)])
        return {c for k, f in enumerate(self.folds) if k != int(fold) for c in f}

    def fold_of(self, case_id: str) -> int | None:
        """The fold of a non-test case, ``None`` for a test case.

        Raises:
            KeyError: when the case is not in the split.
        """
        if case_id in self.test:
            return None
        for k, fold in enumerate(self.folds):
            if case_id in fold:
                return k
        raise KeyError(f"case {case_id!r} is not in the patient split")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (see :meth:`save`)."""
        return {
            "format": SPLIT_FORMAT,
            "seed": int(self.seed),
            "test_fraction": float(self.test_fraction),
            "n_folds": self.n_folds,
            "stratified": bool(self.strata),
            "test": list(self.test),
            "folds": [list(f) for f in self.folds],
            "strata": {str(k): v for k, v in self.strata.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "patient split") -> PatientSplit:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: when a key is missing or of the wrong type (the message names ``source``).
        """
        if data.get("format") != SPLIT_FORMAT:
            raise ValueError(
                f"{source}: not a patient split (expected format {SPLIT_FORMAT!r}, got {data.get('format')!r})"
            )
        try:
            test = tuple(str(c) for c in data["test"])
            folds = tuple(tuple(str(c) for c in f) for f in data["folds"])
            split = cls(test, folds, int(data["seed"]), float(data["test_fraction"]), dict(data.get("strata") or {}))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: malformed patient split ({type(e).__name__}: {e})") from e
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e
        return split

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON (atomically); a folder gets ``split.json`` inside it."""
        path = Path(path)
        if path.is_dir():
            path = path / SPLIT_JSON
        return write_json_atomic(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PatientSplit:
        """Read a split written by :meth:`save` (a folder: its ``split.json``).

        Raises:
            FileNotFoundError: when the file does not exist; ValueError: when it is not a valid split.
        """
        path = Path(path)
        if path.is_dir():
            path = path / SPLIT_JSON
        if not path.is_file():
            raise FileNotFoundError(f"{path}: patient split not found")
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a patient split (expected a JSON object)")
        return cls.from_dict(data, source=str(path))


def make_patient_split(
    cases: Iterable[str],
    n_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify_by: Mapping[str, Hashable] | None = None,
) -> PatientSplit:
    """Split patients into held-out test patients and cross-validation folds (algorithm in the module docstring).

    Args:
        cases: one id per patient (unique).
        n_folds: number of folds over the non-test patients (at least 2).
        test_fraction: fraction of the patients held out for testing, in [0, 1).
        seed: seed of the shuffle.
        stratify_by: class of every case (e.g. ``{"case_001": "tumour", ...}``); the test set and the folds keep the
            class proportions. A class with fewer non-test patients than folds is absent from some folds (logged).

    Returns:
        The :class:`PatientSplit`.

    Raises:
        ValueError: for duplicate ids, bad arguments, fewer non-test patients than folds, or cases without a class.
    """
    ids = [str(c) for c in cases]
    dupes = sorted(c for c, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"case ids must be unique (one per patient); repeated: {dupes[:10]}")
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(ids)
    order = [sorted(ids)[i] for i in np.random.default_rng(seed).permutation(n)]
    strata: dict[str, Hashable] = {}
    if stratify_by is None:
        n_test = int(np.floor(test_fraction * n + 0.5))
        test, rest = partition_dataset(order, ratios=[n_test, n - n_test]) if n else ([], [])
    else:
        missing = [c for c in ids if c not in stratify_by]
        if missing:
            raise ValueError(f"stratify_by has no class for {len(missing)} case(s), e.g. {missing[:5]}")
        strata = {c: stratify_by[c] for c in ids}
        classes = [str(strata[c]) for c in order]
        test, rest = partition_dataset_classes(order, classes, ratios=[test_fraction, 1.0 - test_fraction])
    if len(rest) < n_folds:
        raise ValueError(
            f"fewer cases than folds: {n} case(s), {len(test)} held out for testing, leaves {len(rest)} "
            f"for {n_folds} folds"
        )
    folds = partition_dataset(rest, num_partitions=int(n_folds))
    if strata:
        per_class = Counter(str(strata[c]) for c in rest)
        for cls, count in sorted(per_class.items()):
            if count < n_folds:
                logger.warning("class %s has %d non-test case(s) for %d folds: some folds lack it", cls, count, n_folds)
    return PatientSplit(tuple(test), tuple(tuple(f) for f in folds), int(seed), float(test_fraction), strata)


def load_or_make_patient_split(
    path: str | os.PathLike,
    cases: Iterable[str],
    n_folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify_by: Mapping[str, Hashable] | None = None,
) -> PatientSplit:
    """The recorded split at ``path`` if there is one, else a new one (:func:`make_patient_split`) saved there.

    A study makes its split once, in its first stage, and every later stage reads it back. A recorded split must
    cover exactly ``cases``; its settings win over the arguments (a differing setting is logged, not applied).

    Raises:
        ValueError: when the recorded split does not hold the same case ids (the message names the file and the
            differing ids).
    """
    ids = sorted({str(c) for c in cases})
    path = Path(path)
    if path.is_dir():
        path = path / SPLIT_JSON
    if path.is_file():
        split = PatientSplit.load(path)
        recorded = set(split.cases)
        if recorded != set(ids):
            extra, absent = sorted(recorded - set(ids)), sorted(set(ids) - recorded)
            raise ValueError(
                f"{path}: the recorded patient split does not match the cases given (not in the split: {absent[:5]}; "
                f"in the split but not given: {extra[:5]}); remove it to make a new split, which invalidates every "
                "model trained with the old one"
            )
        asked = {"n_folds": int(n_folds), "test_fraction": float(test_fraction), "seed": int(seed)}
        have = {"n_folds": split.n_folds, "test_fraction": split.test_fraction, "seed": split.seed}
        if asked != have:
            logger.warning("%s: using the recorded split %s, not the requested %s", path, have, asked)
        return split
    split = make_patient_split(ids, n_folds, test_fraction, seed, stratify_by)
    split.save(path)
    logger.info(
        "%s: %d test patients, %d folds of %s", path, len(split.test), split.n_folds, [len(f) for f in split.folds]
    )
    return split


def case_id_of(record: Mapping[str, Any] | str | os.PathLike, case_key: str = "case", image_key: str = "image") -> str:
    """Case id of a record: its ``case_key`` entry, else the file name of its image without ``.nii.gz``.

    Args:
        record: a dict (cube, pair or datalist entry) or a file path.
        case_key: key holding the case id.
        image_key: key of the image path used when ``case_key`` is absent.

    Raises:
        ValueError: when the record has neither key.
    """
    if isinstance(record, str | os.PathLike):
        return nifti_stem(record)
    if record.get(case_key) is not None:
        return str(record[case_key])
    if record.get(image_key) is not None:
        return nifti_stem(str(record[image_key]))
    raise ValueError(f"record has no {case_key!r} or {image_key!r} to tell its patient: {dict(record)}")


def filter_records(
    records: Iterable[Any],
    split: PatientSplit,
    role: SplitRole,
    fold: int | None = None,
    case_of: Callable[[Any], str] = case_id_of,
) -> list[Any]:
    """The records whose patient belongs to ``role`` (of ``fold``), in their original order.

    Args:
        records: cubes, pairs, datalist entries, file paths.
        split: the study's split.
        role: ``"train"``, ``"val"``, ``"test"`` or ``"development"``.
        fold: the validation fold (``"train"`` / ``"val"``).
        case_of: case id of a record (default :func:`case_id_of`).

    Raises:
        ValueError: for a bad role/fold, or a record whose patient is not in the split (a patient the split never saw
            cannot be assigned safely).
    """
    keep = split.role_cases(role, fold)
    known = set(split.cases)
    out, unknown = [], []
    for r in records:
        case = case_of(r)
        if case not in known:
            unknown.append(case)
        elif case in keep:
            out.append(r)
    if unknown:
        raise ValueError(f"{len(unknown)} record(s) of patients not in the split, e.g. {sorted(set(unknown))[:5]}")
    return out


def assert_no_test_leak(
    records: Iterable[Any], split: PatientSplit, stage: str = "training", case_of: Callable[[Any], str] = case_id_of
) -> None:
    """Raise when a record of a held-out test patient is among ``records`` (a stage's training input).

    Raises:
        ValueError: naming the stage and the leaked case ids.
    """
    test = set(split.test)
    leaked = sorted({case_of(r) for r in records} & test)
    if leaked:
        raise ValueError(f"{stage}: test patient(s) in the training input: {leaked}")
