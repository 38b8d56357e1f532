"""Procedural CT phantoms (abdomen with pancreas/PDAC, chest with lung nodules) and MSD-style dataset writing.

Public API: :class:`PhantomVolume`, :func:`make_abdomen_phantom`, :func:`make_chest_phantom`,
:func:`write_phantom_dataset`. Sources of every HU value and the label ids are in ``docs/phantoms.md``.
"""

from __future__ import annotations

from ctsynth.data.phantoms.abdomen import make_abdomen_phantom
from ctsynth.data.phantoms.chest import make_chest_phantom
from ctsynth.data.phantoms.dataset import write_phantom_dataset
from ctsynth.data.phantoms.volume import PhantomVolume

__all__ = ["PhantomVolume", "make_abdomen_phantom", "make_chest_phantom", "write_phantom_dataset"]
