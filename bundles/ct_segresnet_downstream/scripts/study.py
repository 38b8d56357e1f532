"""One run of the downstream study: an arm's datalist, MONAI Auto3DSeg's ``AutoRunner`` (data analysis, algorithm
generation, training, fold ensemble on the test patients) and the scores of its test predictions.

Algorithms (nothing is downloaded at run time):

- default: this bundle's ``ctsegresnet`` template (``scripts/algorithm_templates``), passed to ``AutoRunner`` as an
  ``algos`` dictionary, so Auto3DSeg never looks for its release archive;
- ``templates_path_or_url`` set: the official ``segresnet`` template from that local folder (or URL, when online).
  AutoRunner downloads the official archive only when ``algos`` is a name *and* no ``templates_path_or_url`` is given;
  :func:`auto3dseg_algos` refuses that combination.

Multi-GPU: Auto3DSeg's own mechanism. ``cuda_visible_devices`` (e.g. ``"0,1,2,3"``) goes to
``AutoRunner.set_device_info``; with more than one device each fold is trained by ``torchrun --nproc_per_node=<n>``
(the template's ``train.py`` joins the NCCL group) and the ensemble is spread over the devices the same way.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctsynth.data.io import write_json_atomic
from ctsynth.experiments import StudyArm
from scripts.datalists import StudyInputs, arm_datalist, prepare_inputs, write_datalist
from scripts.evaluation import score_predictions

__all__ = ["ALGO_NAME", "Auto3DSegRun", "TEMPLATES_DIR", "auto3dseg_algos", "find_arm", "training_params"]

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "algorithm_templates"
#: Auto3DSeg reads the fold from "<name>_<fold>", so the name has no underscore.
ALGO_NAME = "ctsegresnet"
PRED_POSTFIX = "seg"


def auto3dseg_algos(templates_path_or_url: str | None = None, algo: str = "segresnet") -> tuple[Any, str | None]:
    """``(algos, templates_path_or_url)`` for ``AutoRunner``.

    Args:
        templates_path_or_url: a local folder holding Auto3DSeg algorithm templates (e.g. a checkout of
            ``research-contributions/auto3dseg/algorithm_templates``) or a URL of their archive; ``None``: this
            bundle's ``ctsegresnet`` template.
        algo: the official algorithm to use from ``templates_path_or_url``.

    Raises:
        FileNotFoundError: when a local templates folder lacks ``<algo>/scripts/algo.py``.
    """
    if not templates_path_or_url:
        algos = {
            ALGO_NAME: {"_target_": f"{ALGO_NAME}.scripts.algo.CtsegresnetAlgo", "template_path": str(TEMPLATES_DIR)}
        }
        return algos, None
    if (
        "://" not in templates_path_or_url
        and not (Path(templates_path_or_url) / algo / "scripts" / "algo.py").is_file()
    ):
        raise FileNotFoundError(f"{templates_path_or_url}: no Auto3DSeg template {algo}/scripts/algo.py in this folder")
    return algo, templates_path_or_url


def training_params(**params: Any) -> dict[str, Any]:
    """Auto3DSeg training overrides without the unset (``None``) ones."""
    return {k: v for k, v in params.items() if v is not None}


def find_arm(arms: Sequence[Mapping[str, Any] | StudyArm], name: str) -> StudyArm:
    """The arm called ``name`` among the configured arms.

    Raises:
        ValueError: when no arm has that name (the message lists the names).
    """
    parsed = [a if isinstance(a, StudyArm) else StudyArm.from_dict(a) for a in arms]
    for arm in parsed:
        if arm.name == name:
            return arm
    raise ValueError(f"unknown arm {name!r}; configured arms: {[a.name for a in parsed]}")


class Auto3DSegRun:
    """One (arm, number of folds) run.

    Args:
        real_dataset: MSD-layout real dataset (one case per patient).
        synthetic_sources: synthetic sources (see :class:`scripts.datalists.SyntheticSource`).
        split_file: the study's patient split (made and recorded on first use).
        arm: the arm.
        num_fold: folds trained (1: the fold-0 model; k: all folds, ensembled).
        output_dir: this run's folder.
        n_folds / test_fraction / seed: split settings (used when the split is not recorded yet).
        class_names: names of the foreground classes, in label order.
        max_epochs: training epochs per fold (``None``: the template's rule, clip(ceil(80000 / n), 300, 1250)).
        train_params: further Auto3DSeg training overrides (``roi_size``, ``num_images_per_batch``, ...).
        analyze_params: DataAnalyzer settings.
        templates_path_or_url: official templates (see :func:`auto3dseg_algos`).
        cuda_visible_devices: GPUs for Auto3DSeg (``None``: all visible; ``""`` on a CPU machine).
        ensemble: predict the test patients with the fold ensemble (needed for the scores).
    """

    def __init__(
        self,
        real_dataset: str,
        synthetic_sources: Sequence[Any],
        split_file: str,
        arm: StudyArm,
        num_fold: int,
        output_dir: str,
        n_folds: int = 5,
        test_fraction: float = 0.2,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        max_epochs: int | None = None,
        train_params: Mapping[str, Any] | None = None,
        analyze_params: Mapping[str, Any] | None = None,
        templates_path_or_url: str | None = None,
        cuda_visible_devices: str | None = None,
        ensemble: bool = True,
    ) -> None:
        self.real_dataset, self.synthetic_sources, self.split_file = real_dataset, list(synthetic_sources), split_file
        self.arm, self.num_fold, self.output_dir = arm, int(num_fold), Path(output_dir)
        self.n_folds, self.test_fraction, self.seed = int(n_folds), float(test_fraction), int(seed)
        self.class_names = list(class_names) if class_names else None
        self.max_epochs = None if max_epochs is None else int(max_epochs)
        self.train_params = dict(train_params or {})
        if self.max_epochs is not None:
            self.train_params["num_epochs"] = self.max_epochs
        self.analyze_params = dict(analyze_params or {"do_ccp": False, "device": "cuda", "worker": 2})
        self.templates_path_or_url = templates_path_or_url
        self.cuda_visible_devices = cuda_visible_devices
        self.ensemble = ensemble
        self._inputs: StudyInputs | None = None

    @property
    def inputs(self) -> StudyInputs:
        """The checked inputs (read and checked once; raises before anything is written)."""
        if self._inputs is None:
            uses_synthetic = self.arm.kind.value != "real"
            sources = self.synthetic_sources if uses_synthetic else []
            self._inputs = prepare_inputs(
                self.real_dataset,
                sources,
                self.split_file,
                self.n_folds,
                self.test_fraction,
                self.seed,
                require_synthetic=uses_synthetic,
            )
        return self._inputs

    def _dataroot(self) -> Path:
        path = Path(self.real_dataset).resolve()
        return path.parent if path.is_file() else path

    def datalist(self) -> dict[str, Any]:
        """The arm's Auto3DSeg datalist (checked inputs; nothing written)."""
        return arm_datalist(self.inputs, self.arm, self.seed)

    def check(self) -> dict[str, Any]:
        """All checks that can fail before training; returns the datalist.

        Raises:
            DataValidationError / ValueError: bad inputs, a class-name count that differs from the labels, or more
                folds than the split has.
        """
        datalist = self.datalist()
        labels = self.inputs.labels
        if self.class_names is not None and len(self.class_names) != len(labels) - 1:
            raise ValueError(
                f"class_names {self.class_names} name {len(self.class_names)} class(es); the real labels of "
                f"{self.real_dataset} have {len(labels) - 1} foreground value(s) {labels[1:]}"
            )
        if not 1 <= self.num_fold <= self.inputs.split.n_folds:
            raise ValueError(
                f"num_fold must be in 1..{self.inputs.split.n_folds} (folds of the split), got {self.num_fold}"
            )
        auto3dseg_algos(self.templates_path_or_url)
        return datalist

    def run(self) -> dict[str, Any]:
        """Check, record the split and datalist, run AutoRunner, score the test predictions.

        Returns:
            The test metrics (also in ``<output_dir>/test/metrics.json``).
        """
        from monai.apps.auto3dseg import AutoRunner

        datalist = self.check()
        self.inputs.save_split()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        datalist_file = write_datalist(datalist, self.output_dir / "datalist.json")
        n_syn = sum(r["source"] == "synthetic" for r in datalist["training"])
        write_json_atomic(
            {
                "arm": self.arm.name,
                "kind": self.arm.kind.value,
                "num_fold": self.num_fold,
                "split_file": str(self.inputs.split_path),
                "real_dataset": str(self.real_dataset),
                "synthetic_sources": self.inputs.sources,
                "n_training_real": len(datalist["training"]) - n_syn,
                "n_training_synthetic": n_syn,
                "n_test": len(datalist["testing"]),
                "labels": self.inputs.labels,
            },
            self.output_dir / "run_inputs.json",
        )
        algos, templates = auto3dseg_algos(self.templates_path_or_url)
        names = self.class_names or [f"class{v}" for v in self.inputs.labels[1:]]
        source = {
            "modality": "CT",
            "dataroot": str(self._dataroot()),
            "datalist": str(datalist_file),
            "class_names": names,
        }
        runner = AutoRunner(
            work_dir=str(self.output_dir / "auto3dseg"),
            input=source,
            algos=algos,
            templates_path_or_url=templates,
            ensemble=self.ensemble,
        )
        runner.set_num_fold(self.num_fold)
        runner.set_training_params(self.train_params)
        runner.set_analyze_params(self.analyze_params)
        runner.set_device_info(
            cuda_visible_devices=self.cuda_visible_devices, cmd_prefix=os.environ.get("CMD_PREFIX") or sys.executable
        )
        pred_dir = self.output_dir / "predictions"
        runner.set_image_save_transform(
            output_dir=str(pred_dir), output_postfix=PRED_POSTFIX, separate_folder=False, data_root_dir=""
        )
        runner.run()
        classes = self.inputs.labels[1:]
        return score_predictions(datalist["testing"], pred_dir, classes, self.output_dir / "test", PRED_POSTFIX)
