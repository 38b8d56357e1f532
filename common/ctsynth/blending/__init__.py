"""Insertion of a (synthetic) tumour cube into a tissue cube: the three blending methods of 3DGAUnet.

* Blend I, :func:`blend_copy_paste`: tumour voxels replace the tissue voxels.
* Blend II, :func:`blend_poisson`: 3D gradient-domain (screened Poisson) insertion.
* Blend III, :func:`blend_style_refined`: Blend II followed by texture refinement towards the tissue.

:func:`blend_tumor` dispatches on a method name; :func:`blend_folders` blends folders of NIfTI cubes. See
``docs/blending.md``.
"""

from ctsynth.blending.api import BLEND_METHODS, blend_folders, blend_tumor, list_nifti
from ctsynth.blending.copy_paste import blend_copy_paste
from ctsynth.blending.placement import (
    BlendInputs,
    dilate_mask,
    paste_into,
    prepare_inputs,
    tumor_fringe,
    tumor_mask,
    tumor_offset,
)
from ctsynth.blending.poisson import blend_poisson, solve_poisson_region
from ctsynth.blending.result import BlendResult, to_label_map
from ctsynth.blending.style import (
    RandomFeatureNet3D,
    blend_style_refined,
    highpass_sd,
    match_texture_statistics,
    refine_texture,
    weighted_gram,
)

__all__ = [
    "BLEND_METHODS",
    "BlendInputs",
    "BlendResult",
    "RandomFeatureNet3D",
    "blend_copy_paste",
    "blend_folders",
    "blend_poisson",
    "blend_style_refined",
    "blend_tumor",
    "dilate_mask",
    "highpass_sd",
    "list_nifti",
    "match_texture_statistics",
    "paste_into",
    "prepare_inputs",
    "refine_texture",
    "solve_poisson_region",
    "to_label_map",
    "tumor_fringe",
    "tumor_mask",
    "tumor_offset",
    "weighted_gram",
]
