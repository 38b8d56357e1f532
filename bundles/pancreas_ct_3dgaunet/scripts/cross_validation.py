"""Data splits, class balancing with synthetic cubes and the Config I / Config II cross-validation study.

The paper (Shi et al. 2023, section 3.4) holds out 20 % of the real cubes as a test set shared by both configurations
(35 PDAC + 51 healthy of 174 + 254), validates by 3-fold cross-validation on the rest, and for Config II adds
114 synthetic PDAC and 50 synthetic healthy cubes to the 139 / 203 real training cubes, which balances the classes
(253 / 253). :func:`synthetic_counts_for_balance` generalises that rule; :class:`ClassifierStudy` runs every
(configuration, fold) pair of ``configs/train_classifier.json`` through :class:`ctsynth.experiments.StudyRunner` and
writes the comparison table.

Unlike the paper, which split per cube after its GANs had trained on every scan, the split here is the study's
patient-level split (:mod:`ctsynth.experiments.splits`, recorded by ``configs/prepare_data.json``): all cubes of a
patient are on one side, the test patients' cubes are test cubes only, and the GANs behind Config II's synthetic
cubes never saw a test patient.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctsynth.data.io import (
    DEFAULT_EXCLUDE_PATTERN,
    SAMPLE_MANIFEST,
    is_nifti_file,
    nifti_stem,
    write_json_atomic,
)
from ctsynth.data.io import list_volumes as shared_list_volumes
from ctsynth.experiments import (
    PatientSplit,
    StudyArm,
    StudyRunner,
    assert_no_test_leak,
    bundle_cli_overrides,
    load_or_make_patient_split,
    make_patient_split,
)
from ctsynth.experiments.arms import synthetic_counts_for_balance as balance_counts
from ctsynth.report.tables import write_table
from scripts.classifier import classification_summary, json_safe, save_curve_plots
from scripts.prepare import cube_case_ids

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER_CLASSIFIER_RESULTS",
    "ClassifierStudy",
    "build_classifier_datalist",
    "cubes_without_label",
    "latest_checkpoint",
    "list_volumes",
    "load_classifier_datalist",
    "select_run_data",
    "summarize_study",
    "synthetic_counts_for_balance",
    "write_run_counts",
]

# Published classifier results (3DGAUnet, Shi et al. 2023, section 3.4 / Fig. 5).
PAPER_CLASSIFIER_RESULTS: dict[str, dict[str, float]] = {
    "I": {"roc_auc": 0.67, "pr_auc": 0.80},
    "II": {"roc_auc": 0.79, "pr_auc": 0.87},
}
EXPERIMENTS = ("I", "II")
# label maps written beside images (e.g. blended cubes and their tumour masks) are not classifier inputs
LABEL_NAME = re.compile(DEFAULT_EXCLUDE_PATTERN, flags=re.IGNORECASE)


def synthetic_counts_for_balance(
    n_real_pdac: int,
    n_real_healthy: int,
    available_pdac: int,
    available_healthy: int,
    total: int | None = None,
) -> tuple[int, int]:
    """How many synthetic PDAC and healthy cubes to add so the training classes are balanced.

    The two-class case of :func:`ctsynth.experiments.arms.synthetic_counts_for_balance`: add as many synthetic cubes
    as possible such that both classes end with the same count, within what is available and within an optional
    ``total`` budget; when balance cannot be reached, add only the minority class, all that is available (the
    closest to balance). With the paper's 139 / 203 real cubes and a budget of 164 (or
    exactly 114 / 50 available) this gives its 114 synthetic PDAC + 50 synthetic healthy (253 / 253).

    Args:
        n_real_pdac: real PDAC cubes in the training set.
        n_real_healthy: real healthy cubes in the training set.
        available_pdac: synthetic PDAC cubes available.
        available_healthy: synthetic healthy cubes available.
        total: maximum number of synthetic cubes to add (``None``: no budget).

    Returns:
        ``(n_synthetic_pdac, n_synthetic_healthy)``.
    """
    counts = balance_counts({1: n_real_pdac, 0: n_real_healthy}, {1: available_pdac, 0: available_healthy}, total)
    return counts[1], counts[0]


def list_volumes(source: str | os.PathLike | Sequence[str], pattern: str = "*") -> list[str]:
    """Sorted cube files of a folder matching ``pattern`` (``ctsynth.data.io.list_volumes``: label-map names left
    out, a sample folder read through its manifest), or the given list of files, checked to exist.

    Raises:
        FileNotFoundError: when the folder or a listed file does not exist.
    """
    if isinstance(source, str | os.PathLike):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder of cubes not found")
        has_volumes = (folder / SAMPLE_MANIFEST).is_file() or any(
            is_nifti_file(p) and not LABEL_NAME.search(nifti_stem(p)) for p in folder.iterdir()
        )
        files = shared_list_volumes(folder) if has_volumes else []
        return sorted(str(p) for p in files if fnmatch.fnmatch(p.name, pattern))
    files = [str(f) for f in source]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"cube files not found: {missing[:5]}")
    return sorted(files)


def build_classifier_datalist(
    real_pdac: str | os.PathLike | Sequence[str],
    real_healthy: str | os.PathLike | Sequence[str],
    synthetic_pdac: str | os.PathLike | Sequence[str] | None = None,
    synthetic_healthy: str | os.PathLike | Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    test_fraction: float = 0.2,
    n_folds: int = 3,
    seed: int = 0,
    synthetic_pdac_pattern: str = "*",
    synthetic_healthy_pattern: str = "*",
    split_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Datalist of classifier cubes: real cubes split by patient into folds and a held-out test set, synthetic apart.

    Items are ``{"image": path, "label": 0 healthy | 1 PDAC, "source": "real" | "synthetic"}``; real items carry their
    ``"case"`` and real training items their ``"fold"`` (the fold of their patient). Every cube of a test patient is a
    test cube, whatever its class. Synthetic cubes never enter a validation fold or the test set.

    Args:
        real_pdac: folder (or list) of real 64^3 PDAC cubes (centred on the tumour).
        real_healthy: folder (or list) of real 64^3 healthy-pancreas cubes.
        synthetic_pdac: blended synthetic PDAC cubes (``configs/blend.json`` output), optional.
        synthetic_healthy: synthetic pancreas cubes (``configs/inference.json`` output), optional.
        out: JSON path to write (paths stored relative to its folder); ``None``: not written, absolute paths.
        test_fraction: held-out fraction of the patients (stratified by the classes of their cubes).
        n_folds: cross-validation folds over the remaining patients (3).
        seed: split seed.
        synthetic_pdac_pattern: glob selecting the synthetic PDAC images in their folder (e.g. ``"*_image.nii.gz"``
            when masks sit beside them).
        synthetic_healthy_pattern: glob selecting the synthetic healthy images.
        split_file: the study's recorded patient split (``<cubes>/split.json`` of ``configs/prepare_data.json``),
            used when it exists and made there (over the cubes' patients) when it does not; ``None``: a split made
            for this call only, not recorded.

    Returns:
        The datalist dict (``training``, ``testing``, ``synthetic`` and the split settings).

    Raises:
        FileNotFoundError: on a missing folder; ValueError: when a real class has no cube or fewer training cubes than
        folds, a cube's patient is not in the recorded split, or the recorded split has another number of folds.
    """
    pdac_files, healthy_files = list_volumes(real_pdac), list_volumes(real_healthy)
    real = [(f, 1) for f in pdac_files] + [(f, 0) for f in healthy_files]
    if not any(y == 1 for _, y in real) or not any(y == 0 for _, y in real):
        raise ValueError(f"need real cubes of both classes, found {len(real)} in {real_pdac} and {real_healthy}.")
    cases = cube_case_ids([f for f, _ in real])
    classes: dict[str, set[int]] = {}
    for case, (_, y) in zip(cases, real, strict=True):
        classes.setdefault(case, set()).add(y)
    strata = {c: "+".join(str(y) for y in sorted(ys)) for c, ys in classes.items()}
    if split_file is not None and Path(split_file).is_file():
        split = PatientSplit.load(split_file)
    elif split_file is not None:
        split = load_or_make_patient_split(split_file, sorted(classes), n_folds, test_fraction, seed, strata)
    else:
        split = make_patient_split(sorted(classes), n_folds, test_fraction, seed, strata)
    if split.n_folds != int(n_folds):
        raise ValueError(f"{split_file}: the recorded patient split has {split.n_folds} folds, not n_folds={n_folds}.")
    absent = sorted(set(cases) - set(split.cases))
    if absent:
        raise ValueError(f"{split_file}: cube patient(s) not in the recorded split: {absent[:5]}")
    folds = [split.fold_of(c) for c in cases]
    for cls, name, source in ((1, "PDAC", real_pdac), (0, "healthy", real_healthy)):
        n_train = sum(y == cls and f is not None for (_, y), f in zip(real, folds, strict=True))
        if n_train < n_folds:
            n_all = sum(y == cls for _, y in real)
            raise ValueError(
                f"{n_all} real {name} cube(s) from {source}: {n_train} left after the {test_fraction:g} test split, "
                f"fewer than n_folds={n_folds}; add cases (or lower n_folds / test_fraction)."
            )
    synthetic: list[tuple[str, int]] = []
    if synthetic_pdac is not None:
        synthetic += [(f, 1) for f in list_volumes(synthetic_pdac, synthetic_pdac_pattern)]
    if synthetic_healthy is not None:
        synthetic += [(f, 0) for f in list_volumes(synthetic_healthy, synthetic_healthy_pattern)]
    base = None if out is None else Path(out).resolve().parent

    def _path(f: str | os.PathLike) -> str:
        return str(Path(f).resolve()) if base is None else os.path.relpath(Path(f).resolve(), base)

    datalist: dict[str, Any] = {
        "description": "3DGAUnet PDAC classifier cubes: label 1 = PDAC, 0 = healthy pancreas",
        "seed": split.seed,
        "n_folds": split.n_folds,
        "test_fraction": split.test_fraction,
    }
    if split_file is not None:
        datalist["split_file"] = _path(split_file)
    real_items = [
        {"image": _path(f), "label": y, "source": "real", "case": c} for (f, y), c in zip(real, cases, strict=True)
    ]
    datalist["training"] = [{**it, "fold": f} for it, f in zip(real_items, folds, strict=True) if f is not None]
    datalist["testing"] = [it for it, f in zip(real_items, folds, strict=True) if f is None]
    datalist["synthetic"] = [{"image": _path(f), "label": y, "source": "synthetic"} for f, y in synthetic]
    if out is not None:
        write_json_atomic(datalist, out)
    return datalist


