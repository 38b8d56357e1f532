"""ctsynth.transforms: CT windowing, resampling, marker removal, training cubes, image+mask pairs, crops.

MONAI dictionary transforms (channel-first (C, x, y, z) MetaTensors; numpy or torch input is converted) with traced
inverses where they change geometry or intensity, plus plain array functions for non-MONAI code. See
``docs/transforms.md`` for the choices made where the papers are silent.
"""

from ._utils import CubeRejectedError
from .chest import ChestTo224d, chest_spacing
from .crops import PancreasBBoxCropd, SemiCropd, body_mask, largest_inscribed_square
from .cubes import ExtractPancreasCubed, ExtractTumorCubed, best_fill_cube_start
from .intensity import HUToWindow, HUWindowd, unwindow_hu, window_hu
from .markers import ReplaceHighDensityd, replace_high_density
from .pairs import (
    MASK_ENCODINGS,
    SplitImageMaskd,
    StackImageMaskd,
    decode_mask,
    encode_mask,
    split_image_mask,
    stack_image_mask,
)
from .spatial import IsotropicSpacingd

__all__ = [
    "MASK_ENCODINGS",
    "ChestTo224d",
    "CubeRejectedError",
    "ExtractPancreasCubed",
    "ExtractTumorCubed",
    "HUToWindow",
    "HUWindowd",
    "IsotropicSpacingd",
    "PancreasBBoxCropd",
    "ReplaceHighDensityd",
    "SemiCropd",
    "SplitImageMaskd",
    "StackImageMaskd",
    "best_fill_cube_start",
    "body_mask",
    "chest_spacing",
    "decode_mask",
    "encode_mask",
    "largest_inscribed_square",
    "replace_high_density",
    "split_image_mask",
    "stack_image_mask",
    "unwindow_hu",
    "window_hu",
]
