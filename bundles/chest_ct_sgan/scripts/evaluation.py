"""The CT-SGAN paper's slice-by-slice FID and IS (Sec. 3, Table 1) and the ctsynth suite on the same volumes.

Protocol (Sec. 3: "we randomly selected two different scans in the data source (real or synthetic) and computed the
FID slice by slice in order"; "IS was also computed slice-by-slice"), as read here:

- every volume is a 224^3 chest cube in HU; its axial slices (all, or every ``every_k``-th) are windowed to [0, 1],
  replicated to 3 channels, resized to 299^2 and passed through Inception-v3 (pool3 features, classifier logits);
- FID of a pair of scans = Frechet distance between the two scans' slice features; the "Real Data" row pairs two
  different real scans, a synthetic row pairs a real scan with a synthetic one; mean +- std over ``n_pairs`` random
  pairs;
- IS of a scan = Inception Score of its slices' class probabilities (one split); mean +- std over scans.

The real scans are first brought to the training geometry (:func:`scripts.prepare.write_chest_cubes`, HU kept) and
written as NIfTI, so the protocol and the suite compare volumes of one grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctsynth.data.io import list_volumes, load_volume, write_json_atomic
from ctsynth.metrics import evaluate
from ctsynth.metrics.features.base import RANDOM_WEIGHTS_NOTE, resolve_weights, seeded_torch_init
from ctsynth.metrics.features.inception import (
    INCEPTION_WHERE,
    InceptionV3Features,
    inception_preprocess,
    load_inception_weights,
)
from ctsynth.metrics.frechet import frechet_distance
from ctsynth.metrics.inception_score import inception_score

from .prepare import write_chest_cubes

__all__ = ["PAPER_TABLE1", "SliceInception", "SliceWiseProtocol", "PaperEvaluation"]

logger = logging.getLogger(__name__)

#: Table 1 of the paper (IS of the real and CT-SGAN rows from the text of Sec. 3, their spread lost in the table).
PAPER_TABLE1 = {
    "Real Data": {"is": "2.2129", "fid": "130.72 ± 31.05"},
    "3D GAN (128³)": {"is": "2.16 ± 0.26", "fid": "206.34 ± 59.12"},
    "CT-SGAN (224³)": {"is": "2.3703", "fid": "145.18 ± 25.97"},
}


class SliceInception:
    """Inception-v3 pool3 features and class logits of the axial slices of HU volumes.

    Args:
        weights: Inception-v3 state dict with its classifier (pytorch-fid's FID weights: 1008 classes;
            torchvision's: 1000); required unless ``allow_random_weights``.
        variant: "fid" or "torchvision" (must match the weights).
        num_classes: classifier size of the weights.
        window: HU window mapped to [0, 1].
        every_k: keep every k-th axial slice (1: all, the paper's protocol).
        allow_random_weights: run without weights (smoke tests; the numbers are flagged).
        batch_size: slices per forward pass.
        device: torch device.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        variant: str = "fid",
        num_classes: int = 1008,
        window: Sequence[float] = (-1000.0, 400.0),
        every_k: int = 1,
        allow_random_weights: bool = False,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
    ) -> None:
        path = resolve_weights(weights, allow_random_weights, "Inception-v3 (slice-wise FID/IS)", INCEPTION_WHERE)
        net = seeded_torch_init(lambda: InceptionV3Features(variant=variant, num_classes=int(num_classes)))
        if path is not None:
            load_inception_weights(net, path)
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.window, self.every_k, self.batch_size = (float(window[0]), float(window[1])), int(every_k), batch_size
        self.note = RANDOM_WEIGHTS_NOTE if path is None else None

    @torch.no_grad()
    def __call__(self, volume_hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Y, Z)`` HU volume -> ``(features (M, 2048), logits (M, C))`` of its kept axial slices, in order."""
        lo, hi = self.window
        x = torch.as_tensor(np.clip((volume_hu - lo) / (hi - lo), 0, 1), dtype=torch.float32)
        slices = x.permute(2, 0, 1)[:: self.every_k].unsqueeze(1)
        feats, logits = [], []
        for i in range(0, slices.shape[0], self.batch_size):
            inp = inception_preprocess(slices[i : i + self.batch_size].to(self.device))
            f = self.net(inp)
            feats.append(f.cpu())
            logits.append(self.net.fc(f).cpu())
        return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()


class SliceWiseProtocol:
    """FID per random scan pair and IS per scan (see the module docstring).

    Args:
        inception: the slice network.
        n_pairs: random pairs per row.
        seed: seed of the pairs.
    """

    def __init__(self, inception: SliceInception, n_pairs: int = 100, seed: int = 0) -> None:
        self.inception, self.n_pairs, self.seed = inception, int(n_pairs), int(seed)
        self._cache: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def outputs(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        if path not in self._cache:
            self._cache[path] = self.inception(load_volume(path)[0])
        return self._cache[path]

    def fid_pairs(self, first: Sequence[Path], second: Sequence[Path], same_set: bool) -> list[float]:
        """FIDs of ``n_pairs`` random (first, second) scan pairs (two different scans when ``same_set``).

        Raises:
            ValueError: when ``same_set`` and there are fewer than two scans.
        """
        if same_set and len(first) < 2:
            raise ValueError(f"the real-vs-real row needs at least 2 real scans, got {len(first)}")
        rng = np.random.default_rng(self.seed)
        values = []
        for _ in range(self.n_pairs):
            i = int(rng.integers(len(first)))
            j = int(rng.integers(len(second) - 1 if same_set else len(second)))
            j = j + 1 if same_set and j >= i else j
            values.append(frechet_distance(self.outputs(first[i])[0], self.outputs(second[j])[0]))
        return values

    def inception_scores(self, scans: Sequence[Path]) -> list[float]:
        """IS of every scan (its slices' softmax, one split)."""
        return [inception_score(self.outputs(p)[1], splits=1)[0] for p in scans]

    def table(self, real: Sequence[Path], synthetic: Mapping[str, Sequence[Path]]) -> dict[str, dict[str, Any]]:
        """``{row: {"fid": (mean, std, n), "is": (mean, std, n)}}``: the real row first, then each synthetic set."""
        rows = {"Real Data": (real, self.fid_pairs(real, real, True))}
        for name, scans in synthetic.items():
            rows[name] = (scans, self.fid_pairs(real, scans, False))
        out = {}
        for name, (scans, fids) in rows.items():
            scores = self.inception_scores(scans)
            out[name] = {
                "fid": [float(np.mean(fids)), float(np.std(fids)), len(fids)],
                "is": [float(np.mean(scores)), float(np.std(scores)), len(scores)],
            }
        return out


def table1_markdown(ours: Mapping[str, Mapping[str, Any]], note: str | None) -> str:
    """Our Table 1 beside the paper's."""
    lines = [
        "| Data source | IS (↑) ours | IS paper | FID (↓) ours | FID paper |",
        "|---|---|---|---|---|",
    ]
    for name, row in ours.items():
        paper = PAPER_TABLE1.get(name, {"is": "-", "fid": "-"})
        is_, fid = row["is"], row["fid"]
        lines.append(
            f"| {name} | {is_[0]:.4f} ± {is_[1]:.4f} (n={is_[2]}) | {paper['is']} | "
            f"{fid[0]:.2f} ± {fid[1]:.2f} (n={fid[2]}) | {paper['fid']} |"
        )
    if note:
        lines += ["", f"**{note}**"]
    return "\n".join(lines) + "\n"


class PaperEvaluation:
    """Table 1 (slice-wise FID and IS) for the synthetic sets, plus the ctsynth suite per set.

    Args:
        real_dir: real chest scans (any geometry; brought to the training cube by :func:`prepare_real_volumes`).
        synthetic: ``{row name: sample folder}`` (rows whose folder is missing are skipped with a warning).
        out: output folder (``table1.md``, ``table1.json``, ``real_cubes/``, ``suite/<row>/metrics.json``).
        size: cube edge of the real cubes.
        hu_window: HU window of the cubes and of the features.
        spacing_range: spacing range of the real cubes.
        inception: the slice network.
        n_pairs: FID pairs per row.
        max_volumes: cap per set.
        suite_metrics: ctsynth suite metrics per synthetic set (empty: none).
        suite_options: :class:`ctsynth.metrics.options.EvaluationOptions` (or its fields).
        seed: seed of the pairs.
    """

    def __init__(
        self,
        real_dir: str | os.PathLike,
        synthetic: Mapping[str, str | os.PathLike],
        out: str | os.PathLike,
        inception: SliceInception,
        size: int = 224,
        hu_window: Sequence[float] = (-1000.0, 400.0),
        spacing_range: Sequence[float] = (0.6, 2.0),
        n_pairs: int = 100,
        max_volumes: int | None = None,
        suite_metrics: Sequence[str] = (),
        suite_options: Any = None,
        seed: int = 0,
    ) -> None:
        self.real_dir, self.synthetic, self.out = Path(real_dir), dict(synthetic), Path(out)
        self.inception, self.size, self.hu_window = inception, int(size), tuple(hu_window)
        self.spacing_range, self.n_pairs, self.max_volumes = tuple(spacing_range), int(n_pairs), max_volumes
        self.suite_metrics, self.suite_options, self.seed = list(suite_metrics), suite_options, int(seed)

    def run(self) -> dict[str, Any]:
        real_cubes = self.out / "real_cubes"
        write_chest_cubes(self.real_dir, real_cubes, self.size, self.hu_window, self.spacing_range, self.max_volumes)
        real = list_volumes(real_cubes / "imagesTr")
        sets = {}
        for name, folder in self.synthetic.items():
            if not Path(folder).is_dir():
                logger.warning("%s: no sample folder %s, row skipped", name, folder)
                continue
            sets[name] = list_volumes(folder)[: self.max_volumes or None]
        protocol = SliceWiseProtocol(self.inception, self.n_pairs, self.seed)
        table = protocol.table(real, sets)
        note = self.inception.note
        result = {"table1": table, "paper": PAPER_TABLE1, "note": note, "every_k": self.inception.every_k}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "table1.md").write_text(table1_markdown(table, note))
        suite = {}
        for name, folder in self.synthetic.items():
            if name in sets and self.suite_metrics:
                dest = self.out / "suite" / "".join(c if c.isascii() and c.isalnum() else "_" for c in name).strip("_")
                suite[name] = str(
                    evaluate(real_cubes / "imagesTr", folder, dest, self.suite_metrics, self.suite_options)
                )
        result["suite"] = suite
        write_json_atomic(result, self.out / "table1.json")
        logger.info("Table 1 written to %s", self.out / "table1.md")
        return result
