"""Data splits, class balancing with synthetic cubes and the Config I / Config II cross-validation study.

The paper (digest section 6.2) holds out 20 % of the real cubes as a test set shared by both configurations
(35 PDAC + 51 healthy of 174 + 254), validates by 3-fold cross-validation on the rest, and for Config II adds
114 synthetic PDAC and 50 synthetic healthy cubes to the 139 / 203 real training cubes, which balances the classes
(253 / 253). :func:`synthetic_counts_for_balance` generalises that rule; :class:`ClassifierStudy` runs every
(configuration, fold) pair of ``configs/train_classifier.json`` and writes the comparison table.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctsynth.data.io import write_json_atomic
from scripts.classifier import classification_summary, json_safe, save_curve_plots
from scripts.evaluation import write_table

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
    "stratified_kfold",
    "stratified_train_test_split",
    "summarize_study",
    "synthetic_counts_for_balance",
    "write_run_counts",
]

# Published classifier results (3DGAUnet, Shi et al. 2023, section 3.4 / Fig. 5; digest section 6.3).
PAPER_CLASSIFIER_RESULTS: dict[str, dict[str, float]] = {
    "I": {"roc_auc": 0.67, "pr_auc": 0.80},
    "II": {"roc_auc": 0.79, "pr_auc": 0.87},
}
EXPERIMENTS = ("I", "II")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# label maps written beside images (e.g. blended cubes and their tumour masks) are not classifier inputs
LABEL_NAME = re.compile(r"(^|[_.-])(label|labels|mask|masks|seg)([_.-]|$)", flags=re.IGNORECASE)


def _labels_array(labels: Sequence[int]) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1D sequence of 0/1 class labels.")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must hold only 0 (healthy) and 1 (PDAC).")
    return y.astype(int)


def stratified_train_test_split(
    labels: Sequence[int], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Seeded split of item indices into (train, test) with ``round(test_fraction * n_class)`` test items per class.

    Args:
        labels: 0/1 class label per item.
        test_fraction: fraction of each class held out (0.2 gives the paper's 35 of 174 and 51 of 254).
        seed: NumPy seed.

    Returns:
        Sorted train indices and sorted test indices (disjoint, covering every item).
    """
    y = _labels_array(labels)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        perm = rng.permutation(idx)
        test.extend(int(i) for i in perm[: int(round(test_fraction * idx.size))])
    test_set = set(test)
    return [i for i in range(y.size) if i not in test_set], sorted(test_set)


def stratified_kfold(labels: Sequence[int], n_folds: int = 3, seed: int = 0) -> list[int]:
    """Seeded stratified fold index per item: each class is shuffled and dealt round-robin over the folds.

    The dealing continues across classes, so fold sizes differ by at most one and each class' counts per fold
    differ by at most one.

    Args:
        labels: 0/1 class label per item.
        n_folds: number of folds (the paper: 3).
        seed: NumPy seed.

    Returns:
        Fold index (0 .. n_folds - 1) of every item.

    Raises:
        ValueError: when a class has fewer items than folds (a fold would miss it).
    """
    y = _labels_array(labels)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    rng = np.random.default_rng(seed)
    folds = np.full(y.size, -1, dtype=int)
    offset = 0
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        if 0 < idx.size < n_folds:
            raise ValueError(f"class {cls} has {idx.size} items, fewer than n_folds={n_folds}.")
        folds[idx] = (offset + np.arange(idx.size)) % n_folds
        offset = (offset + idx.size) % n_folds
    return [int(f) for f in folds]


