"""Scoring of the segmenters on the real test patients: per-case Dice and HD95, bootstrap confidence intervals,
paired tests between arms, the thesis-layout table and a plot.

Dice is ``2 |P & G| / (|P| + |G|)`` per foreground class (HA-GAN thesis, Eq. 2, computed per test case and averaged);
HD95 is MONAI's 95th-percentile symmetric surface distance in mm (voxel spacing from the label's affine). A case
whose prediction (or label) lacks a class gets HD95 ``nan`` for it and is left out of that HD95 mean (counted in
``n_hd95_undefined``).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import stats

from ctsynth.data.io import atomic_write, nifti_stem, spacing_from_affine, write_json_atomic
from ctsynth.report.tables import PaperTable

__all__ = [
    "PAPER_TEST_DICE",
    "bootstrap_ci",
    "case_scores",
    "compare_runs",
    "paired_test",
    "score_predictions",
]

logger = logging.getLogger(__name__)

#: Test Dice on the 105 held-out real HECKTOR 2022 cases, 128 x 128 x 64 (Guttulsrud 2023, Tables 5.20, 5.24, 5.25
#: and section 5.7.1): real only (1-fold model, 5-fold ensemble), 419 real + 524 HPO17 synthetic (1-fold, 5-fold),
#: 524 synthetic only (1-fold). Keys: (arm, folds).
PAPER_TEST_DICE = {
    ("real", 1): 0.43916,
    ("real", 5): 0.48693,
    ("real+synthetic", 1): 0.49380,
    ("real+synthetic", 5): 0.52193,
    ("synthetic", 1): 0.2529,
}


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    denom = int(pred.sum()) + int(gt.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(pred, gt).sum()) / denom


def case_scores(pred: np.ndarray, label: np.ndarray, classes: Sequence[int], spacing: Sequence[float]) -> dict:
    """Dice and HD95 of one case per foreground class, and their means over the classes.

    Raises:
        ValueError: when the prediction and the label differ in shape.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the label's {label.shape}")
    row: dict[str, Any] = {}
    for c in classes:
        p, g = pred == c, label == c
        row[f"dice_{c}"] = _dice(p, g)
        if p.any() and g.any():
            hd = compute_hausdorff_distance(
                torch.as_tensor(p)[None, None], torch.as_tensor(g)[None, None], percentile=95, spacing=list(spacing)
            )
            row[f"hd95_{c}"] = float(hd.item())
        else:
            row[f"hd95_{c}"] = math.nan
    row["dice"] = float(np.mean([row[f"dice_{c}"] for c in classes]))
    hds = [row[f"hd95_{c}"] for c in classes if not math.isnan(row[f"hd95_{c}"])]
    row["hd95"] = float(np.mean(hds)) if len(hds) == len(classes) else math.nan
    return row


def _find_predictions(pred_dir: Path, postfix: str) -> dict[str, Path]:
    tail = f"_{postfix}"
    found = {}
    for path in pred_dir.rglob("*.nii*"):
        stem = nifti_stem(path)
        if stem.endswith(tail):
            found[stem[: -len(tail)]] = path
    return found


