"""The suite's own metrics, registered on :data:`~ctsynth.metrics.registry.DEFAULT_REGISTRY` (definitions and what
fools each one: ``docs/metrics.md``).

Each function maps a :class:`~ctsynth.metrics.registry.MetricContext` to a
:class:`~ctsynth.metrics.registry.MetricOutput`: its ``metrics.json`` entry (``value``, details, ``protocol``), its CSV
rows and its plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctsynth.data.io import load_volume, nifti_stem, spacing_from_affine
from ctsynth.metrics.histograms import (
    HU_BANDS,
    band_peaks,
    histogram_bin_edges,
    histogram_intersection,
    histogram_wasserstein,
    plot_histogram_overlay,
)
from ctsynth.metrics.inception_score import hagan_raw_feature_score
from ctsynth.metrics.masks import compare_label_volumes, label_volumes_ml, paired_mask_scores
from ctsynth.metrics.memorisation import memorisation_audit
from ctsynth.metrics.mmd import gaussian_mmd
from ctsynth.metrics.msssim import pairwise_msssim, select_msssim_config
from ctsynth.metrics.options import EvaluationOptions
from ctsynth.metrics.prdc import prdc
from ctsynth.metrics.psnr import slicewise_psnr
from ctsynth.metrics.registry import DEFAULT_REGISTRY, VOLUME_FEATURES, MetricContext, MetricOutput, MetricRegistry

__all__ = ["FRECHET_METRICS", "PRETRAINED", "register_builtin_metrics"]

# metric name -> feature extractor it is a Frechet distance on.
FRECHET_METRICS = {
    "f3d": "f3d",
    "fid3d_medicalnet": "medicalnet3d",
    "fid25d_radimagenet": "radimagenet25d",
    "fid2d_slices": "inception2d",
}
# extractors that should run with pretrained weights.
PRETRAINED = {"medicalnet3d", "radimagenet25d", "inception2d"}


def frechet_metric(ctx: MetricContext) -> MetricOutput:
    """Frechet distance of feature Gaussians (per plane and averaged for slice extractors)."""
    from ctsynth.metrics.frechet import frechet_distance

    metric, name = ctx.spec.name, ctx.feature_name()
    ext = ctx.extractors[name]
    protocol = {
        "definition": "Frechet distance ||mu_r - mu_s||^2 + Tr(C_r + C_s - 2 (C_r C_s)^1/2) of feature Gaussians",
        "features": name,
        "extractor": ext.describe() if hasattr(ext, "describe") else name,
        "note": getattr(ext, "note", None),
    }
    if name in ctx.real.plane_stats:
        real, syn = ctx.real.plane_stats[name], ctx.synthetic.plane_stats[name]
        per_plane = {plane: real[plane].frechet_distance(syn[plane]) for plane in real}
        value = float(np.mean(list(per_plane.values())))
        rows = [{"plane": p, "frechet_distance": v} for p, v in per_plane.items()]
        rows.append({"plane": "mean", "frechet_distance": value})
        return MetricOutput({"value": value, "per_plane": per_plane, "protocol": protocol}, rows)
    r, s = ctx.features(name)
    value = frechet_distance(r, s)
    return MetricOutput({"value": value, "protocol": protocol}, [{"metric": metric, "value": value}])


def mmd_linear_metric(ctx: MetricContext) -> MetricOutput:
    """Unbiased linear-kernel MMD^2 on voxels, from the running sums."""
    value = ctx.linear_mmd.compute()
    protocol = {
        "definition": "unbiased MMD^2, linear kernel <x, y> on flattened voxels (monai.metrics.MMDMetric "
        "estimator), from running sums",
        "input": f"HU clipped to {list(ctx.options.window)} and scaled to [0, 1]",
        "reproduces": "3DGAUnet Table 2 (MMD^2), kernel inferred from the magnitudes",
    }
    return MetricOutput({"value": value, "protocol": protocol}, [{"metric": "mmd_linear", "value": value}])


def mmd_gaussian_metric(ctx: MetricContext) -> MetricOutput:
    """Gaussian-kernel MMD^2 (median bandwidth) on the volume features."""
    name = ctx.feature_name()
    r, s = ctx.features(name)
    out = {key: gaussian_mmd(r, s, unbiased=key == "unbiased") for key in ("unbiased", "biased")}
    protocol = {
        "definition": "MMD^2, Gaussian kernel exp(-||a-b||^2 / (2 sigma^2)), sigma = median pairwise distance of "
        "the pooled features; 'value' is the unbiased U-statistic, 'biased' the V-statistic",
        "features": name,
        "reproduces": "HA-GAN MMD (Med3D features, median bandwidth) when features = medicalnet3d",
    }
    res = {"value": out["unbiased"]["mmd2"], "biased": out["biased"]["mmd2"], "bandwidth": out["unbiased"]["bandwidth"]}
    return MetricOutput({**res, "protocol": protocol}, [{"metric": "mmd_gaussian", "features": name, **res}])


def msssim_metric(ctx: MetricContext) -> MetricOutput:
    """Mean pairwise 3D MS-SSIM within each set (diversity)."""
    opts = ctx.options
    cfg = select_msssim_config(ctx.synthetic.shape)
    res, rows = {}, []
    for state, what in ((ctx.synthetic, "synthetic"), (ctx.real, "real")):
        cache = state.cache

        def load(idx, cache=cache):
            return torch.from_numpy(np.asarray(cache[idx]))[:, None]

        out = pairwise_msssim(
            load, n=len(state.files), spatial_shape=state.shape, max_pairs=opts.msssim_max_pairs, seed=opts.seed,
            config=cfg,
        )  # fmt: skip
        res[what] = {"mean": out["mean"], "std": out["std"], "n_pairs": out["n_pairs"]}
        for (i, j), v in zip(out["pairs"], out["values"], strict=True):
            rows.append({"set": what, "file_a": state.files[i].name, "file_b": state.files[j].name, "msssim": v})
    protocol = {
        "definition": "mean 3D MS-SSIM over pairs of samples of one set (lower = more diverse); "
        f"all pairs or a seeded subset of {opts.msssim_max_pairs}",
        "config": cfg.as_dict(),
        "input": "windowed [0, 1] volumes, data_range 1",
        "reproduces": "3DGAUnet Table 2 (MS-SSIM, synthetic set); the real-set value is the reference",
    }
    result = {"value": res["synthetic"]["mean"], "real_reference": res["real"]["mean"], **res, "protocol": protocol}
    return MetricOutput(result, rows)


def psnr_metric(ctx: MetricContext) -> MetricOutput:
    """Slice-wise PSNR of real vs synthetic centre slices per plane."""
    opts = ctx.options
    r = {p: np.stack(v) for p, v in ctx.real.slices.items()}
    s = {p: np.stack(v) for p, v in ctx.synthetic.slices.items()}
    out = slicewise_psnr(r, s, data_range=1.0, pairing=opts.psnr_pairing, seed=opts.seed)
    rows = []
    for j, f in enumerate(ctx.synthetic.files):
        row = {"file": f.name}
        for plane, o in out.items():
            vals = o["values"][o["pairs"][:, 1] == j]
            vals = vals[np.isfinite(vals)]
            row[f"psnr_{plane}"] = float(vals.mean()) if vals.size else float("nan")
        rows.append(row)
    protocol = {
        "definition": "PSNR = 10 log10(1 / MSE) between real and synthetic centre slices per plane "
        f"(sagittal x=X//2, coronal y=Y//2, axial z=Z//2), pairing '{opts.psnr_pairing}'; identical pairs "
        "(infinite PSNR) are left out of the mean",
        "input": f"HU clipped to {list(opts.window)} and scaled to [0, 1]; data_range 1",
        "reproduces": "3DGAUnet Table 1 (PSNR-Sag/Ax/Cor)",
    }
    res = {p: {"mean": o["mean"], "std": o["std"], "n_pairs": o["n_pairs"]} for p, o in out.items()}
    return MetricOutput({"value": float(np.mean([o["mean"] for o in out.values()])), **res, "protocol": protocol}, rows)


def histogram_metric(ctx: MetricContext) -> MetricOutput:
    """HU histogram distances of each synthetic volume to the mean real histogram, band peaks, overlay plot."""
    edges = histogram_bin_edges(tuple(ctx.options.hist_range), ctx.options.hist_bin_width)
    centres = (edges[:-1] + edges[1:]) / 2
    real, syn = ctx.real, ctx.synthetic
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
    plot = plot_histogram_overlay(ctx.out / "histogram_overlay.png", centres, real_mean, sc, title="HU histograms")
    np.savez_compressed(ctx.out / "histograms.npz", edges=edges, real_mean=real_mean, synthetic_counts=sc)
    syn_mean = (sc / np.maximum(sc.sum(1, keepdims=True), 1)).mean(axis=0)
    protocol = {
        "definition": "per-volume normalised HU histograms; real reference = mean of the real histograms; "
        "Wasserstein-1 (HU, mass at bin centres) and intersection sum(min) of each synthetic histogram vs it; "
        "peak = HU of the largest bin inside each band",
        "bins": {"range_hu": [float(edges[0]), float(edges[-1])], "width_hu": float(edges[1] - edges[0])},
        "bands_hu": HU_BANDS,
        "mask": "ctsynth.transforms.body_mask (HU > -500, holes filled per slice, largest component)"
        if ctx.options.hist_body_mask
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
    warnings = []
    if not ctx.options.hist_body_mask:
        warnings.append(
            "histogram: computed over the whole volume (hist_body_mask off): the distances mostly measure the air "
            "fraction of the field of view."
        )
    return MetricOutput({**res, "protocol": protocol, "warnings": warnings}, rows, {"histogram_overlay": plot.name})


def is_metric(ctx: MetricContext) -> MetricOutput:
    """The HA-GAN thesis's raw-feature 'IS' of the synthetic volume features (non-standard)."""
    name = ctx.feature_name()
    _, s = ctx.features(name)
    s = np.clip(s, 0.0, None)
    value = hagan_raw_feature_score(s)
    log_value = float(np.log(value)) if value > 0 and np.isfinite(value) else float("nan")
    protocol = {
        "definition": "NON-STANDARD HA-GAN thesis 'IS': exp(mean_i sum_c f_ic (log(f_ic+1e-16) - log(mean_j f_jc "
        "+ 1e-16))) on raw pooled activations of the synthetic volumes (no softmax, no splits); comparable only "
        "with the thesis tables. The standard softmax IS needs classifier logits "
        "(ctsynth.metrics.inception_score.inception_score).",
        "features": name,
        "scale": "not scale invariant: multiplying the features by a multiplies log(value) by a; the activation "
        "scale of the network sets the magnitude",
    }
    warnings = []
    if name != "medicalnet3d" or getattr(ctx.extractors.get(name), "note", None):
        warnings.append(
            f"is: computed on {name} features of a network without pretrained MedicalNet weights; the raw-feature "
            "score grows exponentially with the activation scale (log value "
            f"{log_value:.3g}), so its value is meaningless here."
        )
    result = {"value": value, "log_value": log_value, "standard": False, "protocol": protocol, "warnings": warnings}
    return MetricOutput(result, [{"metric": "is_hagan", "value": value}])