def load_classifier_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read a classifier datalist and make its image paths absolute (relative to the JSON's folder).

    Raises:
        FileNotFoundError: when the datalist is missing; ValueError: when it lacks ``training``/``testing``
        or an item lacks ``image``/``label``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: classifier datalist not found; build it with the make_datalist run id of "
            "configs/train_classifier.json (scripts.cross_validation.build_classifier_datalist)."
        )
    data = json.loads(path.read_text())
    for key in ("training", "testing"):
        if key not in data:
            raise ValueError(f"{path}: datalist has no {key!r} list.")
    for key in ("training", "testing", "synthetic"):
        items = []
        for item in data.get(key, []):
            if "image" not in item or "label" not in item:
                raise ValueError(f"{path}: every {key!r} item needs 'image' and 'label', got {item}.")
            image = Path(item["image"])
            items.append({**item, "image": str(image if image.is_absolute() else (path.parent / image).resolve())})
        data[key] = items
    if data.get("split_file") and not Path(data["split_file"]).is_absolute():
        data["split_file"] = str((path.parent / data["split_file"]).resolve())
    return data


#: the paper's synthetic budget relative to its real training cubes: (114 + 50) / (139 + 203) = 0.4795 (Table 4)
PAPER_SYNTHETIC_BUDGET_FRACTION = 0.48


