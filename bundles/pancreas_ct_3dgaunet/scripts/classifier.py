"""The 3DGAUnet PDAC-vs-healthy classifier: network, rotation augmentation, ROC/PR metrics and an evaluation report.

Network (3DGAUnet paper, Sec. 2.5; the layout is our reading of it): the paper's "17-layer 3D CNN" whose stated
1,351,873 learnable parameters match exactly the layout ``4 x [Conv3d(k3, valid) -> ReLU -> MaxPool3d(2) ->
BatchNorm3d]`` with filters 64-64-128-256, global average pooling, ``Dense(512) -> ReLU -> Dropout(0.3) -> Dense(1)``
(sigmoid in the loss). The convolutional part and the 512-d dense layer are the F3D feature network of
:mod:`ctsynth.metrics.features.f3d`, reused here so the two can never diverge; this module adds the dropout and the
one-logit head. The text's filters 64-128-256-512 (about 4.91 M parameters) are the ``"paper_text"`` variant.

Metrics: scikit-learn is not a dependency, so ROC and precision-recall curves and their areas are computed here with
NumPy (same definitions as scikit-learn's ``roc_curve``/``roc_auc_score``/``average_precision_score``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.handlers.utils import from_engine
from monai.transforms import MapTransform, RandomizableTransform, Rotate
from monai.utils import ensure_tuple_rep
from torch import nn

from ctsynth.data.io import to_json_safe, write_json_atomic
from ctsynth.metrics.features.f3d import C3DClassifierBackbone

__all__ = [
    "CLASSIFIER_VARIANTS",
    "BinaryClassificationReport",
    "PDACClassifier3D",
    "RandSingleAxisRotated",
    "average_precision",
    "binary_threshold_metrics",
    "classification_summary",
    "count_learnable_parameters",
    "json_safe",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
    "save_curve_plots",
]

# "paper_count": the layout reproducing the paper's 1,351,873 learnable parameters (default);
# "paper_text": the filters written in the paper's text (64, 128, 256, 512), 4,912,641 learnable parameters.
CLASSIFIER_VARIANTS: dict[str, tuple[int, ...]] = {
    "paper_count": (64, 64, 128, 256),
    "paper_text": (64, 128, 256, 512),
}


def count_learnable_parameters(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class PDACClassifier3D(nn.Module):
    """3D CNN PDAC classifier of 3DGAUnet (Shi et al. 2023, section 2.6): 64^3 cube in, one logit out.

    Args:
        in_channels: input channels (1 for CT).
        out_channels: number of logits (1: PDAC vs healthy with a sigmoid in the loss).
        filters: filters of the four conv blocks, or a key of :data:`CLASSIFIER_VARIANTS`
            (``"paper_count"`` = 64, 64, 128, 256, the default; ``"paper_text"`` = 64, 128, 256, 512).
        dense_features: width of the dense layer (512).
        dropout: dropout rate after the dense layer (0.3, the Keras reference value; the paper calls it tunable).
        padding: ``"valid"`` (Keras default, needs >= 46 voxels per edge) or ``"same"`` (>= 16 voxels; for small cubes).

    Raises:
        ValueError: on an unknown variant name, a dropout outside [0, 1) or a bad padding.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        filters: Sequence[int] | str = "paper_count",
        dense_features: int = 512,
        dropout: float = 0.3,
        padding: str = "valid",
    ) -> None:
        super().__init__()
        if isinstance(filters, str):
            if filters not in CLASSIFIER_VARIANTS:
                known = sorted(CLASSIFIER_VARIANTS)
                raise ValueError(f"unknown classifier variant {filters!r}; choose one of {known}.")
            filters = CLASSIFIER_VARIANTS[filters]
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.backbone = C3DClassifierBackbone(
            in_channels=in_channels,
            filters=tuple(int(f) for f in filters),
            dense_features=dense_features,
            padding=padding,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dense_features, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N, out_channels) logits.

        Raises:
            ValueError: when the input is not 5D or a spatial edge vanishes in the four pooling blocks.
        """
        if x.ndim != 5:
            raise ValueError(f"expected a (N, C, D, H, W) input, got shape {tuple(x.shape)}.")
        if any(self.backbone.output_spatial_size(int(s)) == 0 for s in x.shape[2:]):
            raise ValueError(
                f"input of spatial size {tuple(x.shape[2:])} vanishes in the four conv/pool blocks with "
                f"{self.backbone.padding} padding (valid needs >= 46 voxels per edge, same >= 16); "
                "use 64^3 cubes or padding='same'."
            )
        return self.head(self.dropout(self.backbone(x)))


class RandSingleAxisRotated(RandomizableTransform, MapTransform):
    """Rotate about one randomly chosen axis by an angle drawn from a fixed set, in a random direction.

    The paper's classifier augmentation: "a random rotation along a single axis. The rotation angle was randomly
    selected from ... 5, 10, 20 and 40 degrees. The direction ... clockwise or counterclockwise, was also randomly
    determined." MONAI's ``RandRotated`` draws angles from continuous ranges on every axis at once, so this transform
    draws (axis, angle, sign) itself and applies :class:`monai.transforms.Rotate` with only that axis' angle.

    Args:
        keys: keys of the (C, x, y, z) volumes to rotate, all with the same rotation.
        angles_deg: the allowed angle magnitudes in degrees.
        prob: probability of rotating at all.
        mode: interpolation, one for all keys or one per key (``"bilinear"`` images, ``"nearest"`` labels).
        padding_mode: ``grid_sample`` padding of the corners rotated in (``"zeros"``: the Keras reference's
            ``scipy.ndimage.rotate`` fills with 0, i.e. -100 HU after the [-100, 170] window).
        align_corners: ``grid_sample`` option.
        allow_missing_keys: skip absent keys instead of raising.

    Attributes (after a call): ``axis`` (0, 1 or 2: the spatial axis rotated about), ``angle_deg`` (signed degrees).
    """

    def __init__(
        self,
        keys: KeysCollection,
        angles_deg: Sequence[float] = (5.0, 10.0, 20.0, 40.0),
        prob: float = 1.0,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "zeros",
        align_corners: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        angles = tuple(float(a) for a in angles_deg)
        if not angles or any(a <= 0 or not math.isfinite(a) for a in angles):
            raise ValueError(f"angles_deg must be a non-empty list of positive angles, got {tuple(angles_deg)}.")
        self.angles_deg = angles
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))
        self.align_corners = align_corners
        self.axis = 0
        self.angle_deg = 0.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to rotate, the axis, the magnitude and the direction."""
        super().randomize(None)
        self.axis = int(self.R.randint(3))
        sign = 1.0 if self.R.rand() < 0.5 else -1.0
        self.angle_deg = sign * float(self.angles_deg[self.R.randint(len(self.angles_deg))])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        angle = [0.0, 0.0, 0.0]
        angle[self.axis] = math.radians(self.angle_deg)
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            if d[key].ndim != 4:
                raise ValueError(f"RandSingleAxisRotated expects (C, x, y, z) volumes, {key!r} has {d[key].ndim} dims.")
            rotate = Rotate(
                angle=angle, keep_size=True, mode=mode, padding_mode=padding_mode, align_corners=self.align_corners
            )
            d[key] = rotate(d[key])
        return d