def prdc_metric(ctx: MetricContext) -> MetricOutput:
    """k-NN precision, recall, density and coverage on the volume features."""
    name = ctx.feature_name()
    r, s = ctx.features(name)
    k = min(ctx.options.prdc_k, len(r) - 1, len(s) - 1)
    out = prdc(r, s, k=k)
    protocol = {
        "definition": "k-NN precision/recall (Kynkaanniemi 2019), density/coverage (Naeem 2020), Euclidean, "
        "strict inequalities as the prdc package",
        "features": name,
        "k": k,
    }
    return MetricOutput({"value": out["precision"], **out, "protocol": protocol}, [{"features": name, **out}])


def memorisation_metric(ctx: MetricContext) -> MetricOutput:
    """Nearest training sample of each synthetic sample in feature and voxel space (shift-searched NCC)."""
    opts = ctx.options
    name = ctx.feature_name()
    r, s = ctx.features(name)
    real, syn = ctx.real, ctx.synthetic
    out = memorisation_audit(
        s,
        r,
        lambda idx: syn.cache[idx],
        len(syn.files),
        lambda idx: real.cache[idx],
        len(real.files),
        ncc_threshold=opts.ncc_threshold,
        ratio_threshold=opts.ratio_threshold,
        chunk_size=max(opts.batch_size, 16),
        max_shift=opts.memorisation_max_shift,
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
        "voxel": "max Pearson correlation over voxels of windowed [0, 1] volumes, over the real (training) set "
        "and over integer shifts up to max_shift voxels per axis (correlation over the overlap)",
        "training_set": "the real set given to evaluate()",
    }
    res = {"value": out["summary"]["fraction_likely_copies"], **out["summary"]}
    res["likely_copies"] = [syn.files[i].name for i in out["likely_copies"]]
    return MetricOutput({**res, "protocol": protocol}, rows)


