"""Label ids shared by the phantoms, the transforms and the bundles.

The abdominal ids follow the Medical Segmentation Decathlon Task07 (Pancreas) convention for the two
labels the bundles train on (pancreas = 1, tumour = 2); the other organs get extra ids above them so a
phantom label map can be reduced to the MSD convention with :func:`to_msd_pancreas`.
"""

from __future__ import annotations

import numpy as np

ABDOMEN_LABELS: dict[str, int] = {
    "background": 0,
    "pancreas": 1,
    "tumor": 2,
    "liver": 3,
    "spleen": 4,
    "kidney": 5,
    "stomach_bowel": 6,
    "aorta": 7,
    "ivc": 8,
    "vertebra": 9,
    "muscle": 10,
    "subcutaneous_fat": 11,
    "visceral_fat": 12,
    "bowel_gas": 13,
    "gallbladder": 14,
    "adrenal": 15,
    "portal_vein": 16,
    "rib": 17,
    "lung": 18,
    "heart": 19,
    "table": 20,
}

CHEST_LABELS: dict[str, int] = {
    "background": 0,
    "nodule": 1,
    "lung": 2,
    "vessel": 3,
    "airway": 4,
    "heart": 5,
    "rib": 6,
    "spine": 7,
    "mediastinum": 8,
    "muscle": 9,
    "fat": 10,
}

PANCREAS_LABEL = ABDOMEN_LABELS["pancreas"]
TUMOR_LABEL = ABDOMEN_LABELS["tumor"]
NODULE_LABEL = CHEST_LABELS["nodule"]


def to_msd_pancreas(label: np.ndarray) -> np.ndarray:
    """Reduce an abdominal phantom label map to the MSD Task07 convention.

    Args:
        label: integer label map with :data:`ABDOMEN_LABELS` ids.

    Returns:
        uint8 map with pancreas = 1, tumour = 2 and everything else 0.
    """
    out = np.zeros(label.shape, dtype=np.uint8)
    out[label == PANCREAS_LABEL] = PANCREAS_LABEL
    out[label == TUMOR_LABEL] = TUMOR_LABEL
    return out
