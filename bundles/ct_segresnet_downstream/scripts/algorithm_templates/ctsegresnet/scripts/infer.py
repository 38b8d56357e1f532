"""Inference of one fold of the ctsegresnet template (Auto3DSeg's ``InferClass`` interface, used by its ensembler)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Compose

_spec = importlib.util.spec_from_file_location(
    "ctsegresnet_segmenter", os.path.join(os.path.dirname(os.path.abspath(__file__)), "segmenter.py")
)
segmenter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(segmenter)


class InferClass:
    """Loads ``model/model.pt`` of this fold and predicts class probabilities on the original image grid.

    Args:
        config_file: the fold's config files.
        override: config overrides; keys the config does not use (the ensembler's ``rank``, ``image_save_func``) are
            ignored.
    """

    def __init__(self, config_file: str | Sequence[str] | None = None, **override: Any) -> None:
        self.parser = segmenter.load_config(config_file or [], override)
        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        self.model = segmenter.build_network(self.parser).to(self.device)
        ckpt = os.path.join(self.parser.get_parsed_content("ckpt_path"), "model.pt")
        state = torch.load(ckpt, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["state_dict"])
        self.model.eval()
        self.pre = Compose(segmenter.base_transforms(self.parser, keys=("image",)))

    @torch.no_grad()
    def infer(self, image_file: str | dict) -> torch.Tensor:
        """Softmax probabilities (classes x original spatial shape) with the image's metadata."""
        data = self.pre({"image": image_file["image"] if isinstance(image_file, dict) else image_file})
        image = data["image"]
        logits = sliding_window_inference(
            image[None].to(self.device),
            roi_size=[int(v) for v in self.parser["roi_size"]],
            sw_batch_size=int(self.parser["sw_batch_size"]),
            predictor=self.model,
            overlap=float(self.parser["sw_overlap"]),
        )[0]
        probs = torch.softmax(logits.float(), dim=0).cpu()
        probs.applied_operations = image.applied_operations
        probs.meta = image.meta
        return self.pre.inverse({"image": probs})["image"]
