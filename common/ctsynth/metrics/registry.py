"""The metric registry of the evaluation suite: what a metric is, what it needs, and how a bundle adds one.

A metric is a function ``compute(ctx: MetricContext) -> MetricOutput | dict`` registered under a name with what it
needs from the single streaming pass over the two sets:

* ``features``: the name of a feature extractor (``"f3d"``, ``"medicalnet3d"``, ...), :data:`VOLUME_FEATURES` for the
  suite's shared volume-level features (MedicalNet when it is loaded, else F3D; the HA-GAN protocol), or ``None``;
* ``needs``: stream products among :data:`STREAM_PRODUCTS` (``"histogram"`` HU histogram counts, ``"centre_slices"``
  the three centre slices, ``"linear_mmd"`` the linear-MMD running sums, ``"volume_cache"`` every windowed volume in a
  memory-mapped cache, ``"labels"`` the label-map file lists).

A bundle extends the suite without editing ``common/``: either ``register_metric("name", fn, ...)`` on the default
registry (e.g. ``"$ctsynth.metrics.register_metric(...)"`` in a config's ``initialize``), or a
:class:`MetricRegistry` of its own (``DEFAULT_REGISTRY.copy()`` plus its metrics) passed to
:class:`~ctsynth.metrics.suite.EvaluationSuite`. The metric's result lands in ``metrics.json`` under its name, its rows
in ``<name>.csv``; metrics on features of untrained or random-weight networks are flagged by the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ctsynth.metrics.mmd import LinearMMDAccumulator
    from ctsynth.metrics.options import EvaluationOptions
    from ctsynth.metrics.streaming import SetState

__all__ = [
    "DEFAULT_REGISTRY",
    "STREAM_PRODUCTS",
    "VOLUME_FEATURES",
    "MetricContext",
    "MetricOutput",
    "MetricRegistry",
    "MetricSpec",
    "register_metric",
]

VOLUME_FEATURES = "volume"
STREAM_PRODUCTS = frozenset({"histogram", "centre_slices", "linear_mmd", "volume_cache", "labels"})


@dataclass
class MetricOutput:
    """What a metric returns: its ``metrics.json`` entry, optional CSV rows and plot files (``{key: file name}``).

    ``result`` should hold a ``"value"`` (the headline number) and a ``"protocol"`` dict; a ``"warnings"`` list is
    printed on the console and gathered in ``metrics.json``'s ``warnings``.
    """

    result: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Args:
        name: key in ``metrics.json`` and CSV file stem.
        compute: ``ctx -> MetricOutput`` (a plain dict is taken as ``MetricOutput(result=dict)``).
        features: extractor name, :data:`VOLUME_FEATURES` or None.
        needs: stream products the metric reads (subset of :data:`STREAM_PRODUCTS`).
        default: whether the default suite (no metric names given) includes it; a callable decides from the options.
        measures: what the metric measures (``"realism"``, ``"diversity"``, ``"fidelity"``, ``"privacy"``, ...),
            recorded in ``metrics.json``.
    """

    name: str
    compute: Callable[[MetricContext], MetricOutput | Mapping[str, Any]]
    features: str | None = None
    needs: frozenset[str] = frozenset()
    default: bool | Callable[[EvaluationOptions], bool] = False
    measures: str | None = None

    def in_default_suite(self, options: EvaluationOptions) -> bool:
        """Whether the default suite runs this metric under ``options``."""
        return bool(self.default(options)) if callable(self.default) else bool(self.default)


