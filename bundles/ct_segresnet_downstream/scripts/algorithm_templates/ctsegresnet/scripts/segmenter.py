"""Pieces shared by ``train.py`` and ``infer.py`` of the ctsegresnet template: config, data split, transforms, network.

Kept free of ctsynth imports, so a generated algorithm folder runs on its own as Auto3DSeg's official ones do.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)


def load_config(config_file: str | Sequence[str], override: dict[str, Any]) -> ConfigParser:
    """The template's config files (``hyper_parameters.yaml``) with command-line overrides applied.

    Fire passes a list of files as one comma-separated string, as Auto3DSeg writes it.
    """
    files = config_file.split(",") if isinstance(config_file, str) else list(config_file)
    parser = ConfigParser()
    parser.read_config([f for f in files if f.endswith((".yaml", ".json"))])
    parser.update({k: parse_cli_value(v) for k, v in override.items()})
    return parser


def parse_cli_value(value: Any) -> Any:
    """A command-line override as Auto3DSeg writes it: lists arrive as ``"32,32,32"`` strings."""
    if not isinstance(value, str):
        return list(value) if isinstance(value, tuple) else value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return list(parsed) if isinstance(parsed, tuple) else parsed


def fold_records(parser: ConfigParser) -> tuple[list[dict], list[dict]]:
    """Training and validation records of this copy's fold.

    Validation: the records of ``fold`` whose ``source`` is in ``validation_sources`` (a record without ``source`` is
    real); every other record trains. When the fold has no such record (a synthetic-only datalist), the whole fold
    validates, as in Auto3DSeg's own fold rule.

    Raises:
        ValueError: when the datalist has no training record of this fold's training part.
    """
    path = parser["data_list_file_path"]
    with open(path) as fh:
        entries = json.load(fh)["training"]
    root = parser["data_file_base_dir"]
    fold, sources = int(parser["fold"]), set(parser["validation_sources"])

    def resolve(e: dict) -> dict:
        return {**e, "image": os.path.join(root, e["image"]), "label": os.path.join(root, e["label"])}

    in_fold = [e for e in entries if int(e.get("fold", -1)) == fold]
    val = [e for e in in_fold if e.get("source", "real") in sources] or in_fold
    val_ids = {id(e) for e in val}
    train = [e for e in entries if id(e) not in val_ids]
    if not train:
        raise ValueError(f"{path}: no training record outside fold {fold}")
    return [resolve(e) for e in train], [resolve(e) for e in val]


def base_transforms(parser: ConfigParser, keys: Sequence[str] = ("image", "label")) -> list:
    """Load, orient to RAS, resample to the target spacing, scale the intensity bounds to [-1, 1] (clipped)."""
    modes = ["bilinear", "nearest"][: len(keys)]
    low, high = (float(v) for v in parser["intensity_bounds"])
    return [
        LoadImaged(keys=list(keys), ensure_channel_first=True, image_only=True),
        EnsureTyped(keys=list(keys), dtype=torch.float32),
        Orientationd(keys=list(keys), axcodes="RAS"),
        Spacingd(keys=list(keys), pixdim=[float(v) for v in parser["resample_resolution"]], mode=modes),
        ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True),
    ]


def train_transforms(parser: ConfigParser) -> Compose:
    """Base transforms, then ROI crops balanced over the classes, flips and intensity jitter."""
    roi = [int(v) for v in parser["roi_size"]]
    return Compose(
        [
            *base_transforms(parser),
            SpatialPadd(keys=["image", "label"], spatial_size=roi),
            RandCropByLabelClassesd(
                keys=["image", "label"],
                label_key="label",
                spatial_size=roi,
                num_classes=int(parser["output_classes"]),
                num_samples=int(parser["num_crops_per_image"]),
                warn=False,
            ),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    )


def build_network(parser: ConfigParser) -> torch.nn.Module:
    """The configured network (SegResNetDS by default)."""
    return parser.get_parsed_content("network", instantiate=True)
