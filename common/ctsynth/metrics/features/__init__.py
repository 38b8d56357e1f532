"""Feature networks for Frechet distances of 3D CT sets.

========================  =========================================  =======================================  =====
name                      network                                    input                                    dim
========================  =========================================  =======================================  =====
``"f3d"``                 untrained seed-42 3D CNN (3DGAUnet F3D)    (N, 1, D, H, W) in [0, 1]                512
``"medicalnet3d"``        MedicalNet ResNet-50 (HA-GAN 3D FID)       (N, 1, D, H, W) as stored (HA-GAN [-1,1])  2048
``"radimagenet25d"``      RadImageNet ResNet-50 on slices (MAISI)    (N, 1, X, Y, Z) in HU                    2048
``"inception2d"``         Inception-v3 pool3 on slices (3DGAUnet,    (N, 1, X, Y, Z) in [0, 1]                2048
                          CT-SGAN)
========================  =========================================  =======================================  =====

Volume extractors return an (N, dim) array; slice extractors (``planes`` attribute) return ``{plane: (M, dim)}`` for
planes ``xy``, ``yz``, ``zx``. Every extractor has ``name``, ``dim``, ``note`` (``None``, or the random-weights caveat)
and ``describe()``. Exact protocols: ``docs/metrics_features.md`` and each module's docstring.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctsynth.metrics.features.base import (
    RANDOM_WEIGHTS_NOTE,
    FeatureExtractor,
    LoadReport,
    MissingWeightsError,
    PlaneFeatureExtractor,
    extractor_input,
)
from ctsynth.metrics.features.f3d import (
    C3DClassifierBackbone,
    F3DFeatureExtractor,
    F3DNet,
    build_f3d_backbone,
    init_f3d_weights,
)
from ctsynth.metrics.features.inception import (
    Inception2DSliceFeatureExtractor,
    InceptionV3Features,
    load_inception_weights,
)
from ctsynth.metrics.features.slices import PLANE_ALIASES, PLANES, extract_slices, slice_indices

__all__ = [
    "EXTRACTORS",
    "PLANES",
    "PLANE_ALIASES",
    "RANDOM_WEIGHTS_NOTE",
    "C3DClassifierBackbone",
    "F3DFeatureExtractor",
    "F3DNet",
    "FeatureExtractor",
    "Inception2DSliceFeatureExtractor",
    "InceptionV3Features",
    "LoadReport",
    "MedicalNet3DFeatureExtractor",
    "MissingWeightsError",
    "PlaneFeatureExtractor",
    "RadImageNet25DFeatureExtractor",
    "build_f3d_backbone",
    "build_medicalnet_resnet50",
    "build_radimagenet_resnet50",
    "extract_slices",
    "extractor_input",
    "get_feature_extractor",
    "init_f3d_weights",
    "load_inception_weights",
    "load_medicalnet_weights",
    "load_radimagenet_weights",
    "slice_indices",
]

if TYPE_CHECKING:
    from ctsynth.metrics.features.medicalnet import (
        MedicalNet3DFeatureExtractor,
        build_medicalnet_resnet50,
        load_medicalnet_weights,
    )
    from ctsynth.metrics.features.radimagenet import (
        RadImageNet25DFeatureExtractor,
        build_radimagenet_resnet50,
        load_radimagenet_weights,
    )

# The MONAI-based networks are imported on first use, so F3D alone (the fast default of the suite, and the
# subprocesses of its determinism test) does not pay for importing MONAI's network zoo.
_LAZY = {
    "MedicalNet3DFeatureExtractor": "medicalnet",
    "build_medicalnet_resnet50": "medicalnet",
    "load_medicalnet_weights": "medicalnet",
    "RadImageNet25DFeatureExtractor": "radimagenet",
    "build_radimagenet_resnet50": "radimagenet",
    "load_radimagenet_weights": "radimagenet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# name -> (module, class) of every extractor get_feature_extractor builds
EXTRACTORS = {
    "f3d": ("f3d", "F3DFeatureExtractor"),
    "medicalnet3d": ("medicalnet", "MedicalNet3DFeatureExtractor"),
    "radimagenet25d": ("radimagenet", "RadImageNet25DFeatureExtractor"),
    "inception2d": ("inception", "Inception2DSliceFeatureExtractor"),
}


def get_feature_extractor(
    name: str, weights: str | Path | None = None, device: str = "cpu", **kwargs: Any
) -> FeatureExtractor | PlaneFeatureExtractor:
    """Build a feature extractor by name.

    Args:
        name: ``"f3d"``, ``"medicalnet3d"``, ``"radimagenet25d"`` or ``"inception2d"``.
        weights: weights file of a pretrained network (not used by ``"f3d"``, whose weights are seeded).
        device: torch device.
        kwargs: options of the extractor class (e.g. ``allow_random_weights=True``, ``slices="centre"``,
            ``batch_size``, ``padding``).

    Returns:
        The extractor; slice extractors have a ``planes`` attribute and return ``{plane: features}``.

    Raises:
        ValueError: on an unknown name, or weights given to ``"f3d"``.
        MissingWeightsError: when a pretrained network has no weights file and random weights were not allowed.
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(EXTRACTORS)}.")
    if name == "f3d":
        if weights is not None:
            raise ValueError("the F3D network is untrained by definition (seeded weights); it takes no weights file.")
        kwargs.pop("allow_random_weights", None)
        return F3DFeatureExtractor(device=device, **kwargs)
    module, cls = EXTRACTORS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(weights=weights, device=device, **kwargs)