def synthetic_counts_for_balance(
    n_real_pdac: int,
    n_real_healthy: int,
    available_pdac: int,
    available_healthy: int,
    total: int | None = None,
) -> tuple[int, int]:
    """How many synthetic PDAC and healthy cubes to add so the training classes are balanced.

    Rule: add as many synthetic cubes as possible such that both classes end with the same count, within what is
    available and within an optional ``total`` budget; when balance cannot be reached, add only the minority class,
    all that is available (the closest to balance). With the paper's 139 / 203 real cubes and a budget of 164 (or
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
    counts = (n_real_pdac, n_real_healthy, available_pdac, available_healthy)
    if any(int(c) != c or c < 0 for c in counts) or (total is not None and total < 0):
        raise ValueError(f"counts must be non-negative integers, got {counts} and total={total}.")
    gap = n_real_healthy - n_real_pdac  # synthetic PDAC must exceed synthetic healthy by this much
    budget = available_pdac + available_healthy if total is None else int(total)
    if gap >= 0:
        minority_avail, majority_avail = available_pdac, available_healthy
    else:
        gap, minority_avail, majority_avail = -gap, available_healthy, available_pdac
    if gap > min(minority_avail, budget):
        n_minority, n_majority = min(minority_avail, budget), 0
    else:
        n_majority = min(majority_avail, minority_avail - gap, (budget - gap) // 2)
        n_minority = n_majority + gap
    return (n_minority, n_majority) if n_real_healthy >= n_real_pdac else (n_majority, n_minority)


def list_volumes(source: str | os.PathLike | Sequence[str], pattern: str = "*") -> list[str]:
    """Sorted NIfTI files of a folder matching ``pattern``, label-map names (``*_mask*``, ``*label*``) left out; or
    the given list of files, checked to exist.

    Raises:
        FileNotFoundError: when the folder or a listed file does not exist.
    """
    if isinstance(source, str | os.PathLike):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder of cubes not found")
        return sorted(
            str(p)
            for p in folder.glob(pattern)
            if p.is_file() and p.name.endswith(NIFTI_SUFFIXES) and not LABEL_NAME.search(p.name.split(".")[0])
        )
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
) -> dict[str, Any]:
    """Datalist of classifier cubes: real cubes split into folds and a held-out test set, synthetic cubes apart.

    Items are ``{"image": path, "label": 0 healthy | 1 PDAC, "source": "real" | "synthetic"}``; real training items
    carry ``"fold"``. Synthetic cubes never enter a validation fold or the test set.

    Args:
        real_pdac: folder (or list) of real 64^3 PDAC cubes (centred on the tumour).
        real_healthy: folder (or list) of real 64^3 healthy-pancreas cubes.
        synthetic_pdac: blended synthetic PDAC cubes (``configs/blend.json`` output), optional.
        synthetic_healthy: synthetic pancreas cubes (``configs/inference.json`` output), optional.
        out: JSON path to write (paths stored relative to its folder); ``None``: not written, absolute paths.
        test_fraction: held-out fraction per class (0.2).
        n_folds: cross-validation folds over the remaining real cubes (3).
        seed: split seed.
        synthetic_pdac_pattern: glob selecting the synthetic PDAC images in their folder (e.g. ``"*_image.nii.gz"``
            when masks sit beside them).
        synthetic_healthy_pattern: glob selecting the synthetic healthy images.

    Returns:
        The datalist dict (``training``, ``testing``, ``synthetic`` and the split settings).

    Raises:
        FileNotFoundError: on a missing folder; ValueError: when a real class has no cube.
    """
    real = [(f, 1) for f in list_volumes(real_pdac)] + [(f, 0) for f in list_volumes(real_healthy)]
    if not any(y == 1 for _, y in real) or not any(y == 0 for _, y in real):
        raise ValueError(f"need real cubes of both classes, found {len(real)} in {real_pdac} and {real_healthy}.")
    labels = [y for _, y in real]
    train_idx, test_idx = stratified_train_test_split(labels, test_fraction=test_fraction, seed=seed)
    train_labels = [labels[i] for i in train_idx]
    for cls, name, source in ((1, "PDAC", real_pdac), (0, "healthy", real_healthy)):
        n_train = sum(y == cls for y in train_labels)
        if n_train < n_folds:
            n_all = sum(y == cls for y in labels)
            raise ValueError(
                f"{n_all} real {name} cube(s) from {source}: {n_train} left after the {test_fraction:g} test split, "
                f"fewer than n_folds={n_folds}; add cases (or lower n_folds / test_fraction)."
            )
    folds = stratified_kfold(train_labels, n_folds=n_folds, seed=seed)
    synthetic: list[tuple[str, int]] = []
    if synthetic_pdac is not None:
        synthetic += [(f, 1) for f in list_volumes(synthetic_pdac, synthetic_pdac_pattern)]
    if synthetic_healthy is not None:
        synthetic += [(f, 0) for f in list_volumes(synthetic_healthy, synthetic_healthy_pattern)]
    base = None if out is None else Path(out).resolve().parent

    def _path(f: str) -> str:
        return str(Path(f).resolve()) if base is None else os.path.relpath(Path(f).resolve(), base)

    datalist = {
        "description": "3DGAUnet PDAC classifier cubes: label 1 = PDAC, 0 = healthy pancreas",
        "seed": seed,
        "n_folds": n_folds,
        "test_fraction": test_fraction,
        "training": [
            {"image": _path(real[i][0]), "label": real[i][1], "source": "real", "fold": fold}
            for i, fold in zip(train_idx, folds, strict=True)
        ],
        "testing": [{"image": _path(real[i][0]), "label": real[i][1], "source": "real"} for i in test_idx],
        "synthetic": [{"image": _path(f), "label": y, "source": "synthetic"} for f, y in synthetic],
    }
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
    return data


def select_run_data(
    datalist: Mapping[str, Any],
    experiment: str = "I",
    fold: int = 0,
    n_synthetic_total: int | None = None,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Training, validation and test items of one (configuration, fold) run.

    Config I trains on the real cubes outside ``fold``; Config II adds synthetic cubes whose numbers come from
    :func:`synthetic_counts_for_balance` applied to the whole real training set (the paper's Table 4 counts), so
    every fold gets the same synthetic subset (a seeded choice). Validation (``fold``) and test are real only.

    Args:
        datalist: from :func:`load_classifier_datalist`.
        experiment: ``"I"`` (real only) or ``"II"`` (real + synthetic).
        fold: validation fold.
        n_synthetic_total: synthetic budget passed to :func:`synthetic_counts_for_balance` (``None``: no budget).
        seed: seed of the synthetic subset.

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
    added: list[dict[str, Any]] = []
    if experiment == "II":
        synthetic = list(datalist.get("synthetic", []))
        syn_pdac = [it for it in synthetic if int(it["label"]) == 1]
        syn_healthy = [it for it in synthetic if int(it["label"]) == 0]
        n_pdac = sum(int(it["label"]) == 1 for it in training)
        n_pdac_add, n_healthy_add = synthetic_counts_for_balance(
            n_pdac, len(training) - n_pdac, len(syn_pdac), len(syn_healthy), n_synthetic_total
        )
        if n_pdac_add + n_healthy_add == 0:
            logger.warning(
                "Config II fold %s: no synthetic cube added (%d synthetic PDAC, %d synthetic healthy in the datalist), "
                "so it trains on the same data as Config I; blend and sample first, then re-run make_datalist.",
                fold,
                len(syn_pdac),
                len(syn_healthy),
            )
        rng = np.random.default_rng(seed)
        added = [syn_pdac[i] for i in sorted(rng.permutation(len(syn_pdac))[:n_pdac_add])]
        added += [syn_healthy[i] for i in sorted(rng.permutation(len(syn_healthy))[:n_healthy_add])]
    train = train + added

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
    }
    return {"train": train, "validate": validate, "test": test, "counts": counts}


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

    Each run re-reads the config file with ``overrides`` plus ``experiment``/``fold`` and executes its ``run_one``
    section in a fresh :class:`monai.bundle.ConfigWorkflow`, so networks, optimisers, engines and handlers are new
    for every run. Runs whose ``test/metrics.json`` exists are skipped (the study resumes after a crash; an
    interrupted run resumes from its last epoch checkpoint).

    Args:
        config_file: the classifier config (or a list of configs merged in order).
        overrides: config values forwarded to every run (the study forwards the top-level knobs it was run with).
        experiments: configurations to run (``["I", "II"]``).
        n_folds: folds per configuration.
        output_dir: the study folder (``config_<E>/fold_<k>/`` below it).
        threshold: decision threshold of the summary.
        skip_completed: skip runs that already wrote their test metrics.
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
    ) -> None:
        bad = [e for e in experiments if str(e) not in EXPERIMENTS]
        if bad:
            raise ValueError(f"unknown experiments {bad}; use 'I' (real only) and/or 'II' (real + synthetic).")
        self.config_file = config_file
        self.overrides = dict(overrides or {})
        self.experiments = [str(e) for e in experiments]
        self.n_folds = int(n_folds)
        self.output_dir = Path(output_dir)
        self.threshold = threshold
        self.skip_completed = skip_completed

    def run_one(self, experiment: str, fold: int) -> None:
        """Train and test one (configuration, fold) pair."""
        from monai.bundle import ConfigWorkflow

        run_dir = self.output_dir / f"config_{experiment}" / f"fold_{fold}"
        if self.skip_completed and (run_dir / "test" / "metrics.json").is_file():
            return
        config_files = [self.config_file] if isinstance(self.config_file, str | os.PathLike) else self.config_file
        meta = Path(config_files[0]).parent / "metadata.json"
        overrides = {**self.overrides, "experiment": experiment, "fold": fold, "n_folds": self.n_folds}
        overrides["output_dir"] = str(self.output_dir)
        workflow = ConfigWorkflow(
            config_file=[str(c) for c in config_files],
            meta_file=str(meta) if meta.is_file() else None,
            logging_file=False,
            workflow_type="train",
            run_id="run_one",
            **overrides,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()

    def run(self) -> dict[str, Any]:
        """Run all pairs (configuration-major order) and return the comparison of :func:`summarize_study`."""
        for experiment in self.experiments:
            for fold in range(self.n_folds):
                self.run_one(experiment, fold)
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


def write_run_counts(run_data: Mapping[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write the class counts of one run (train, synthetic part, validation, test) to ``<run_dir>/counts.json``."""
    path = Path(run_dir) / "counts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dict(run_data["counts"]), path)
    return path