def _check_binary(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true and y_score must have the same length, got {t.size} and {s.size}.")
    if t.size == 0:
        raise ValueError("y_true is empty.")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("y_true must hold only 0 (healthy) and 1 (PDAC) labels.")
    if not np.all(np.isfinite(s)):
        raise ValueError("y_score contains NaN or infinite values.")
    return t, s


def _cumulative_counts(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positive counts when predicting positive for ``score >= t``, at each distinct ``t`` (descending)."""
    order = np.argsort(-y_score, kind="mergesort")
    scores, labels = y_score[order], y_true[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, scores[last_of_tie]


def roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic curve (as ``sklearn.metrics.roc_curve`` without dropping collinear points).

    Args:
        y_true: 0/1 labels (1 = PDAC).
        y_score: scores or probabilities, higher = more likely PDAC.

    Returns:
        ``(fpr, tpr, thresholds)``: starts at (0, 0) with threshold ``inf``; point ``i`` predicts positive for
        ``score >= thresholds[i]``.

    Raises:
        ValueError: on bad inputs or when only one class is present.
    """
    t, s = _check_binary(y_true, y_score)
    n_pos, n_neg = t.sum(), t.size - t.sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both classes in y_true (at least one 0 and one 1).")
    tps, fps, thresholds = _cumulative_counts(t, s)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thresholds]


def roc_auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve by the trapezoidal rule (ties count one half, as Mann-Whitney U)."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve at every distinct threshold (descending), with the (recall 0, precision 1) start point.

    Args:
        y_true: 0/1 labels (1 = PDAC).
        y_score: scores, higher = more likely PDAC.

    Returns:
        ``(precision, recall, thresholds)``; ``thresholds[0]`` is ``inf`` for the start point.

    Raises:
        ValueError: on bad inputs or when there is no positive.
    """
    t, s = _check_binary(y_true, y_score)
    if t.sum() == 0:
        raise ValueError("precision-recall needs at least one positive (label 1) in y_true.")
    tps, fps, thresholds = _cumulative_counts(t, s)
    return np.r_[1.0, tps / (tps + fps)], np.r_[0.0, tps / t.sum()], np.r_[np.inf, thresholds]


def average_precision(y_true: Any, y_score: Any) -> float:
    """PR AUC as average precision: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds (no interpolation)."""
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    return float(np.sum(np.diff(recall) * precision[1:]))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def binary_threshold_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Confusion matrix and the paper's rates when predicting PDAC for ``probability >= threshold``.

    Args:
        y_true: 0/1 labels.
        y_prob: predicted PDAC probabilities.
        threshold: decision threshold.

    Returns:
        Dict with ``tp, fp, tn, fn``, ``confusion_matrix`` (rows true 0/1, columns predicted 0/1), ``precision``
        TP/(TP+FP), ``recall`` = ``tpr`` TP/(TP+FN), ``fpr`` FP/(FP+TN), ``specificity``, ``accuracy``;
        undefined ratios are NaN.
    """
    t, p = _check_binary(y_true, y_prob)
    pred = p >= threshold
    tp = int(np.sum(pred & (t == 1)))
    fp = int(np.sum(pred & (t == 0)))
    tn = int(np.sum(~pred & (t == 0)))
    fn = int(np.sum(~pred & (t == 1)))
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "tpr": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "specificity": _ratio(tn, fp + tn),
        "accuracy": _ratio(tp + tn, t.size),
    }


