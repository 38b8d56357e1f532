"""The evaluation suite: one synthetic set vs one real reference set -> ``metrics.json``, CSVs and PNG plots.

Streaming design: every volume is read once per set. On the way through, the suite accumulates the linear-MMD sums and
the HU histograms, keeps the three centre slices (PSNR), batches volumes through the feature networks (only the
``(N, F)`` features are kept; slice-wise networks' features go into running mean/covariance), and, when MS-SSIM or
the memorisation audit need pairs of volumes, writes the windowed volume to a float32 memory-mapped cache in a
temporary folder (deleted at the end) instead of holding the set in memory.

Preprocessing (recorded in ``metrics.json``): volumes are read in HU, clipped to ``window`` and scaled to ``[0, 1]``;
with ``resize_to`` they are then resized with :class:`monai.transforms.Resize` (trilinear, anti-aliased when
shrinking). Voxel metrics (MMD, MS-SSIM, PSNR, memorisation NCC) need all volumes on one grid: give ``resize_to`` when
shapes differ. Histograms are computed in HU on each volume's own grid. Feature networks get the input each expects:
``f3d`` / ``inception2d`` the ``[0, 1]`` volume, ``medicalnet3d`` ``2 x - 1`` (HA-GAN's ``[-1, 1]``),
``radimagenet25d`` the windowed volume back in HU (it clips to [-1000, 1000] and min-max normalises itself).

Metric names (``metrics=``): see :data:`METRICS`. Default: everything that needs no weights file (``f3d``,
``mmd_linear``, ``mmd_gaussian``, ``msssim``, ``psnr``, ``histogram``, ``prdc``, ``memorisation``, and ``masks`` when
label folders are given), plus each pretrained-network metric whose weights are in ``feature_weights`` (or all of them
with ``allow_random_weights``; their numbers are then flagged). Exact protocols: ``docs/metrics.md``.
"""

from __future__ import annotations

import csv
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ctsynth.data.io import is_nifti_file, load_volume, nifti_stem, spacing_from_affine, write_json_atomic
from ctsynth.metrics.histograms import (
    HU_BANDS,
    band_peaks,
    body_mask,
    histogram_bin_edges,
    histogram_intersection,
    histogram_wasserstein,
    hu_histogram,
    plot_histogram_overlay,
)
from ctsynth.metrics.inception_score import hagan_raw_feature_score
from ctsynth.metrics.masks import compare_label_volumes, label_volumes_ml, paired_mask_scores
from ctsynth.metrics.memorisation import memorisation_audit
from ctsynth.metrics.mmd import LinearMMDAccumulator, gaussian_mmd
from ctsynth.metrics.msssim import pairwise_msssim, select_msssim_config
from ctsynth.metrics.prdc import prdc
from ctsynth.metrics.psnr import PLANES, centre_slices, slicewise_psnr

__all__ = ["DEFAULT_EXCLUDE_PATTERN", "METRICS", "EvaluationSuite", "evaluate", "list_volumes"]

# metric name -> feature extractor it is a Frechet distance on (None: not a Frechet metric).
FRECHET_METRICS = {
    "f3d": "f3d",
    "fid3d_medicalnet": "medicalnet3d",
    "fid25d_radimagenet": "radimagenet25d",
    "fid2d_slices": "inception2d",
}
METRICS = (
    *FRECHET_METRICS,
    "mmd_linear",
    "mmd_gaussian",
    "msssim",
    "psnr",
    "histogram",
    "is",
    "prdc",
    "memorisation",
    "masks",
)
PRETRAINED = {"medicalnet3d", "radimagenet25d", "inception2d"}
# metrics computed on one (N, F) volume-level feature set: MedicalNet when loaded (HA-GAN protocol), else F3D.
VOLUME_FEATURE_METRICS = {"mmd_gaussian", "prdc", "memorisation", "is"}
# file names excluded from image folders: label maps written next to the images.
DEFAULT_EXCLUDE_PATTERN = r"(^|[_.-])(label|labels|mask|masks|seg)([_.-]|$)"


