"""The evaluation suite: one synthetic set vs one real reference set -> ``metrics.json``, CSVs and PNG plots.

The suite is open: metrics come from a :class:`~ctsynth.metrics.registry.MetricRegistry` (the built-in ones in
:mod:`ctsynth.metrics.builtin`; a bundle adds its own with :func:`~ctsynth.metrics.registry.register_metric` or passes
a registry of its own), options from one :class:`~ctsynth.metrics.options.EvaluationOptions`, and each feature
extractor maps the suite's windowed volume to its own input (``from_windowed``).

Streaming design (:mod:`ctsynth.metrics.streaming`): every volume is read once per set; the suite keeps only what the
selected metrics need (running sums, histograms, centre slices, ``(N, F)`` features, and for pairwise metrics a float32
memory-mapped cache in a temporary folder, deleted at the end).

Preprocessing (recorded in ``metrics.json``): volumes are read in HU, clipped to ``window`` and scaled to ``[0, 1]``;
with ``resize_to`` they are then resized with :class:`monai.transforms.Resize` (trilinear, anti-aliased when
shrinking). Voxel metrics need all volumes on one grid: give ``resize_to`` when shapes differ. Histograms are computed
in HU on each volume's own grid, inside the body mask by default.

Honesty checks: metrics on features of a random-weight network (and F3D, untrained by definition) carry a ``flag``
that is printed and gathered in ``metrics.json`` (``flags``); the two sets' voxel spacing, orientation and shape are
compared from the headers (``geometry``) and every difference is a warning. Definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctsynth.data.io import (
    DEFAULT_EXCLUDE_PATTERN,
    datalist_image_entries,
    is_nifti_file,
    list_volumes,
    to_json_safe,
    write_json_atomic,
)
from ctsynth.metrics.builtin import PRETRAINED
from ctsynth.metrics.geometry import compare_geometry, read_geometry, summarise_geometry
from ctsynth.metrics.histograms import histogram_bin_edges
from ctsynth.metrics.mmd import LinearMMDAccumulator
from ctsynth.metrics.options import EvaluationOptions
from ctsynth.metrics.registry import (
    DEFAULT_REGISTRY,
    VOLUME_FEATURES,
    MetricContext,
    MetricOutput,
    MetricRegistry,
    register_metric,
)
from ctsynth.metrics.report import package_versions, pca_plot, write_csv
from ctsynth.metrics.streaming import SetState, stream_set

__all__ = [
    "DEFAULT_EXCLUDE_PATTERN",
    "METRICS",
    "EvaluationOptions",
    "EvaluationSuite",
    "evaluate",
    "list_volumes",
    "register_metric",
]

logger = logging.getLogger(__name__)

# names of the built-in metrics (the default registry may hold more: see ctsynth.metrics.registry)
METRICS = tuple(DEFAULT_REGISTRY.names())
F3D_FLAG = (
    "computed on F3D features, an untrained seeded 3D CNN by definition (3DGAUnet Sec. 2.4): comparable only with "
    "values of this same protocol (network seed, init, input size, HU window), never with values on trained networks"
)


def _datalist_labels(source: Path) -> list[Path] | None:
    if source.is_dir() and any(is_nifti_file(p) for p in source.iterdir()):
        return None
    labels = [Path(e["label"]) for e in datalist_image_entries(source) if e.get("label")]
    return labels or None


def feature_flag(name: str, extractor: Any) -> tuple[str, str | None]:
    """``(weights, flag)`` of an extractor: ``"pretrained"`` and no flag, ``"random"`` (a pretrained network run with
    random weights) or ``"untrained_by_definition"`` (F3D), each with the sentence to print."""
    if getattr(extractor, "untrained_by_definition", False):
        return "untrained_by_definition", F3D_FLAG
    note = getattr(extractor, "note", None)
    if note:
        return "random", f"computed on {name} features of a network with random weights ({note})"
    return "pretrained", None


class EvaluationSuite:
    """Evaluate a synthetic set against a real reference set (see the module docstring); ``run()`` does the work.

    Instantiable from a bundle config: ``{"_target_": "ctsynth.metrics.suite.EvaluationSuite", "real": ...,
    "options": {"_target_": "ctsynth.metrics.options.EvaluationOptions", "window": [-100, 170]}}``, then
    ``"$@evaluator.run()"``.

    Args:
        real: folder of NIfTI volumes or a datalist JSON (its training/validation/testing image entries).
        synthetic: folder of NIfTI volumes.
        out: output folder (created).
        metrics: metric names (list or comma-separated string; see :attr:`registry`); None: the default suite.
        options: an :class:`EvaluationOptions` or a mapping of its fields (None: defaults).
        registry: the metrics to choose from (default: :data:`~ctsynth.metrics.registry.DEFAULT_REGISTRY`).
        option_overrides: individual :class:`EvaluationOptions` fields, applied on top of ``options``.

    Raises:
        TypeError: on an unknown option name.
    """

    def __init__(
        self,
        real: str | os.PathLike,
        synthetic: str | os.PathLike,
        out: str | os.PathLike,
        metrics: Sequence[str] | str | None = None,
        options: EvaluationOptions | Mapping[str, Any] | None = None,
        registry: MetricRegistry | None = None,
        **option_overrides: Any,
    ) -> None:
        self.real, self.synthetic, self.out = Path(real), Path(synthetic), Path(out)
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        self.requested = None if metrics is None else list(metrics)
        self.options = EvaluationOptions.from_kwargs(options, **option_overrides)
        self.registry = DEFAULT_REGISTRY if registry is None else registry

    # ----------------------------------------------------------------------------------------------- planning
    def select_metrics(self) -> list[str]:
        """The metric names this run computes (the default suite when none were requested).

        Raises:
            ValueError: on an unknown name, or ``masks`` without synthetic label maps.
        """
        if self.requested is None:
            return [spec.name for spec in self.registry if spec.in_default_suite(self.options)]
        unknown = [m for m in self.requested if m not in self.registry]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {self.registry.names()}.")
        if "masks" in self.requested and self.options.synthetic_label_dir is None:
            raise ValueError("metric 'masks' needs synthetic_label_dir (and real labels for the volume comparison).")
        return list(dict.fromkeys(self.requested))

    def _volume_feature_name(self, metrics: list[str]) -> str | None:
        if not any(self.registry[m].features == VOLUME_FEATURES for m in metrics):
            return None
        if "fid3d_medicalnet" in metrics or "medicalnet3d" in self.options.feature_weights:
            return "medicalnet3d"
        return "f3d"

    def _build_extractors(self, metrics: list[str], volume_name: str | None) -> dict[str, Any]:
        from ctsynth.metrics.features import get_feature_extractor

        opts = self.options
        names = [self.registry[m].features for m in metrics]
        names = [volume_name if n == VOLUME_FEATURES else n for n in names if n is not None]
        extractors = {}
        for name in dict.fromkeys(names):
            kw = {"batch_size": opts.batch_size, **opts.extractor_kwargs.get(name, {})}
            if name == "f3d" and opts.f3d_input_scale != 1.0:
                kw.setdefault("input_scale", opts.f3d_input_scale)
            if name in PRETRAINED:
                kw["allow_random_weights"] = opts.allow_random_weights
            extractors[name] = get_feature_extractor(
                name, weights=opts.feature_weights.get(name), device=opts.device, **kw
            )
        return extractors

    def _subset(self, files: list[Path]) -> list[Path]:
        cap = self.options.max_volumes
        if cap is None or len(files) <= cap:
            return files
        pick = np.sort(np.random.default_rng(self.options.seed).choice(len(files), size=int(cap), replace=False))
        return [files[i] for i in pick]

    def _common_shape(self, geometry: list[dict[str, Any]], what: str) -> tuple[int, ...]:
        if self.options.resize_to is not None:
            return tuple(self.options.resize_to)
        first = geometry[0]["shape"]
        for g in geometry[1:]:
            if g["shape"] != first:
                raise ValueError(
                    f"{g['file']}: shape {g['shape']} differs from {first} of the other {what} volumes; "
                    "pass resize_to=(D, H, W)."
                )
        return first

    def _mask_sets(self, metrics: list[str]) -> dict[str, list[Path]] | None:
        if not any("labels" in self.registry[m].needs for m in metrics):
            return None
        opts = self.options
        sets: dict[str, list[Path]] = {"synthetic": list_volumes(opts.synthetic_label_dir, exclude_pattern=None)}
        if opts.real_label_dir is not None:
            sets["real"] = list_volumes(opts.real_label_dir, exclude_pattern=None)
        else:
            sets["real"] = _datalist_labels(self.real) or []
        if opts.synthetic_reference_label_dir is not None:
            sets["reference"] = list_volumes(opts.synthetic_reference_label_dir, exclude_pattern=None)
        return sets

    # ------------------------------------------------------------------------------------------------- running
    def run(self) -> Path:
        """Compute the selected metrics and write the outputs.

        Returns:
            Path of ``metrics.json``.

        Raises:
            FileNotFoundError / ValueError: on bad inputs, before anything is written.
        """
        t_start = time.perf_counter()
        opts = self.options
        metrics = self.select_metrics()
        specs = [self.registry[m] for m in metrics]
        needs = set().union(*(s.needs for s in specs)) if specs else set()
        real = SetState(self._subset(list_volumes(self.real, opts.exclude_pattern)))
        syn = SetState(self._subset(list_volumes(self.synthetic, opts.exclude_pattern)))
        geometry = {}
        for state, what in ((real, "real"), (syn, "synthetic")):
            if len(state.files) < 2:
                raise ValueError(f"{what} set needs at least 2 volumes, found {len(state.files)}.")
            geometry[what] = read_geometry(state.files)
            state.shape = self._common_shape(geometry[what], what)
        if real.shape != syn.shape and any(m not in ("histogram", "masks") for m in metrics):
            raise ValueError(f"real volumes are {real.shape} but synthetic are {syn.shape}; pass resize_to=(D, H, W).")
        geometry_warnings = compare_geometry(geometry["real"], geometry["synthetic"])
        mask_sets = self._mask_sets(metrics)
        volume_name = self._volume_feature_name(metrics)
        extractors = self._build_extractors(metrics, volume_name)
        self.out.mkdir(parents=True, exist_ok=True)
        warnings = [f"geometry: {w}" for w in geometry_warnings]
        for w in warnings:
            logger.warning(w)

        timings: dict[str, float] = {}
        results: dict[str, Any] = {}
        csv_files: dict[str, str] = {}
        plots: dict[str, str] = {}
        flags: dict[str, str] = {}
        mmd = LinearMMDAccumulator() if "linear_mmd" in needs else None
        hist_edges = histogram_bin_edges(tuple(opts.hist_range), opts.hist_bin_width)
        with tempfile.TemporaryDirectory(prefix="ctsynth-eval-") as tmp:
            if "volume_cache" in needs:
                for state, what in ((real, "real"), (syn, "synthetic")):
                    state.cache = np.lib.format.open_memmap(
                        Path(tmp) / f"{what}.npy", mode="w+", dtype=np.float32, shape=(len(state.files), *state.shape)
                    )
            t0 = time.perf_counter()
            for state, what in ((real, "real"), (syn, "synthetic")):
                stream_set(state, what, needs, extractors, opts, hist_edges, mmd)
            timings["streaming"] = time.perf_counter() - t0
            ctx = MetricContext(real, syn, opts, self.out, extractors, volume_name, mmd, mask_sets)
            for spec in specs:
                t0 = time.perf_counter()
                ctx.spec = spec
                out = spec.compute(ctx)
                out = out if isinstance(out, MetricOutput) else MetricOutput(dict(out))
                timings[spec.name] = time.perf_counter() - t0
                result = dict(out.result)
                if spec.measures is not None:
                    result.setdefault("measures", spec.measures)
                if spec.features is not None:
                    name = ctx.feature_name()
                    weights, flag = feature_flag(name, extractors[name])
                    result.update({"features": name, "feature_weights": weights, "flag": flag})
                    if flag is not None:
                        flags[spec.name] = flag
                for w in result.get("warnings") or []:
                    warnings.append(w)
                    logger.warning(w)
                results[spec.name] = result
                if out.rows:
                    csv_files[spec.name] = write_csv(self.out / f"{spec.name}.csv", out.rows).name
                plots.update(out.plots)
        for metric, flag in flags.items():
            logger.warning(f"{metric}: {flag}")
        if "f3d" in real.features or "medicalnet3d" in real.features:
            name = "medicalnet3d" if "medicalnet3d" in real.features else "f3d"
            r, s = np.concatenate(real.features[name]), np.concatenate(syn.features[name])
            plots[f"embedding_{name}"] = pca_plot(
                self.out / f"embedding_{name}.png", r, s, f"PCA of {name} features"
            ).name
        timings["total"] = time.perf_counter() - t_start
        random_used = {n: e.note for n, e in extractors.items() if getattr(e, "note", None)}
        report = {
            "versions": package_versions(),
            "real": str(self.real),
            "synthetic": str(self.synthetic),
            "n_real": len(real.files),
            "n_synthetic": len(syn.files),
            "volume_shape": list(real.shape) if real.shape else None,
            "preprocessing": {
                "window_hu": list(opts.window),
                "scaled_to": [0.0, 1.0],
                "resize_to": None if opts.resize_to is None else list(opts.resize_to),
                "resize": "monai.transforms.Resize(mode='trilinear', anti_aliasing=True) after windowing",
                "seed": opts.seed,
                "max_volumes": opts.max_volumes,
                "feature_inputs": {n: getattr(e, "input_convention", "[0, 1]") for n, e in extractors.items()},
            },
            "geometry": {
                "real": summarise_geometry(geometry["real"]),
                "synthetic": summarise_geometry(geometry["synthetic"]),
                "matches": not geometry_warnings,
                "warnings": geometry_warnings,
            },
            "random_weights_used": bool(random_used),
            "random_weights_notes": random_used,
            "flags": flags,
            "warnings": warnings,
            "feature_extractors": {n: (e.describe() if hasattr(e, "describe") else n) for n, e in extractors.items()},
            "metrics": results,
            "csv": csv_files,
            "plots": plots,
            "timings_s": timings,
        }
        return write_json_atomic(to_json_safe(report), self.out / "metrics.json")


def evaluate(
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    out: str | os.PathLike,
    metrics: Sequence[str] | str | None = None,
    options: EvaluationOptions | Mapping[str, Any] | None = None,
    registry: MetricRegistry | None = None,
    **option_overrides: Any,
) -> Path:
    """Evaluate a synthetic set against a real reference set (``ctsynth evaluate``); see :class:`EvaluationSuite`.

    Args:
        real: folder of NIfTI volumes or a datalist JSON.
        synthetic: folder of NIfTI volumes.
        out: output folder.
        metrics: metric names or None for the default suite.
        options: an :class:`EvaluationOptions` (or a mapping of its fields).
        registry: metrics to choose from (default: the default registry).
        option_overrides: individual :class:`EvaluationOptions` fields (``window``, ``resize_to``, ...).

    Returns:
        Path of ``metrics.json``.
    """
    suite = EvaluationSuite(
        real, synthetic, out, metrics=metrics, options=options, registry=registry, **option_overrides
    )
    return suite.run()