def score_predictions(
    testing: Sequence[Mapping[str, Any]],
    pred_dir: str | os.PathLike,
    classes: Sequence[int],
    out_dir: str | os.PathLike,
    postfix: str = "seg",
) -> dict[str, Any]:
    """Score the saved test predictions; writes ``per_case.csv`` and ``metrics.json`` to ``out_dir``.

    Args:
        testing: the datalist's test records (``image``, ``label``, ``case``).
        pred_dir: folder of the predictions (``<image stem>_<postfix>.nii.gz``).
        classes: foreground label values.
        out_dir: output folder.
        postfix: file name postfix of the predictions.

    Returns:
        The metrics (means over the test cases; ``n_cases``).

    Raises:
        FileNotFoundError: when a test case has no prediction (the message names the image and the folder).
    """
    preds = _find_predictions(Path(pred_dir), postfix)
    rows = []
    for rec in testing:
        stem = nifti_stem(rec["image"])
        if stem not in preds:
            raise FileNotFoundError(f"{rec['image']}: no prediction {stem}_{postfix}.nii.gz in {pred_dir}")
        label_img = nib.load(rec["label"])
        label = np.asarray(label_img.dataobj).astype(np.int64)
        pred = np.asarray(nib.load(str(preds[stem])).dataobj).astype(np.int64).reshape(label.shape)
        scores = case_scores(pred, label, classes, spacing_from_affine(label_img.affine))
        rows.append({"case": rec.get("case", stem), **scores})
    out = Path(out_dir)
    columns = list(rows[0]) if rows else ["case"]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / "per_case.csv", write_csv)
    metrics: dict[str, Any] = {"n_cases": len(rows)}
    for key in columns[1:]:
        values = np.array([r[key] for r in rows], dtype=float)
        metrics[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    metrics["n_hd95_undefined"] = int(sum(math.isnan(r["hd95"]) for r in rows))
    write_json_atomic(metrics, out / "metrics.json")
    return metrics


def bootstrap_ci(values: Sequence[float], n_resamples: int = 10000, level: float = 0.95, seed: int = 0) -> tuple:
    """Percentile bootstrap confidence interval of the mean (cases resampled with replacement; ``nan`` left out).

    Returns:
        ``(low, high)``; ``(nan, nan)`` without finite values.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of ``a - b`` over the cases both score (paired by case id).

    Returns:
        ``{"n", "mean_difference", "p_value", "note"}``; ``p_value`` is ``nan`` with a note when the test is undefined
        (fewer than two pairs, or all differences zero).
    """
    cases = sorted(c for c in set(a) & set(b) if np.isfinite(a[c]) and np.isfinite(b[c]))
    diff = np.array([a[c] - b[c] for c in cases], dtype=float)
    out: dict[str, Any] = {"n": len(cases), "mean_difference": float(diff.mean()) if cases else math.nan}
    if len(cases) < 2 or not np.any(diff):
        out.update(p_value=math.nan, note="undefined: fewer than two paired cases or no difference")
        return out
    out.update(p_value=float(stats.wilcoxon(diff).pvalue), note="Wilcoxon signed-rank, two-sided")
    return out


def _read_per_case(path: Path) -> dict[str, dict[str, float]]:
    with open(path, newline="") as fh:
        return {r["case"]: {k: float(v) for k, v in r.items() if k != "case"} for r in csv.DictReader(fh)}


def compare_runs(
    study_dir: str | os.PathLike,
    arms: Sequence[str],
    fold_settings: Sequence[int],
    baseline: str = "real",
    run_dir: str = "{arm}/folds_{fold}",
    comparability: Sequence[str] = ("not comparable", "phantom data, not HECKTOR 2022"),
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict[str, Path]:
    """Summarise the study: bootstrap CIs per run, paired tests against ``baseline`` at the same fold setting, the
    thesis-layout table (``table_test_dice.md/.csv/.json``), ``comparison.json`` and ``dice_by_arm.png``.

    Raises:
        FileNotFoundError: when a run has no ``test/per_case.csv`` (the message names it).
    """
    study = Path(study_dir)
    per_case: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for arm in arms:
        for k in fold_settings:
            path = study / run_dir.format(arm=arm, fold=k) / "test" / "per_case.csv"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: run ({arm}, {k} fold(s)) has no test scores")
            per_case[(arm, k)] = _read_per_case(path)
    rows, details = [], []
    for (arm, k), cases in per_case.items():
        dice = {c: v["dice"] for c, v in cases.items()}
        hd = [v["hd95"] for v in cases.values()]
        low, high = bootstrap_ci(list(dice.values()), n_resamples, seed=seed)
        hd_low, hd_high = bootstrap_ci(hd, n_resamples, seed=seed)
        test = {"p_value": math.nan, "mean_difference": math.nan, "n": 0, "note": "baseline"}
        if arm != baseline and (baseline, k) in per_case:
            test = paired_test(dice, {c: v["dice"] for c, v in per_case[(baseline, k)].items()})
        details.append(
            {
                "arm": arm,
                "folds": k,
                "n_cases": len(cases),
                "dice_mean": float(np.mean(list(dice.values()))),
                "dice_ci": [low, high],
                "hd95_mean": float(np.nanmean(hd)) if np.isfinite(hd).any() else math.nan,
                "hd95_ci": [hd_low, hd_high],
                f"vs_{baseline}": test,
            }
        )
        rows.append(
            {
                "Model": arm,
                "Folds": str(k),
                "Test Dice": details[-1]["dice_mean"],
                "95% CI": f"[{low:.3f}, {high:.3f}]",
                "HD95 (mm)": details[-1]["hd95_mean"],
                f"p vs {baseline}": test["p_value"],
            }
        )
    level, reason = comparability
    table = PaperTable(
        name="table_test_dice",
        title="Test Dice on held-out real patients (layout of the HA-GAN thesis, Tables 5.20/5.24/5.25)",
        columns=("Model", "Folds", "Source", "Test Dice", "95% CI", "HD95 (mm)", f"p vs {baseline}"),
        key_columns=("Model", "Folds"),
        paper_values={(arm, str(k)): {"Test Dice": v} for (arm, k), v in PAPER_TEST_DICE.items()},
        citation="Guttulsrud 2023 (HA-GAN thesis), Tables 5.20, 5.24, 5.25",
        protocol=(
            "Auto3DSeg AutoRunner per arm; 1 fold = the fold-0 model, k folds = Auto3DSeg's best-by-fold ensemble; "
            "Dice per case averaged over foreground classes, then over test cases; 95% CI: percentile bootstrap over "
            f"cases ({n_resamples} resamples); p: Wilcoxon signed-rank on per-case Dice, paired with the {baseline} "
            "arm at the same fold setting"
        ),
        comparability={
            "Test Dice": (level, reason),
            "95% CI": ("not comparable", "the thesis reports no intervals"),
            "HD95 (mm)": ("not comparable", "the thesis reports no HD95"),
            f"p vs {baseline}": ("not comparable", "the thesis reports no test"),
        },
        digits=4,
    )
    paths = table.write(rows, study)
    paths["comparison"] = write_json_atomic({"baseline": baseline, "runs": details}, study / "comparison.json")
    paths["plot"] = plot_dice(per_case, details, study / "dice_by_arm.png")
    return paths


def plot_dice(
    per_case: Mapping[tuple[str, int], Mapping[str, Mapping[str, float]]],
    details: Sequence[Mapping[str, Any]],
    path: Path,
) -> Path:
    """Bar per (arm, folds): mean test Dice with its bootstrap CI, per-case Dice as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(details), 3.6))
    for i, d in enumerate(details):
        low, high = d["dice_ci"]
        err = [[d["dice_mean"] - low], [high - d["dice_mean"]]] if np.isfinite([low, high]).all() else None
        ax.bar(i, d["dice_mean"], yerr=err, capsize=4, color="#4c72b0" if d["arm"] == "real" else "#dd8452")
        cases = [v["dice"] for v in per_case[(d["arm"], d["folds"])].values()]
        ax.plot([i] * len(cases), cases, "k.", alpha=0.6)
    ax.set_xticks(range(len(details)), [f"{d['arm']}\n{d['folds']} fold(s)" for d in details], fontsize=8)
    ax.set_ylabel("test Dice (real patients)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path
