"""Auto3DSeg ``Algo`` of the ctsegresnet template: fills ``configs/hyper_parameters.yaml`` from the data analysis.

Plugged into :class:`monai.apps.auto3dseg.AutoRunner` through its ``algos`` dictionary::

    algos = {"ctsegresnet": {"_target_": "ctsegresnet.scripts.algo.CtsegresnetAlgo", "template_path": <folder>}}

where ``<folder>`` holds this ``ctsegresnet`` folder; AutoRunner then neither downloads nor copies any other template.
The algorithm name has no underscore because Auto3DSeg's fold ensemble reads the fold from ``<name>_<fold>``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from monai.apps.auto3dseg import BundleAlgo
from monai.bundle import ConfigParser

#: the official template's cap on the training ROI (voxels) and its epoch rule: ceil(80000 / n) clipped to [300, 1250]
MAX_ROI = (224, 224, 144)
EPOCH_BUDGET, MIN_EPOCHS, MAX_EPOCHS = 80000, 300, 1250


def epochs_for(n_train: int) -> int:
    """Training epochs for ``n_train`` images: ``clip(ceil(80000 / n), 300, 1250)``."""
    return int(np.clip(math.ceil(EPOCH_BUDGET / max(n_train, 1)), MIN_EPOCHS, MAX_EPOCHS))


def roi_for(shape_at_spacing: list[float]) -> list[int]:
    """Training ROI: the median image size at the target spacing rounded up to a multiple of 16 (the network's
    overall stride), capped at 224 x 224 x 144 voxels."""
    return [int(min(m, 16 * math.ceil(s / 16))) for s, m in zip(shape_at_spacing, MAX_ROI, strict=True)]


class CtsegresnetAlgo(BundleAlgo):
    """SegResNetDS Auto3DSeg algorithm whose ``roi_size``, spacing, intensity bounds, classes and epochs come from
    ``datastats.yaml`` (see ``configs/hyper_parameters.yaml``)."""

    def fill_template_config(self, data_stats_filename: str, output_path: str, **kwargs: Any) -> dict:
        """Write the filled ``hyper_parameters.yaml`` of one fold.

        Args:
            data_stats_filename: ``datastats.yaml`` of Auto3DSeg's DataAnalyzer.
            output_path: this fold's copy of the template.
            kwargs: ``fold`` (validation fold); other keys are written into the config unchanged.

        Returns:
            The filled values (Auto3DSeg keeps them as ``fill_records``).

        Raises:
            ValueError: when the data analysis finds no foreground label.
        """
        stats = ConfigParser.load_config_file(data_stats_filename)["stats_summary"]
        source = ConfigParser.load_config_file(self.data_list_file)
        spacing = [float(s) for s in stats["image_stats"]["spacing"]["median"]]
        size_mm = [float(s) for s in stats["image_stats"]["sizemm"]["median"]]
        labels = [int(v) for v in stats["label_stats"]["labels"]]
        if max(labels) < 1:
            raise ValueError(f"{data_stats_filename}: the training labels hold no foreground class")
        fg = stats["image_foreground_stats"]["intensity"]
        fold = int(kwargs.pop("fold", 0))
        datalist = ConfigParser.load_config_file(source["datalist"])
        n_train = sum(1 for d in datalist["training"] if int(d.get("fold", -1)) != fold)
        filled = {
            "bundle_root": os.path.abspath(output_path),
            "data_file_base_dir": os.path.abspath(source["dataroot"]),
            "data_list_file_path": os.path.abspath(source["datalist"]),
            "modality": str(source.get("modality", "ct")).lower(),
            "fold": fold,
            "output_classes": max(labels) + 1,
            "class_names": source.get("class_names"),
            "resample_resolution": spacing,
            "roi_size": roi_for([m / s for m, s in zip(size_mm, spacing, strict=True)]),
            "intensity_bounds": [float(fg["percentile_00_5"]), float(fg["percentile_99_5"])],
            "num_epochs": epochs_for(n_train),
            **kwargs,
        }
        config_file = os.path.join(output_path, "configs", "hyper_parameters.yaml")
        parser = ConfigParser()
        parser.read_config(config_file)
        parser.update(filled)
        ConfigParser.export_config_file(parser.get(), config_file, fmt="yaml", default_flow_style=None, sort_keys=False)
        return {"hyper_parameters.yaml": filled}

    def train(self, train_params: dict | None = None, device_setting: dict | None = None) -> Any:
        """Record ``train_params`` in the fold's ``hyper_parameters.yaml``, then train (Auto3DSeg's command: one
        process, or ``torchrun`` with one process per visible GPU).

        Writing the overrides into the config (instead of only passing them on the command line) keeps the network
        and ROI that inference rebuilds identical to the trained ones.
        """
        params = {k: v for k, v in (train_params or {}).items() if k != "CUDA_VISIBLE_DEVICES"}
        if params:
            config_file = os.path.join(self.output_path, "configs", "hyper_parameters.yaml")
            parser = ConfigParser()
            parser.read_config(config_file)
            parser.update(params)
            ConfigParser.export_config_file(
                parser.get(), config_file, fmt="yaml", default_flow_style=None, sort_keys=False
            )
            self.fill_records.setdefault("hyper_parameters.yaml", {}).update(params)
        return super().train({}, device_setting)