def classification_summary(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision) and :func:`binary_threshold_metrics`; AUCs are NaN for a one-class set."""
    t, p = _check_binary(y_true, y_prob)
    both = 0 < t.sum() < t.size
    return {
        "n": int(t.size),
        "n_pdac": int(t.sum()),
        "n_healthy": int(t.size - t.sum()),
        "roc_auc": roc_auc(t, p) if both else float("nan"),
        "pr_auc": average_precision(t, p) if t.sum() > 0 else float("nan"),
        **binary_threshold_metrics(t, p, threshold),
    }


def json_safe(obj: Any) -> Any:
    """NaN/inf floats replaced by ``None`` (recursively, NumPy values as Python numbers): strict JSON."""
    return to_json_safe(obj, nan=None, inf=None)


def save_curve_plots(
    curves: Mapping[str, tuple[Any, Any]], out_dir: str | os.PathLike, title: str = "", prefix: str = ""
) -> dict[str, Path]:
    """Plot ROC and precision-recall curves of one or more prediction sets (matplotlib, Agg backend).

    Args:
        curves: ``{legend name: (y_true, y_prob)}``; sets with one class are skipped in the ROC plot.
        out_dir: destination folder.
        title: plot title prefix.
        prefix: file name prefix (``<prefix>roc.png``, ``<prefix>pr.png``).

    Returns:
        ``{"roc": path, "pr": path}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"roc": out / f"{prefix}roc.png", "pr": out / f"{prefix}pr.png"}
    fig_roc, ax_roc = plt.subplots(figsize=(4.5, 4.5))
    fig_pr, ax_pr = plt.subplots(figsize=(4.5, 4.5))
    for name, (y_true, y_prob) in curves.items():
        t, p = _check_binary(y_true, y_prob)
        if 0 < t.sum() < t.size:
            fpr, tpr, _ = roc_curve(t, p)
            ax_roc.plot(fpr, tpr, drawstyle="default", label=f"{name} (AUC {roc_auc(t, p):.3f})")
        if t.sum() > 0:
            precision, recall, _ = precision_recall_curve(t, p)
            ax_pr.step(recall, precision, where="post", label=f"{name} (AP {average_precision(t, p):.3f})")
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title} ROC".strip())
    ax_pr.set(xlabel="recall", ylabel="precision", ylim=(0.0, 1.02), title=f"{title} precision-recall".strip())
    for fig, ax, key in ((fig_roc, ax_roc, "roc"), (fig_pr, ax_pr, "pr")):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(paths[key], dpi=100)
        plt.close(fig)
    return paths