def synthetic_budget(n_real_training: int, fraction: float | None) -> int | None:
    """The synthetic budget ``round(fraction * n_real_training)`` (``None`` when ``fraction`` is ``None``).

    With the paper's 342 real training cubes and :data:`PAPER_SYNTHETIC_BUDGET_FRACTION` this is 164, which the
    balancing rule splits into its +114 PDAC / +50 healthy.
    """
    if fraction is None:
        return None
    if float(fraction) < 0:
        raise ValueError(f"synthetic_budget_fraction must be >= 0 or None, got {fraction}.")
    return int(round(float(fraction) * int(n_real_training)))


def select_run_data(
    datalist: Mapping[str, Any],
    experiment: str = "I",
    fold: int = 0,
    n_synthetic_total: int | None = None,
    seed: int = 0,
    synthetic_budget_fraction: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Training, validation and test items of one (configuration, fold) run.

    Config I trains on the real cubes outside ``fold``; Config II adds synthetic cubes whose numbers come from
    :func:`synthetic_counts_for_balance` applied to the whole real training set (the paper's Table 4 counts), so
    every fold gets the same synthetic subset (a seeded choice). Validation (``fold``) and test are real only.

    Args:
        datalist: from :func:`load_classifier_datalist`.
        experiment: ``"I"`` (real only) or ``"II"`` (real + synthetic).
        fold: validation fold.
        n_synthetic_total: synthetic budget passed to :func:`synthetic_counts_for_balance`; ``None``: the budget of
            ``synthetic_budget_fraction``, or no budget when that is ``None`` too.
        seed: seed of the synthetic subset.
        synthetic_budget_fraction: budget as a fraction of the real training cubes (all folds) when
            ``n_synthetic_total`` is ``None``; the config's default 0.48 gives the paper's +114 PDAC / +50 healthy
            with its 139 / 203 real cubes (:func:`synthetic_budget`).

    Returns:
        ``{"train": [...], "validate": [...], "test": [...], "counts": {...}}``.
    """
    experiment = str(experiment)
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be 'I' (real only) or 'II' (real + synthetic), got {experiment!r}.")
    training = list(datalist["training"])
    n_folds = int(datalist.get("n_folds", 1 + max((int(it.get("fold", 0)) for it in training), default=0)))
    if not 0 <= int(fold) < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}.")
    train = [it for it in training if int(it["fold"]) != int(fold)]
    validate = [it for it in training if int(it["fold"]) == int(fold)]
    test = list(datalist["testing"])
    if n_synthetic_total is None:
        n_synthetic_total = synthetic_budget(len(training), synthetic_budget_fraction)
    arm = (
        StudyArm("II", "real+synthetic", balance_classes=True, n_synthetic=n_synthetic_total)
        if experiment == "II"
        else StudyArm("I", "real")
    )
    synthetic = list(datalist.get("synthetic", []))
    # balanced on the whole real training set (the paper's Table 4 counts): every fold gets the same synthetic subset
    records = arm.training_records(train, synthetic, seed=seed, balance_reference=training)
    added = [it for it in records if it["source"] == "synthetic"]
    if experiment == "II" and not added:
        logger.warning(
            "Config II fold %s: no synthetic cube added (%d synthetic PDAC, %d synthetic healthy in the datalist), "
            "so it trains on the same data as Config I; blend and sample first, then re-run make_datalist.",
            fold,
            sum(int(it["label"]) == 1 for it in synthetic),
            sum(int(it["label"]) == 0 for it in synthetic),
        )
    train = train + added
    _check_no_test_patient(datalist, train + validate, f"Config {experiment} fold {fold}")

    def _item(it: Mapping[str, Any]) -> dict[str, Any]:  # same keys everywhere, so batches collate
        return {"image": it["image"], "label": int(it["label"]), "source": str(it.get("source", "real"))}

    train, validate, test = [_item(it) for it in train], [_item(it) for it in validate], [_item(it) for it in test]

    def _count(items: list[dict[str, Any]]) -> dict[str, int]:
        n_pdac = sum(int(it["label"]) == 1 for it in items)
        return {"pdac": n_pdac, "healthy": len(items) - n_pdac}

    counts = {
        "train": _count(train),
        "train_synthetic": _count(added),
        "validate": _count(validate),
        "test": _count(test),
        "synthetic_fraction_of_train": len(added) / len(train) if train else 0.0,
        "synthetic_budget": n_synthetic_total,
    }
    return {"train": train, "validate": validate, "test": test, "counts": counts}


def _check_no_test_patient(datalist: Mapping[str, Any], items: Sequence[Mapping[str, Any]], stage: str) -> None:
    """Raise when a training or validation cube belongs to a test patient (of the recorded split when the datalist
    names one that exists, else of the datalist's own test cubes)."""
    real = [it for it in items if "case" in it]
    split_file = datalist.get("split_file")
    if split_file and Path(split_file).is_file():
        assert_no_test_leak(real, PatientSplit.load(split_file), stage=stage)
        return
    test_cases = {it["case"] for it in datalist.get("testing", []) if "case" in it}
    leaked = sorted({it["case"] for it in real} & test_cases)
    if leaked:
        raise ValueError(f"{stage}: test patient(s) in the training input: {leaked}")


def latest_checkpoint(run_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """Path of the newest ``<prefix>_epoch=N.pt`` in ``run_dir`` (for resuming), or ``None``."""
    best, best_epoch = None, -1
    for p in Path(run_dir).glob(f"{prefix}_epoch=*.pt"):
        try:
            epoch = int(p.stem.split("=")[-1])
        except ValueError:
            continue
        if epoch > best_epoch:
            best, best_epoch = str(p), epoch
    return best


def _read_predictions(path: Path) -> dict[str, tuple[int, float]]:
    with open(path, newline="") as f:
        return {row["file"]: (int(row["label"]), float(row["prob_pdac"])) for row in csv.DictReader(f)}


def summarize_study(
    output_dir: str | os.PathLike, experiments: Sequence[str] = EXPERIMENTS, n_folds: int = 3, threshold: float = 0.5
) -> dict[str, Any]:
    """Aggregate the per-run outputs of a study into the Config I vs Config II comparison.

    Per configuration: the validation metrics of each fold (mean and standard deviation), the test metrics of
    each fold's model, and the test metrics of the fold ensemble (mean probability of the fold models), which is the
    headline number compared with the paper. Writes ``comparison.json``, ``comparison.csv``, ``comparison.md`` and
    ``test_roc.png`` / ``test_pr.png`` (both configurations on one plot) to ``output_dir``.

    Returns:
        The comparison dict.
    """
    out = Path(output_dir)
    result: dict[str, Any] = {"threshold": threshold, "paper": PAPER_CLASSIFIER_RESULTS, "configs": {}}
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for exp in experiments:
        folds, test_probs = [], {}
        for fold in range(n_folds):
            run_dir = out / f"config_{exp}" / f"fold_{fold}"
            entry: dict[str, Any] = {"fold": fold}
            for split in ("validation", "test"):
                metrics_file = run_dir / split / "metrics.json"
                if metrics_file.is_file():
                    entry[split] = json.loads(metrics_file.read_text())
            counts_file = run_dir / "counts.json"
            if counts_file.is_file():
                entry["counts"] = json.loads(counts_file.read_text())
            pred_file = run_dir / "test" / "predictions.csv"
            if pred_file.is_file():
                for name, (label, prob) in _read_predictions(pred_file).items():
                    test_probs.setdefault(name, (label, []))[1].append(prob)
            folds.append(entry)
        cfg: dict[str, Any] = {"folds": folds}
        for split in ("validation", "test"):
            for key in ("roc_auc", "pr_auc"):
                vals = [f[split][key] for f in folds if split in f and f[split].get(key) is not None]
                if vals:
                    cfg[f"{split}_{key}_mean"] = float(np.mean(vals))
                    cfg[f"{split}_{key}_std"] = float(np.std(vals))
        if test_probs:
            names = sorted(test_probs)
            labels = [test_probs[n][0] for n in names]
            probs = [float(np.mean(test_probs[n][1])) for n in names]
            cfg["test_ensemble"] = classification_summary(labels, probs, threshold)
            curves[f"Config {exp}"] = (labels, probs)
        result["configs"][exp] = cfg
    result = json_safe(result)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, out / "comparison.json")
    write_table(
        _comparison_rows(result),
        COMPARISON_COLUMNS,
        out,
        "comparison",
        title="Classifier: Config I (real) vs Config II (real + synthetic)",
        notes=[
            "ours: test = fold-ensemble (mean probability of the fold models) on the held-out real test set; "
            f"CV = mean over the validation folds; rates at threshold t = {threshold:g}.",
            "(paper): published values of 3DGAUnet (Shi et al. 2023, Fig. 5), not computed here.",
        ],
        digits=3,
        extra={"comparison": result},
        protocol=(
            "patient-level split recorded before any training (test patients in no GAN and no classifier training "
            "data); 64^3 cubes, HU window [-100, 170]; Config II adds synthetic cubes to balance the classes "
            "(budget synthetic_budget_fraction x real training cubes, 0.48: the paper's +114/+50 at its counts); each "
            "fold's test set scored with the checkpoint chosen on its validation fold (test_checkpoint 'best')"
        ),
        comparability={
            "ROC AUC (test)": ("ordering only", "other scans and split; the paper's GANs saw its test tumours"),
            "PR AUC (test)": ("ordering only", "as ROC AUC; PR AUC also depends on the test set's class ratio"),
            "ROC AUC (CV mean)": ("ordering only", "the paper does not say whether its values are test or CV"),
            "PR AUC (CV mean)": ("ordering only", "the paper does not say whether its values are test or CV"),
            "Precision@t": ("not comparable", "not reported by the paper"),
            "Recall/TPR@t": ("not comparable", "not reported by the paper"),
            "FPR@t": ("not comparable", "not reported by the paper"),
        },
    )
    if curves:
        save_curve_plots(curves, out, title="test set (fold ensemble)", prefix="test_")
    return result


COMPARISON_COLUMNS = [
    "Config",
    "ROC AUC (test)",
    "PR AUC (test)",
    "ROC AUC (CV mean)",
    "PR AUC (CV mean)",
    "Precision@t",
    "Recall/TPR@t",
    "FPR@t",
    "ROC AUC (paper)",
    "PR AUC (paper)",
]


def _comparison_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for exp, cfg in result["configs"].items():
        test = cfg.get("test_ensemble", {})
        paper = PAPER_CLASSIFIER_RESULTS.get(exp, {})
        values = [
            f"Config {exp}",
            test.get("roc_auc"),
            test.get("pr_auc"),
            cfg.get("validation_roc_auc_mean"),
            cfg.get("validation_pr_auc_mean"),
            test.get("precision"),
            test.get("recall"),
            test.get("fpr"),
            paper.get("roc_auc"),
            paper.get("pr_auc"),
        ]
        rows.append(dict(zip(COMPARISON_COLUMNS, values, strict=True)))
    return rows


class ClassifierStudy:
    """Run every (configuration, fold) pair of ``configs/train_classifier.json``, then :func:`summarize_study`.

    Each run executes the config's ``run_one`` section in a fresh :class:`monai.bundle.ConfigWorkflow`
    (:class:`ctsynth.experiments.StudyRunner`, in process), so networks, optimisers, engines and handlers are new for
    every run. Runs whose validation and test ``metrics.json`` exist are skipped (the study resumes after a crash; an
    interrupted run resumes from its last epoch checkpoint). The per-run metrics also land in
    ``<output_dir>/study_metrics.csv`` and ``study_summary.json``.

    Args:
        config_file: the classifier config (or a list of configs merged in order).
        overrides: config values forwarded to every run.
        experiments: configurations to run (``["I", "II"]``).
        n_folds: folds per configuration.
        output_dir: the study folder (``config_<E>/fold_<k>/`` below it).
        threshold: decision threshold of the summary.
        skip_completed: skip runs that already wrote their metrics.
        forward_cli_overrides: also forward every override of the ``python -m monai.bundle run`` command line that
            started this study (:func:`bundle_cli_overrides`; e.g. ``--train#dataloader#num_workers 2``), on top of
            ``overrides``.
    """

    def __init__(
        self,
        config_file: str | Sequence[str],
        overrides: Mapping[str, Any] | None = None,
        experiments: Sequence[str] = EXPERIMENTS,
        n_folds: int = 3,
        output_dir: str | os.PathLike = "eval/classifier",
        threshold: float = 0.5,
        skip_completed: bool = True,
        forward_cli_overrides: bool = True,
    ) -> None:
        bad = [e for e in experiments if str(e) not in EXPERIMENTS]
        if bad:
            raise ValueError(f"unknown experiments {bad}; use 'I' (real only) and/or 'II' (real + synthetic).")
        self.config_file = config_file
        cli = bundle_cli_overrides() if forward_cli_overrides else {}
        # the study itself sets these per run or for all runs
        cli = {k: v for k, v in cli.items() if k not in ("experiment", "experiments", "fold", "output_dir")}
        self.overrides = {**dict(overrides or {}), **cli}
        self.experiments = [str(e) for e in experiments]
        self.n_folds = int(n_folds)
        self.output_dir = Path(output_dir)
        self.threshold = threshold
        self.runner = StudyRunner(
            config_file,
            arms=self.experiments,
            folds=self.n_folds,
            output_dir=self.output_dir,
            overrides={**self.overrides, "n_folds": self.n_folds},
            run_id="run_one",
            arm_key="experiment",
            fold_key="fold",
            run_dir="config_{arm}/fold_{fold}",
            metrics_files={"validation": "validation/metrics.json", "test": "test/metrics.json"},
            in_process=True,
            skip_completed=skip_completed,
            workflow_type="train",
        )

    def run_one(self, experiment: str, fold: int) -> None:
        """Train and test one (configuration, fold) pair."""
        self.runner.run_one(str(experiment), int(fold))

    def run(self) -> dict[str, Any]:
        """Run all pairs (configuration-major order) and return the comparison of :func:`summarize_study`."""
        self.runner.run()
        return summarize_study(self.output_dir, self.experiments, self.n_folds, self.threshold)


def cubes_without_label(kind_dir: str | os.PathLike, label: int = 2) -> list[str]:
    """Image cubes of a ``prepare_cubes`` kind folder (``images/`` + ``labels/``) whose label cube lacks ``label``.

    Healthy classifier cubes are cut from the tumour-free pancreas of (possibly tumour-bearing) scans; a cube whose
    box still reaches the tumour is not healthy and is left out.

    Raises:
        FileNotFoundError: when ``images/`` is missing or an image has no label cube.
    """
    from ctsynth.data.io import load_volume

    root = Path(kind_dir)
    keep = []
    for image in list_volumes(root / "images"):
        lbl = root / "labels" / Path(image).name
        if not lbl.is_file():
            raise FileNotFoundError(f"{lbl}: label cube of {image} not found")
        if not np.any(load_volume(lbl)[0] == label):
            keep.append(image)
    return keep


def load_test_checkpoint(
    network: torch.nn.Module, run_dir: str | os.PathLike, choice: str = "best", best_name: str = "model_best.pt"
) -> str:
    """Load the weights the test set is scored with: the checkpoint chosen on validation (``"best"``, the
    ``model_best.pt`` the validation ``CheckpointSaver`` keeps: highest validation ROC AUC) or the weights at the end
    of training (``"final"``, nothing loaded). The choice is recorded in ``<run_dir>/test_checkpoint.json``.

    Args:
        network: the classifier (weights loaded in place).
        run_dir: the run folder.
        choice: ``"best"`` or ``"final"``.
        best_name: file name of the validation-selected weights.

    Returns:
        The checkpoint used (a path, or ``"final weights"``).

    Raises:
        ValueError: on an unknown choice. FileNotFoundError: when ``"best"`` is asked and no validation-selected
            checkpoint exists (e.g. validation never ran), naming the file.
    """
    if choice not in ("best", "final"):
        raise ValueError(f"test_checkpoint must be 'best' or 'final', got {choice!r}.")
    used = "final weights"
    if choice == "best":
        path = Path(run_dir) / best_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no validation-selected checkpoint to test with (did validation run? val_interval must not "
                "exceed max_epochs); pass --test_checkpoint final to test the last weights."
            )
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        used = str(path)
    write_json_atomic({"test_checkpoint": choice, "weights": used}, Path(run_dir) / "test_checkpoint.json")
    logger.info("test set scored with %s", used)
    return used


def write_run_counts(run_data: Mapping[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write the class counts of one run (train, synthetic part, validation, test) to ``<run_dir>/counts.json``."""
    path = Path(run_dir) / "counts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dict(run_data["counts"]), path)
    return path