def masks_metric(ctx: MetricContext) -> MetricOutput:
    """Label volumes (mL) real vs synthetic, empty masks, paired Dice / HD95 against reference masks."""
    mask_sets = ctx.mask_sets
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
    return MetricOutput({"value": first["ks"], **res, "protocol": protocol}, rows)


def _pretrained_default(extractor: str):
    def default(options: EvaluationOptions) -> bool:
        return extractor in options.feature_weights or options.allow_random_weights

    return default


def register_builtin_metrics(registry: MetricRegistry) -> MetricRegistry:
    """Register the suite's metrics on ``registry`` in the default suite's order; returns ``registry``."""
    reg = registry.register
    reg("f3d", frechet_metric, features="f3d", default=True, measures="realism")
    reg("mmd_linear", mmd_linear_metric, needs={"linear_mmd"}, default=True, measures="realism")
    reg("mmd_gaussian", mmd_gaussian_metric, features=VOLUME_FEATURES, default=True, measures="realism")
    reg("msssim", msssim_metric, needs={"volume_cache"}, default=True, measures="diversity")
    reg("psnr", psnr_metric, needs={"centre_slices"}, default=True, measures="fidelity")
    reg("histogram", histogram_metric, needs={"histogram"}, default=True, measures="realism")
    reg("prdc", prdc_metric, features=VOLUME_FEATURES, default=True, measures="realism and diversity")
    reg("memorisation", memorisation_metric, features=VOLUME_FEATURES, needs={"volume_cache"}, default=True,
        measures="privacy (copies of training samples)")  # fmt: skip
    for metric in ("fid3d_medicalnet", "fid25d_radimagenet", "fid2d_slices"):
        name = FRECHET_METRICS[metric]
        reg(metric, frechet_metric, features=name, default=_pretrained_default(name), measures="realism")
    reg("is", is_metric, features=VOLUME_FEATURES, default=lambda o: "medicalnet3d" in o.feature_weights,
        measures="realism and diversity (synthetic set only)")  # fmt: skip
    reg("masks", masks_metric, needs={"labels"}, default=lambda o: o.synthetic_label_dir is not None,
        measures="fidelity of the label maps")  # fmt: skip
    return registry


register_builtin_metrics(DEFAULT_REGISTRY)