def list_volumes(source: str | os.PathLike, exclude_pattern: str | None = DEFAULT_EXCLUDE_PATTERN) -> list[Path]:
    """NIfTI files of a folder (sorted; hidden and label-like names excluded), or the image entries of a datalist JSON.

    Args:
        source: a folder of ``.nii``/``.nii.gz`` files; a datalist / MSD ``dataset.json`` file; or a folder holding
            no NIfTI files but a ``datalist.json`` / ``dataset.json``.
        exclude_pattern: regex searched in each file stem; matching files are skipped (folders only).

    Raises:
        FileNotFoundError: when the source does not exist or lists a missing file.
        ValueError: when it holds no volumes.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src}: not found")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if is_nifti_file(p))
        if exclude_pattern:
            files = [p for p in files if not re.search(exclude_pattern, nifti_stem(p), flags=re.IGNORECASE)]
        if files:
            return files
        if not any((src / n).is_file() for n in ("datalist.json", "dataset.json")):
            raise ValueError(f"{src}: no NIfTI volumes (.nii/.nii.gz) and no datalist.json/dataset.json found")
    return [Path(e["image"]) for e in _datalist_entries(src)]


def _datalist_entries(path: Path) -> list[dict[str, Any]]:
    from ctsynth.data.datalist import load_datalist

    data = load_datalist(path)
    entries = [e for key in ("training", "validation", "testing") for e in data.get(key, []) if isinstance(e, dict)]
    entries = [e for e in entries if "image" in e]
    if not entries:
        raise ValueError(f"{path}: the datalist has no 'image' entries in training/validation/testing")
    missing = [e["image"] for e in entries if not Path(e["image"]).exists()]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
    return entries


def _datalist_labels(source: Path) -> list[Path] | None:
    if source.is_dir() and any(is_nifti_file(p) for p in source.iterdir()):
        return None
    labels = [Path(e["label"]) for e in _datalist_entries(source) if e.get("label")]
    return labels or None


def _versions() -> dict[str, str]:
    import monai
    import scipy

    try:
        from importlib.metadata import version

        ctsynth_version = version("ctsynth")
    except Exception:  # not installed as a distribution (source checkout)
        ctsynth_version = "unknown"
    return {
        "ctsynth": ctsynth_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in _jsonable(row).items()})
    return path


def _pca_plot(path: Path, real: np.ndarray, syn: np.ndarray, title: str) -> Path:
    """2-D PCA (numpy SVD of the pooled, centred features) scatter of real vs synthetic features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = np.concatenate([real, syn]).astype(np.float64)
    centred = pooled - pooled.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    explained = (s[:2] ** 2) / max((s**2).sum(), 1e-300)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(proj[: len(real), 0], proj[: len(real), 1], s=12, alpha=0.7, label=f"real (n={len(real)})")
    ax.scatter(proj[len(real) :, 0], proj[len(real) :, 1], s=12, alpha=0.7, label=f"synthetic (n={len(syn)})")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class _SetState:
    """What the suite keeps about one set while streaming it."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.hist_counts: list[np.ndarray] = []
        self.hist_out_of_range: list[float] = []
        self.slices: dict[str, list[np.ndarray]] = {p: [] for p in PLANES}
        self.features: dict[str, list[np.ndarray]] = {}
        self.plane_stats: dict[str, dict[str, Any]] = {}
        self.cache: np.memmap | None = None
        self.shape: tuple[int, ...] | None = None


class EvaluationSuite:
    """Evaluate a synthetic set against a real reference set (see the module docstring); ``run()`` does the work.

    Instantiable from a bundle config: ``{"_target_": "ctsynth.metrics.suite.EvaluationSuite", ...}``, then
    ``"$@evaluator.run()"``.

    Args:
        real: folder of NIfTI volumes or a datalist JSON (its training/validation/testing image entries).
        synthetic: folder of NIfTI volumes.
        out: output folder (created).
        metrics: metric names (list or comma-separated string; see :data:`METRICS`); None: the default suite.
        real_label_dir: folder of real label maps (default: the datalist's labels, if any) for ``masks``.
        synthetic_label_dir: folder of synthetic label maps for ``masks``.
        synthetic_reference_label_dir: label maps matched by file name with ``synthetic_label_dir`` (e.g. a segmenter's
            output on the synthetic images) for paired Dice / HD95.
        window: HU window mapped to ``[0, 1]`` for the voxel and feature metrics.
        feature_weights: extractor name -> weights file (``medicalnet3d``, ``radimagenet25d``, ``inception2d``).
        allow_random_weights: run pretrained-network metrics with random weights (smoke tests; flagged in the JSON).
        batch_size: volumes per feature-network batch.
        device: torch device of the feature networks.
        max_volumes: cap per set; a seeded random subset is drawn when a set is larger.
        resize_to: common spatial size, e.g. ``(64, 64, 64)``.
        seed: seed of subsets and pair sampling.
        hist_range: HU range of the histograms.
        hist_bin_width: histogram bin width in HU.
        hist_body_mask: count only voxels inside :func:`~ctsynth.metrics.histograms.body_mask`.
        msssim_max_pairs: cap on MS-SSIM pairs per set (seeded subset).
        psnr_pairing: ``"all"`` or ``"random"`` (see :mod:`ctsynth.metrics.psnr`).
        prdc_k: k of PRDC.
        ncc_threshold: memorisation voxel-NCC threshold.
        ratio_threshold: memorisation feature-distance-ratio threshold.
        extractor_kwargs: extractor name -> extra options for ``get_feature_extractor``.
        exclude_pattern: regex of file stems skipped in image folders (label maps).
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        real: str | os.PathLike,
        synthetic: str | os.PathLike,
        out: str | os.PathLike,
        metrics: Sequence[str] | str | None = None,
        real_label_dir: str | os.PathLike | None = None,
        synthetic_label_dir: str | os.PathLike | None = None,
        synthetic_reference_label_dir: str | os.PathLike | None = None,
        window: Sequence[float] = (-1024.0, 2000.0),
        feature_weights: dict[str, str] | None = None,
        allow_random_weights: bool = False,
        batch_size: int = 8,
        device: str = "cpu",
        max_volumes: int | None = None,
        resize_to: Sequence[int] | int | None = None,
        seed: int = 0,
        hist_range: Sequence[float] = (-1024.0, 2000.0),
        hist_bin_width: float = 8.0,
        hist_body_mask: bool = False,
        msssim_max_pairs: int | None = 300,
        psnr_pairing: str = "all",
        prdc_k: int = 5,
        ncc_threshold: float = 0.95,
        ratio_threshold: float = 0.2,
        extractor_kwargs: dict[str, dict[str, Any]] | None = None,
        exclude_pattern: str | None = DEFAULT_EXCLUDE_PATTERN,
        progress: bool = True,
    ) -> None:
        self.real, self.synthetic, self.out = Path(real), Path(synthetic), Path(out)
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        self.requested = None if metrics is None else list(metrics)
        self.real_label_dir = None if real_label_dir is None else Path(real_label_dir)
        self.synthetic_label_dir = None if synthetic_label_dir is None else Path(synthetic_label_dir)
        self.synthetic_reference_label_dir = (
            None if synthetic_reference_label_dir is None else Path(synthetic_reference_label_dir)
        )
        self.window = (float(window[0]), float(window[1]))
        if not self.window[1] > self.window[0]:
            raise ValueError(f"window must be (low, high) with high > low, got {tuple(window)}.")
        self.feature_weights = dict(feature_weights or {})
        self.allow_random_weights = bool(allow_random_weights)
        self.batch_size, self.device, self.max_volumes, self.seed = int(batch_size), device, max_volumes, int(seed)
        if isinstance(resize_to, int):
            resize_to = (resize_to,) * 3
        self.resize_to = None if resize_to is None else tuple(int(s) for s in resize_to)
        self.hist_edges = histogram_bin_edges(tuple(hist_range), hist_bin_width)
        self.hist_body_mask = bool(hist_body_mask)
        self.msssim_max_pairs, self.psnr_pairing, self.prdc_k = msssim_max_pairs, psnr_pairing, int(prdc_k)
        self.ncc_threshold, self.ratio_threshold = float(ncc_threshold), float(ratio_threshold)
        self.extractor_kwargs = dict(extractor_kwargs or {})
        self.exclude_pattern, self.progress = exclude_pattern, progress

    # ----------------------------------------------------------------------------------------------- planning
    def _select_metrics(self) -> list[str]:
        has_labels = self.synthetic_label_dir is not None
        if self.requested is None:
            chosen = ["f3d", "mmd_linear", "mmd_gaussian", "msssim", "psnr", "histogram", "prdc", "memorisation"]
            for metric, name in FRECHET_METRICS.items():
                if name in PRETRAINED and (name in self.feature_weights or self.allow_random_weights):
                    chosen.append(metric)
            if "medicalnet3d" in self.feature_weights:
                chosen.append("is")
            if has_labels:
                chosen.append("masks")
            return chosen
        unknown = [m for m in self.requested if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}.")
        if "masks" in self.requested and not has_labels:
            raise ValueError("metric 'masks' needs synthetic_label_dir (and real labels for the volume comparison).")
        return list(dict.fromkeys(self.requested))

    def _volume_feature_name(self, metrics: list[str]) -> str | None:
        if not VOLUME_FEATURE_METRICS & set(metrics):
            return None
        if "fid3d_medicalnet" in metrics or "medicalnet3d" in self.feature_weights:
            return "medicalnet3d"
        return "f3d"

    def _build_extractors(self, metrics: list[str]) -> dict[str, Any]:
        from ctsynth.metrics.features import get_feature_extractor

        names = [FRECHET_METRICS[m] for m in metrics if m in FRECHET_METRICS]
        vol_name = self._volume_feature_name(metrics)
        if vol_name is not None and vol_name not in names:
            names.append(vol_name)
        extractors = {}
        for name in names:
            kw = {"batch_size": self.batch_size, **self.extractor_kwargs.get(name, {})}
            if name in PRETRAINED:
                kw["allow_random_weights"] = self.allow_random_weights
            if name == "radimagenet25d":
                kw.setdefault("hu_window", (-1000.0, 1000.0))
            extractors[name] = get_feature_extractor(
                name, weights=self.feature_weights.get(name), device=self.device, **kw
            )
        return extractors

    def _subset(self, files: list[Path]) -> list[Path]:
        if self.max_volumes is None or len(files) <= self.max_volumes:
            return files
        pick = np.sort(np.random.default_rng(self.seed).choice(len(files), size=int(self.max_volumes), replace=False))
        return [files[i] for i in pick]

    def _check_shapes(self, files: list[Path], what: str) -> tuple[int, ...]:
        import nibabel as nib

        shape = None
        for f in files:
            try:
                s = tuple(nib.load(str(f)).shape)
            except Exception as e:  # nibabel raises several types for corrupt files
                raise ValueError(f"{f}: cannot be read as NIfTI ({type(e).__name__}: {e})") from e
            if len(s) != 3:
                raise ValueError(f"{f}: expected a 3D volume, got shape {s}.")
            if self.resize_to is None and shape is not None and s != shape:
                raise ValueError(
                    f"{f}: shape {s} differs from {shape} of the other {what} volumes; pass resize_to=(D, H, W)."
                )
            shape = shape or s
        return self.resize_to or shape

    # ------------------------------------------------------------------------------------------------ streaming
    def _windowed(self, hu: np.ndarray) -> torch.Tensor:
        lo, hi = self.window
        x = torch.from_numpy(np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0))[None]
        if self.resize_to is not None and tuple(x.shape[1:]) != self.resize_to:
            from monai.transforms import Resize

            x = torch.as_tensor(Resize(self.resize_to, mode="trilinear", anti_aliasing=True)(x)).clamp_(0.0, 1.0)
        return x  # (1, D, H, W)

    def _extractor_input(self, name: str, batch: torch.Tensor) -> torch.Tensor:
        if name == "medicalnet3d":
            return batch * 2.0 - 1.0
        if name == "radimagenet25d":
            lo, hi = self.window
            return batch * (hi - lo) + lo
        return batch

    def _run_features(self, state: _SetState, extractors: dict[str, Any], batch: list[torch.Tensor]) -> None:
        from ctsynth.metrics.frechet import RunningFeatureStats

        x = torch.stack(batch)  # (B, 1, D, H, W)
        for name, ext in extractors.items():
            feats = ext(self._extractor_input(name, x))
            if isinstance(feats, dict):
                for plane, f in feats.items():
                    state.plane_stats.setdefault(name, {}).setdefault(plane, RunningFeatureStats()).update(f)
            else:
                state.features.setdefault(name, []).append(np.asarray(feats, dtype=np.float32))

    def _stream(
        self, state: _SetState, what: str, metrics: list[str], extractors: dict[str, Any], mmd: LinearMMDAccumulator
    ) -> None:
        need_cache = bool({"msssim", "memorisation"} & set(metrics))
        batch: list[torch.Tensor] = []
        for i, f in enumerate(tqdm(state.files, desc=f"{what} volumes", disable=not self.progress)):
            hu, _ = load_volume(f, dtype=np.float32)
            if "histogram" in metrics:
                mask = body_mask(hu) if self.hist_body_mask else None
                counts, out = hu_histogram(hu, self.hist_edges, mask=mask)
                state.hist_counts.append(counts)
                state.hist_out_of_range.append(out)
            x = self._windowed(hu)
            if need_cache:
                state.cache[i] = x[0].numpy()
            if "mmd_linear" in metrics:
                mmd.update(x[None], real=what == "real")
            if "psnr" in metrics:
                for plane, s in centre_slices(x[0].numpy()).items():
                    state.slices[plane].append(s)
            if extractors:
                batch.append(x)
                if len(batch) == self.batch_size:
                    self._run_features(state, extractors, batch)
                    batch = []
        if batch:
            self._run_features(state, extractors, batch)
        if need_cache:
            state.cache.flush()

    # ------------------------------------------------------------------------------------------------- running
    def run(self) -> Path:
        """Compute the selected metrics and write the outputs.

        Returns:
            Path of ``metrics.json``.

        Raises:
            FileNotFoundError / ValueError: on bad inputs, before anything is written.
        """
        t_start = time.perf_counter()
        metrics = self._select_metrics()
        real = _SetState(self._subset(list_volumes(self.real, self.exclude_pattern)))
        syn = _SetState(self._subset(list_volumes(self.synthetic, self.exclude_pattern)))
        for state, what in ((real, "real"), (syn, "synthetic")):
            if len(state.files) < 2:
                raise ValueError(f"{what} set needs at least 2 volumes, found {len(state.files)}.")
            state.shape = self._check_shapes(state.files, what)
        if real.shape != syn.shape and any(m not in ("histogram", "masks") for m in metrics):
            raise ValueError(f"real volumes are {real.shape} but synthetic are {syn.shape}; pass resize_to=(D, H, W).")
        mask_sets = self._mask_sets(metrics)
        extractors = self._build_extractors(metrics)
        self.out.mkdir(parents=True, exist_ok=True)

        timings: dict[str, float] = {}
        results: dict[str, Any] = {}
        csv_files: dict[str, str] = {}
        plots: dict[str, str] = {}
        mmd = LinearMMDAccumulator()
        with tempfile.TemporaryDirectory(prefix="ctsynth-eval-") as tmp:
            if {"msssim", "memorisation"} & set(metrics):
                for state, what in ((real, "real"), (syn, "synthetic")):
                    state.cache = np.lib.format.open_memmap(
                        Path(tmp) / f"{what}.npy", mode="w+", dtype=np.float32, shape=(len(state.files), *state.shape)
                    )
            t0 = time.perf_counter()
            self._stream(real, "real", metrics, extractors, mmd)
            self._stream(syn, "synthetic", metrics, extractors, mmd)
            timings["streaming"] = time.perf_counter() - t0
            for metric in metrics:
                t0 = time.perf_counter()
                res, rows, plot = self._compute(metric, real, syn, mmd, extractors, mask_sets)
                timings[metric] = time.perf_counter() - t0
                results[metric] = res
                if rows:
                    csv_files[metric] = _write_csv(self.out / f"{metric}.csv", rows).name
                plots.update(plot)
        if "f3d" in real.features or "medicalnet3d" in real.features:
            name = "medicalnet3d" if "medicalnet3d" in real.features else "f3d"
            r, s = np.concatenate(real.features[name]), np.concatenate(syn.features[name])
            plots[f"embedding_{name}"] = _pca_plot(
                self.out / f"embedding_{name}.png", r, s, f"PCA of {name} features"
            ).name
        timings["total"] = time.perf_counter() - t_start
        random_used = {n: e.note for n, e in extractors.items() if getattr(e, "note", None)}
        report = {
            "versions": _versions(),
            "real": str(self.real),
            "synthetic": str(self.synthetic),
            "n_real": len(real.files),
            "n_synthetic": len(syn.files),
            "volume_shape": list(real.shape) if real.shape else None,
            "preprocessing": {
                "window_hu": list(self.window),
                "scaled_to": [0.0, 1.0],
                "resize_to": None if self.resize_to is None else list(self.resize_to),
                "resize": "monai.transforms.Resize(mode='trilinear', anti_aliasing=True) after windowing",
                "seed": self.seed,
                "max_volumes": self.max_volumes,
            },
            "random_weights_used": bool(random_used),
            "random_weights_notes": random_used,
            "feature_extractors": {n: (e.describe() if hasattr(e, "describe") else n) for n, e in extractors.items()},
            "metrics": results,
            "csv": csv_files,
            "plots": plots,
            "timings_s": timings,
        }
        return write_json_atomic(_jsonable(report), self.out / "metrics.json")

    def _mask_sets(self, metrics: list[str]) -> dict[str, list[Path]] | None:
        if "masks" not in metrics:
            return None
        sets: dict[str, list[Path]] = {"synthetic": list_volumes(self.synthetic_label_dir, exclude_pattern=None)}
        if self.real_label_dir is not None:
            sets["real"] = list_volumes(self.real_label_dir, exclude_pattern=None)
        else:
            sets["real"] = _datalist_labels(self.real) or []
        if self.synthetic_reference_label_dir is not None:
            sets["reference"] = list_volumes(self.synthetic_reference_label_dir, exclude_pattern=None)
        return sets

    # --------------------------------------------------------------------------------------------- per metric
    def _compute(
        self,
        metric: str,
        real: _SetState,
        syn: _SetState,
        mmd: LinearMMDAccumulator,
        extractors: dict[str, Any],
        mask_sets: dict[str, list[Path]] | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        if metric in FRECHET_METRICS:
            return self._frechet(metric, real, syn, extractors)
        return getattr(self, f"_m_{metric}")(real, syn, mmd, mask_sets)

    def _frechet(self, metric: str, real: _SetState, syn: _SetState, extractors: dict[str, Any]):
        from ctsynth.metrics.frechet import frechet_distance

        name = FRECHET_METRICS[metric]
        ext = extractors[name]
        protocol = {
            "definition": "Frechet distance ||mu_r - mu_s||^2 + Tr(C_r + C_s - 2 (C_r C_s)^1/2) of feature Gaussians",
            "features": name,
            "extractor": ext.describe() if hasattr(ext, "describe") else name,
            "note": getattr(ext, "note", None),
        }
        if name in real.plane_stats:
            per_plane = {
                plane: real.plane_stats[name][plane].frechet_distance(syn.plane_stats[name][plane])
                for plane in real.plane_stats[name]
            }
            value = float(np.mean(list(per_plane.values())))
            rows = [{"plane": p, "frechet_distance": v} for p, v in per_plane.items()] + [
                {"plane": "mean", "frechet_distance": value}
            ]
            return {"value": value, "per_plane": per_plane, "protocol": protocol}, rows, {}
        r, s = np.concatenate(real.features[name]), np.concatenate(syn.features[name])
        value = frechet_distance(r, s)
        return {"value": value, "protocol": protocol}, [{"metric": metric, "value": value}], {}

    def _volume_features(self, real: _SetState, syn: _SetState) -> tuple[str, np.ndarray, np.ndarray]:
        name = "medicalnet3d" if "medicalnet3d" in real.features else "f3d"
        return name, np.concatenate(real.features[name]), np.concatenate(syn.features[name])

    def _m_mmd_linear(self, real, syn, mmd, _masks):
        value = mmd.compute()
        protocol = {
            "definition": "unbiased MMD^2, linear kernel <x, y> on flattened voxels (monai.metrics.MMDMetric "
            "estimator), from running sums",
            "input": f"HU clipped to {list(self.window)} and scaled to [0, 1]",
            "reproduces": "3DGAUnet Table 2 (MMD^2), kernel inferred from the magnitudes",
        }
        return {"value": value, "protocol": protocol}, [{"metric": "mmd_linear", "value": value}], {}

    def _m_mmd_gaussian(self, real, syn, _mmd, _masks):
        name, r, s = self._volume_features(real, syn)
        out = {key: gaussian_mmd(r, s, unbiased=key == "unbiased") for key in ("unbiased", "biased")}
        protocol = {
            "definition": "MMD^2, Gaussian kernel exp(-||a-b||^2 / (2 sigma^2)), sigma = median pairwise distance of "
            "the pooled features; 'value' is the unbiased U-statistic, 'biased' the V-statistic",
            "features": name,
            "reproduces": "HA-GAN MMD (Med3D features, median bandwidth) when features = medicalnet3d",
        }
        res = {
            "value": out["unbiased"]["mmd2"],
            "biased": out["biased"]["mmd2"],
            "bandwidth": out["unbiased"]["bandwidth"],
        }
        return {**res, "protocol": protocol}, [{"metric": "mmd_gaussian", "features": name, **res}], {}

    def _m_msssim(self, real, syn, _mmd, _masks):
        cfg = select_msssim_config(syn.shape)
        res, rows = {}, []
        for state, what in ((syn, "synthetic"), (real, "real")):
            cache = state.cache

            def load(idx, cache=cache):
                return torch.from_numpy(np.asarray(cache[idx]))[:, None]

            out = pairwise_msssim(
                load,
                n=len(state.files),
                spatial_shape=state.shape,
                max_pairs=self.msssim_max_pairs,
                seed=self.seed,
                config=cfg,
            )
            res[what] = {"mean": out["mean"], "std": out["std"], "n_pairs": out["n_pairs"]}
            for (i, j), v in zip(out["pairs"], out["values"], strict=True):
                rows.append({"set": what, "file_a": state.files[i].name, "file_b": state.files[j].name, "msssim": v})
        protocol = {
            "definition": "mean 3D MS-SSIM over pairs of samples of one set (lower = more diverse); "
            f"all pairs or a seeded subset of {self.msssim_max_pairs}",
            "config": cfg.as_dict(),
            "input": "windowed [0, 1] volumes, data_range 1",
            "reproduces": "3DGAUnet Table 2 (MS-SSIM, synthetic set); the real-set value is the reference",
        }
        return (
            {"value": res["synthetic"]["mean"], "real_reference": res["real"]["mean"], **res, "protocol": protocol},
            rows,
            {},
        )

    def _m_psnr(self, real, syn, _mmd, _masks):
        r = {p: np.stack(v) for p, v in real.slices.items()}
        s = {p: np.stack(v) for p, v in syn.slices.items()}
        out = slicewise_psnr(r, s, data_range=1.0, pairing=self.psnr_pairing, seed=self.seed)
        rows = []
        for j, f in enumerate(syn.files):
            row = {"file": f.name}
            for plane, o in out.items():
                vals = o["values"][o["pairs"][:, 1] == j]
                vals = vals[np.isfinite(vals)]
                row[f"psnr_{plane}"] = float(vals.mean()) if vals.size else float("nan")
            rows.append(row)
        protocol = {
            "definition": "PSNR = 10 log10(1 / MSE) between real and synthetic centre slices per plane "
            f"(sagittal x=X//2, coronal y=Y//2, axial z=Z//2), pairing '{self.psnr_pairing}'; identical pairs "
            "(infinite PSNR) are left out of the mean",
            "input": f"HU clipped to {list(self.window)} and scaled to [0, 1]; data_range 1",
            "reproduces": "3DGAUnet Table 1 (PSNR-Sag/Ax/Cor)",
        }
        res = {p: {"mean": o["mean"], "std": o["std"], "n_pairs": o["n_pairs"]} for p, o in out.items()}
        return {"value": float(np.mean([o["mean"] for o in out.values()])), **res, "protocol": protocol}, rows, {}

    def _m_histogram(self, real, syn, _mmd, _masks):
        edges = self.hist_edges
        centres = (edges[:-1] + edges[1:]) / 2
        rc = np.stack(real.hist_counts).astype(np.float64)
        sc = np.stack(syn.hist_counts).astype(np.float64)
        real_mean = (rc / np.maximum(rc.sum(1, keepdims=True), 1)).mean(axis=0)
        w1 = np.atleast_1d(histogram_wasserstein(sc, real_mean, centres))
        inter = np.atleast_1d(histogram_intersection(sc, real_mean))
        real_peaks = band_peaks(real_mean, centres)
        rows = []
        for j, f in enumerate(syn.files):
            peaks = band_peaks(sc[j], centres)
            row = {"file": f.name, "wasserstein_hu": float(w1[j]), "intersection": float(inter[j])}
            row["out_of_range_fraction"] = syn.hist_out_of_range[j]
            for band, hu in peaks.items():
                row[f"peak_{band}_hu"] = hu
                row[f"peak_{band}_shift_hu"] = hu - real_peaks[band]
            rows.append(row)
        plot = plot_histogram_overlay(self.out / "histogram_overlay.png", centres, real_mean, sc, title="HU histograms")
        np.savez_compressed(self.out / "histograms.npz", edges=edges, real_mean=real_mean, synthetic_counts=sc)
        syn_mean = (sc / np.maximum(sc.sum(1, keepdims=True), 1)).mean(axis=0)
        protocol = {
            "definition": "per-volume normalised HU histograms; real reference = mean of the real histograms; "
            "Wasserstein-1 (HU, mass at bin centres) and intersection sum(min) of each synthetic histogram vs it; "
            "peak = HU of the largest bin inside each band",
            "bins": {"range_hu": [float(edges[0]), float(edges[-1])], "width_hu": float(edges[1] - edges[0])},
            "bands_hu": HU_BANDS,
            "mask": "ctsynth.transforms.body_mask (HU > -500, holes filled per slice, largest component)"
            if self.hist_body_mask
            else None,
            "reproduces": "LDM thesis histograms (visual there; numbers are our addition)",
        }
        res = {
            "value": float(w1.mean()),
            "wasserstein_hu_mean": float(w1.mean()),
            "wasserstein_hu_std": float(w1.std()),
            "intersection_mean": float(inter.mean()),
            "wasserstein_hu_of_mean_histogram": histogram_wasserstein(syn_mean, real_mean, centres),
            "real_peaks_hu": real_peaks,
            "synthetic_mean_peaks_hu": band_peaks(syn_mean, centres),
            "out_of_range_fraction_real_mean": float(np.mean(real.hist_out_of_range)),
            "out_of_range_fraction_synthetic_mean": float(np.mean(syn.hist_out_of_range)),
        }
        return {**res, "protocol": protocol}, rows, {"histogram_overlay": plot.name}

    def _m_is(self, real, syn, _mmd, _masks):
        name, _, s = self._volume_features(real, syn)
        value = hagan_raw_feature_score(np.clip(s, 0.0, None))
        protocol = {
            "definition": "NON-STANDARD HA-GAN thesis 'IS': exp(mean_i sum_c f_ic (log(f_ic+1e-16) - log(mean_j f_jc "
            "+ 1e-16))) on raw pooled activations of the synthetic volumes (no softmax, no splits); comparable only "
            "with the thesis tables. The standard softmax IS needs classifier logits "
            "(ctsynth.metrics.inception_score.inception_score).",
            "features": name,
        }
        return {"value": value, "standard": False, "protocol": protocol}, [{"metric": "is_hagan", "value": value}], {}

    def _m_prdc(self, real, syn, _mmd, _masks):
        name, r, s = self._volume_features(real, syn)
        k = min(self.prdc_k, len(r) - 1, len(s) - 1)
        out = prdc(r, s, k=k)
        protocol = {
            "definition": "k-NN precision/recall (Kynkaanniemi 2019), density/coverage (Naeem 2020), Euclidean, "
            "strict inequalities as the prdc package",
            "features": name,
            "k": k,
        }
        return {"value": out["precision"], **out, "protocol": protocol}, [{"features": name, **out}], {}

    def _m_memorisation(self, real, syn, _mmd, _masks):
        name, r, s = self._volume_features(real, syn)
        out = memorisation_audit(
            s,
            r,
            lambda idx: syn.cache[idx],
            len(syn.files),
            lambda idx: real.cache[idx],
            len(real.files),
            ncc_threshold=self.ncc_threshold,
            ratio_threshold=self.ratio_threshold,
            chunk_size=max(self.batch_size, 16),
        )
        rows = []
        ps = out["per_sample"]
        for j, f in enumerate(syn.files):
            row = {"file": f.name}
            for key, col in ps.items():
                v = col[j]
                row[key] = real.files[int(v)].name if key.endswith("_index") else v
            rows.append(row)
        protocol = {
            **out["protocol"],
            "features": name,
            "voxel": "max Pearson correlation over voxels of windowed [0, 1] volumes, over the real (training) set",
            "training_set": "the real set given to evaluate()",
        }
        res = {"value": out["summary"]["fraction_likely_copies"], **out["summary"]}
        res["likely_copies"] = [syn.files[i].name for i in out["likely_copies"]]
        return {**res, "protocol": protocol}, rows, {}

    def _m_masks(self, real, syn, _mmd, mask_sets):
        rows, vols = [], {"real": [], "synthetic": []}
        labels: set[int] = set()
        loaded: dict[str, list[tuple[Path, np.ndarray, tuple[float, float, float]]]] = {}
        for what in ("real", "synthetic"):
            loaded[what] = []
            for f in mask_sets[what]:
                m, affine = load_volume(f)
                m = np.asarray(m).astype(np.int64)
                labels |= {int(v) for v in np.unique(m) if v > 0}
                loaded[what].append((f, m, spacing_from_affine(affine)))
        label_list = sorted(labels) or [1]
        for what, items in loaded.items():
            for f, m, spacing in items:
                v = label_volumes_ml(m, spacing, label_list)
                vols[what].append(v)
                rows.append({"set": what, "file": f.name, **{f"label{lab}_ml": ml for lab, ml in v.items()}})
        res: dict[str, Any] = {
            "labels": label_list,
            "n_real_masks": len(vols["real"]),
            "n_synthetic_masks": len(vols["synthetic"]),
        }
        res["label_volumes"] = compare_label_volumes(vols["real"], vols["synthetic"], label_list)
        res["synthetic_empty_fraction"] = float(np.mean([all(v == 0 for v in d.values()) for d in vols["synthetic"]]))
        if "reference" in mask_sets:
            refs = {nifti_stem(p): p for p in mask_sets["reference"]}
            paired = []
            for f, m, spacing in loaded["synthetic"]:
                if nifti_stem(f) not in refs:
                    continue
                ref, _ = load_volume(refs[nifti_stem(f)])
                scores = paired_mask_scores(m, np.asarray(ref).astype(np.int64), label_list, spacing)
                paired.append(scores)
                rows.append(
                    {"set": "paired", "file": f.name}
                    | {f"label{lab}_{k}": v for lab, sc in scores.items() for k, v in sc.items()}
                )
            res["paired"] = {
                lab: {
                    k: float(np.nanmean([p[lab][k] for p in paired if np.isfinite(p[lab][k])] or [np.nan]))
                    for k in ("dice", "hd95")
                }
                for lab in label_list
            }
            res["n_paired"] = len(paired)
        protocol = {
            "definition": "label volumes in mL (voxel count x voxel volume from the affine); KS statistic and "
            "Wasserstein-1 (mL) real vs synthetic per label; fraction of empty masks; paired Dice / HD95 (mm, "
            "95th percentile, MONAI) against reference masks matched by file name when given",
        }
        first = res["label_volumes"][label_list[0]]
        return {"value": first["ks"], **res, "protocol": protocol}, rows, {}


def evaluate(
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    out: str | os.PathLike,
    metrics: Sequence[str] | str | None = None,
    **kwargs: Any,
) -> Path:
    """Evaluate a synthetic set against a real reference set (``ctsynth evaluate``); see :class:`EvaluationSuite`.

    Args:
        real: folder of NIfTI volumes or a datalist JSON.
        synthetic: folder of NIfTI volumes.
        out: output folder.
        metrics: metric names or None for the default suite.
        kwargs: the other options of :class:`EvaluationSuite` (``real_label_dir``, ``synthetic_label_dir``,
            ``window``, ``feature_weights``, ``allow_random_weights``, ``batch_size``, ``device``, ``max_volumes``,
            ``resize_to``, ``seed``, ...).

    Returns:
        Path of ``metrics.json``.
    """
    return EvaluationSuite(real=real, synthetic=synthetic, out=out, metrics=metrics, **kwargs).run()
