"""ctsynth.metrics: statistical metrics and the evaluation suite for synthetic 3D CT sets.

Statistical metrics (MMD, MS-SSIM, PSNR, HU histograms, IS, PRDC, memorisation audit, mask metrics) and the suite
(:func:`evaluate`, :class:`EvaluationSuite`) are re-exported here, as are the Frechet distances and the feature-network
factory (``frechet_distance``, ``RunningFeatureStats``, ``get_feature_extractor``). Definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

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
from ctsynth.metrics.inception_score import hagan_raw_feature_score, inception_score, inception_score_from_probs
from ctsynth.metrics.masks import compare_label_volumes, label_volumes_ml, paired_mask_scores
from ctsynth.metrics.memorisation import (
    feature_nearest_neighbours,
    leave_one_out_nn_distances,
    max_ncc_blockwise,
    memorisation_audit,
)
from ctsynth.metrics.mmd import LinearMMDAccumulator, gaussian_mmd, linear_mmd, median_heuristic_bandwidth
from ctsynth.metrics.msssim import MSSSIMConfig, pairwise_msssim, sample_pairs, select_msssim_config
from ctsynth.metrics.prdc import knn_radii, prdc
from ctsynth.metrics.psnr import centre_slices, slicewise_psnr
from ctsynth.metrics.suite import METRICS, EvaluationSuite, evaluate, list_volumes

__all__ = [
    "HU_BANDS",
    "METRICS",
    "EvaluationSuite",
    "LinearMMDAccumulator",
    "MSSSIMConfig",
    "band_peaks",
    "body_mask",
    "centre_slices",
    "compare_label_volumes",
    "evaluate",
    "feature_nearest_neighbours",
    "gaussian_mmd",
    "hagan_raw_feature_score",
    "histogram_bin_edges",
    "histogram_intersection",
    "histogram_wasserstein",
    "hu_histogram",
    "inception_score",
    "inception_score_from_probs",
    "knn_radii",
    "label_volumes_ml",
    "leave_one_out_nn_distances",
    "linear_mmd",
    "list_volumes",
    "max_ncc_blockwise",
    "median_heuristic_bandwidth",
    "memorisation_audit",
    "paired_mask_scores",
    "pairwise_msssim",
    "plot_histogram_overlay",
    "prdc",
    "sample_pairs",
    "select_msssim_config",
    "slicewise_psnr",
]

# The Frechet distances and feature networks are written alongside; re-export them when present so this package
# imports even in a checkout that predates them.
try:
    from ctsynth.metrics.features import MissingWeightsError, get_feature_extractor
    from ctsynth.metrics.frechet import RunningFeatureStats, frechet_distance, frechet_distance_from_stats

    __all__ += [
        "MissingWeightsError",
        "RunningFeatureStats",
        "frechet_distance",
        "frechet_distance_from_stats",
        "get_feature_extractor",
    ]
except ImportError:  # pragma: no cover - only in a partial checkout
    pass