def _filename_of(item: Any) -> str:
    meta = getattr(item, "meta", None)
    name = meta.get("filename_or_obj", "") if isinstance(meta, Mapping) else ""
    return str(name)


class BinaryClassificationReport:
    """Ignite handler: collect PDAC probabilities of an evaluator's run and write metrics, predictions and curves.

    At every completed evaluation it writes to ``output_dir``: ``predictions.csv`` (file, label, probability),
    ``metrics.json`` (:func:`classification_summary`), ``roc.png`` and ``pr.png``. MONAI's ``ROCAUC`` handler gives
    the AUC for model selection but neither PR AUC nor curves, hence this handler.

    Args:
        output_dir: destination folder.
        output_transform: maps ``engine.state.output`` to ``(probabilities, labels)`` (lists of tensors, as MONAI's
            decollated outputs after a sigmoid post-transform).
        threshold: decision threshold of the confusion matrix.
        image_key: batch key whose MetaTensor meta gives the file names.
        title: plot title.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        output_transform: Callable = from_engine(["pred", "label"]),
        threshold: float = 0.5,
        image_key: str = "image",
        title: str = "",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.output_transform = output_transform
        self.threshold = threshold
        self.image_key = image_key
        self.title = title
        self.probs: list[float] = []
        self.labels: list[float] = []
        self.files: list[str] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.probs, self.labels, self.files = [], [], []

    def _collect(self, engine: Any) -> None:
        probs, labels = self.output_transform(engine.state.output)
        for p, y in zip(probs, labels, strict=True):
            self.probs.append(float(torch.as_tensor(p).reshape(-1)[0]))
            self.labels.append(float(torch.as_tensor(y).reshape(-1)[0]))
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [None] * len(probs)
        for item in items:
            self.files.append(_filename_of(item.get(self.image_key)) if isinstance(item, Mapping) else "")

    def _write(self, engine: Any) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        summary = classification_summary(self.labels, self.probs, self.threshold)
        summary["epoch"] = int(getattr(engine.state, "epoch", 0) or 0)
        write_json_atomic(json_safe(summary), self.output_dir / "metrics.json")
        with open(self.output_dir / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "label", "prob_pdac"])
            for name, y, p in zip(self.files, self.labels, self.probs, strict=True):
                writer.writerow([name, int(y), f"{p:.6f}"])
        save_curve_plots({self.title or "model": (self.labels, self.probs)}, self.output_dir, title=self.title)
