"""The nodule-classifier study of the paper (Sec. 3, Fig. 3b) on the shared study machinery (``ctsynth.experiments``).

One patient-level split, made by ``prepare_data.json`` and recorded in its output folder (``split.json``), serves
every stage: the GANs (``train.json``, ``train_nodule_gan.json``) train on the development patients only
(:func:`development_records`), and the classifier trains on fold ``k``'s training patients, validates on its
validation patients and is tested on the held-out test patients (:func:`classifier_splits`); every stage asserts
that no test patient is in its training input (``ctsynth.experiments.assert_no_test_leak``).

:class:`NoduleClassifierStudy` runs the experiments ``real`` (real training patients only), ``synthetic`` (CT-SGAN
volumes with injected nodules only) and ``finetune`` (synthetic pre-training, then the real training patients), each
over seeds, and the synthetic experiments for every nodule radius: one synthetic set per radius is written by
``nodules.json`` (inject), then one :class:`ctsynth.experiments.StudyRunner` per radius runs ``train_classifier.json``
per (experiment, seed) with every override forwarded. The ``real`` experiment does not depend on the radius and runs
once. Layout under the study folder::

    real/real/seed_<s>/test_metrics.json
    radius_<r>/synthetic/datalist.json              (the injected set)
    radius_<r>/{synthetic,finetune}/seed_<s>/test_metrics.json
    report/accuracy.{md,json,png}                   (scripts.classifier.summarise_accuracy)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctsynth.experiments import (
    PatientSplit,
    StudyRunner,
    assert_no_test_leak,
    bundle_cli_overrides,
    filter_records,
)

from .classifier import EXPERIMENTS

__all__ = ["classifier_splits", "development_records", "NoduleClassifierStudy"]

logger = logging.getLogger(__name__)


def development_records(
    records: Sequence[Mapping[str, Any]], split_file: str | os.PathLike | None, stage: str = "training"
) -> list[Mapping[str, Any]]:
    """The records of the development (non-test) patients of the recorded split; all records when there is no split.

    Args:
        records: datalist entries (case id: their ``case``, else their image's file name without ``.nii.gz``).
        split_file: the study's ``split.json`` (``None``: no study, every record is kept).
        stage: name of the training stage in error messages.

    Raises:
        FileNotFoundError / ValueError: for a missing or invalid split file, or a record of a patient not in it.
    """
    if split_file is None:
        return list(records)
    split = PatientSplit.load(split_file)
    kept = filter_records(records, split, "development")
    assert_no_test_leak(kept, split, stage=stage)
    logger.info("%s: %d of %d records (development patients of %s)", stage, len(kept), len(records), split_file)
    return kept


def classifier_splits(
    entries: Sequence[Mapping[str, Any]], split: PatientSplit, fold: int = 0
) -> dict[str, list[Mapping[str, Any]]]:
    """The real classifier volumes by role: ``train`` / ``val`` (the patients of ``fold``) and ``test``.

    Raises:
        ValueError: for a volume of a patient that is not in the split, or when a role is empty but ``val``.
    """
    splits = {
        "train": filter_records(entries, split, "train", fold),
        "val": filter_records(entries, split, "val", fold),
        "test": filter_records(entries, split, "test"),
    }
    empty = [k for k in ("train", "test") if not splits[k]]
    if empty:
        raise ValueError(f"no real classifier volume for the {empty} role(s) of fold {fold} of the recorded split")
    return splits


class NoduleClassifierStudy:
    """Experiments x seeds x nodule radii of the nodule classifier (module docstring).

    Args:
        classifier_config: ``train_classifier.json`` (or a list of configs merged in order).
        inject_config: ``nodules.json`` (or a list).
        study_dir: the study folder.
        nodule_radii: radii (voxels of the cube) of the injected nodules, one synthetic set each.
        seeds: classifier seeds.
        experiments: any of ``real``, ``synthetic``, ``finetune`` (``finetune`` needs ``synthetic``).
        overrides: config values forwarded to every classifier run (e.g. the real datalist, the split file, sizes).
        inject_overrides: config values of every injection run (checkpoint, source volumes, fraction, count_probs).
        forward_cli_overrides: also forward the overrides of the command line that started the study
            (:func:`bundle_cli_overrides`) to every classifier run.
        skip_completed: skip runs (and injections) whose outputs exist.

    Raises:
        ValueError: for an unknown experiment, ``finetune`` without ``synthetic``, or no radius / seed.
    """

    #: ids the study sets for every classifier run itself
    RESERVED = (
        "experiment",
        "seed",
        "study_dir",
        "output_dir",
        "synthetic_datalist",
        "nodule_radius",
        "pretrained_ckpt",
    )

    def __init__(
        self,
        classifier_config: str | Sequence[str],
        inject_config: str | Sequence[str],
        study_dir: str | os.PathLike,
        nodule_radii: Sequence[float],
        seeds: Sequence[int] = (0, 1, 2),
        experiments: Sequence[str] = ("real", "synthetic", "finetune"),
        overrides: Mapping[str, Any] | None = None,
        inject_overrides: Mapping[str, Any] | None = None,
        forward_cli_overrides: bool = True,
        skip_completed: bool = True,
    ) -> None:
        bad = [e for e in experiments if e not in EXPERIMENTS]
        if bad:
            raise ValueError(f"unknown experiment(s) {bad}; use {list(EXPERIMENTS)}")
        if "finetune" in experiments and "synthetic" not in experiments:
            raise ValueError("the 'finetune' experiment starts from the 'synthetic' runs: add 'synthetic'")
        if not seeds or (not nodule_radii and set(experiments) != {"real"}):
            raise ValueError(f"a study needs seeds and radii, got seeds={list(seeds)}, radii={list(nodule_radii)}")
        self.classifier_config, self.inject_config = classifier_config, inject_config
        self.study_dir = Path(study_dir)
        self.radii = [float(r) for r in nodule_radii]
        self.seeds = [int(s) for s in seeds]
        self.experiments = [e for e in EXPERIMENTS if e in experiments]  # synthetic before finetune
        cli = bundle_cli_overrides(exclude=self.RESERVED) if forward_cli_overrides else {}
        self.overrides = {**dict(overrides or {}), **cli}
        reserved = sorted(set(self.overrides) & set(self.RESERVED))
        if reserved:
            raise ValueError(f"overrides {reserved}: the study sets these for every run itself")
        self.inject_overrides = dict(inject_overrides or {})
        self.skip_completed = skip_completed

    def _runner(self, arms: list[str], study_dir: Path, overrides: dict[str, Any]) -> StudyRunner:
        return StudyRunner(
            self.classifier_config,
            arms=arms,
            folds=self.seeds,
            output_dir=study_dir,
            overrides=overrides,
            arm_key="experiment",
            fold_key="seed",
            output_key="study_dir",
            run_dir="{arm}/seed_{fold}",
            metrics_files={"test": "test_metrics.json"},
            in_process=True,
            skip_completed=self.skip_completed,
            workflow_type="train",
        )

    def inject(self, radius: float) -> Path:
        """Write the synthetic set of one nodule radius (``nodules.json``, mode inject); returns its datalist."""
        from monai.bundle import ConfigWorkflow

        out = self.study_dir / f"radius_{radius:g}" / "synthetic"
        datalist = out / "datalist.json"
        if self.skip_completed and datalist.is_file():
            return datalist
        workflow = ConfigWorkflow(
            config_file=self.inject_config,
            logging_file=False,
            **{**self.inject_overrides, "mode": "inject", "nodule_radius": radius, "output_dir": str(out)},
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return datalist

    def run(self) -> list[dict[str, Any]]:
        """Run every experiment, seed and radius; returns the rows of every run's test accuracy."""
        rows: list[dict[str, Any]] = []
        if "real" in self.experiments:
            runner = self._runner(["real"], self.study_dir / "real", {**self.overrides, "nodule_radius": None})
            rows += runner.run()
        synthetic = [e for e in self.experiments if e != "real"]
        for radius in self.radii if synthetic else []:
            datalist = self.inject(radius)
            overrides = {**self.overrides, "nodule_radius": radius, "synthetic_datalist": str(datalist)}
            rows += [
                {**r, "nodule_radius": radius}
                for r in self._runner(synthetic, self.study_dir / f"radius_{radius:g}", overrides).run()
            ]
        return rows