class MetricRegistry:
    """Named metrics in registration order (the order of ``metrics.json`` for the default suite)."""

    def __init__(self, specs: Iterable[MetricSpec] = ()) -> None:
        self._specs: dict[str, MetricSpec] = {}
        for spec in specs:
            self._add(spec, replace=False)

    def _add(self, spec: MetricSpec, replace: bool) -> MetricSpec:
        if not spec.name or not isinstance(spec.name, str):
            raise ValueError(f"a metric needs a non-empty name, got {spec.name!r}.")
        if spec.name in self._specs and not replace:
            raise ValueError(f"metric {spec.name!r} is already registered; pass replace=True to override it.")
        unknown = sorted(set(spec.needs) - STREAM_PRODUCTS)
        if unknown:
            raise ValueError(f"metric {spec.name!r} needs unknown stream products {unknown}; "
                             f"choose from {sorted(STREAM_PRODUCTS)}.")  # fmt: skip
        if not callable(spec.compute):
            raise TypeError(f"metric {spec.name!r}: compute must be callable, got {type(spec.compute).__name__}.")
        self._specs[spec.name] = spec
        return spec

    def register(
        self,
        name: str,
        compute: Callable[[MetricContext], MetricOutput | Mapping[str, Any]] | None = None,
        *,
        features: str | None = None,
        needs: Iterable[str] = (),
        default: bool | Callable[[EvaluationOptions], bool] = False,
        measures: str | None = None,
        replace: bool = False,
    ) -> Any:
        """Register ``compute`` under ``name``; without ``compute`` returns a decorator.

        Args:
            name: metric name.
            compute: ``ctx -> MetricOutput | dict``.
            features: extractor name, :data:`VOLUME_FEATURES` or None.
            needs: stream products (see the module docstring).
            default: in the default suite (bool, or ``options -> bool``).
            measures: what the metric measures (realism / diversity / fidelity / privacy).
            replace: allow overriding a registered metric.

        Returns:
            The :class:`MetricSpec` (or a decorator returning ``compute`` unchanged).

        Raises:
            ValueError: on a duplicate name (without ``replace``) or unknown ``needs``.
        """

        def add(fn: Callable[[MetricContext], Any]) -> Any:
            spec = MetricSpec(name, fn, features, frozenset(needs), default, measures)
            return self._add(spec, replace)

        if compute is None:

            def decorator(fn: Callable[[MetricContext], Any]) -> Callable[[MetricContext], Any]:
                add(fn)
                return fn

            return decorator
        return add(compute)

    def copy(self) -> MetricRegistry:
        """A new registry with the same metrics (extend it without changing this one)."""
        return MetricRegistry(self._specs.values())

    def names(self) -> list[str]:
        """Registered metric names in registration order."""
        return list(self._specs)

    def __getitem__(self, name: str) -> MetricSpec:
        if name not in self._specs:
            raise KeyError(f"unknown metric {name!r}; registered: {self.names()}.")
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[MetricSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


@dataclass
class MetricContext:
    """Everything a metric may read once both sets have been streamed.

    Attributes:
        real: the real set's :class:`~ctsynth.metrics.streaming.SetState` (files, features, histograms, cache, ...).
        synthetic: the synthetic set's state.
        options: the suite's :class:`~ctsynth.metrics.options.EvaluationOptions`.
        out: output folder (plots may be written there).
        extractors: feature extractors by name.
        volume_feature_name: the extractor behind :data:`VOLUME_FEATURES` (or None when no metric needs it).
        linear_mmd: the linear-MMD accumulator (filled when a metric needs ``"linear_mmd"``).
        mask_sets: label-map files ``{"real", "synthetic"[, "reference"]}`` (when a metric needs ``"labels"``).
        spec: the metric being computed.
    """

    real: SetState
    synthetic: SetState
    options: EvaluationOptions
    out: Path
    extractors: dict[str, Any]
    volume_feature_name: str | None
    linear_mmd: LinearMMDAccumulator | None = None
    mask_sets: dict[str, list[Path]] | None = None
    spec: MetricSpec | None = None

    def feature_name(self) -> str:
        """The extractor the current metric's features come from (its own or the shared volume features)."""
        name = None if self.spec is None else self.spec.features
        if name == VOLUME_FEATURES:
            name = self.volume_feature_name
        if name is None:
            raise ValueError(f"metric {self.spec.name if self.spec else '?'!r} was registered without features.")
        return name

    def features(self, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(real, synthetic)`` volume-level feature arrays of extractor ``name`` (default: :meth:`feature_name`).

        Raises:
            KeyError: when the extractor produced no volume-level features (slice extractors keep running stats).
        """
        name = name or self.feature_name()
        if name not in self.real.features:
            raise KeyError(
                f"no volume-level features of {name!r} were computed; extractors run: {list(self.extractors)}."
            )
        return np.concatenate(self.real.features[name]), np.concatenate(self.synthetic.features[name])


DEFAULT_REGISTRY = MetricRegistry()


def register_metric(
    name: str, compute: Callable[[MetricContext], MetricOutput | Mapping[str, Any]] | None = None, **kwargs: Any
) -> Any:
    """Register a metric on :data:`DEFAULT_REGISTRY` (see :meth:`MetricRegistry.register`)."""
    return DEFAULT_REGISTRY.register(name, compute, **kwargs)
