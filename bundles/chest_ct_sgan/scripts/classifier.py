"""The downstream nodule classifier of the paper (Sec. 3, Fig. 3b): a 3D SqueezeNet predicting whether a chest volume
holds a nodule, its datalists and the test-accuracy report (the patient-level split and the study: ``scripts.study``).

Experiments (``experiment`` in ``train_classifier.json``): ``real`` (train on the real training split),
``synthetic`` (train on the synthetic volumes with injected nodules), ``finetune`` (start from a ``synthetic`` run's
weights, train on the real training split); validation and test always on the real splits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctsynth.data.io import nifti_stem, write_json_atomic

__all__ = [
    "EXPERIMENTS",
    "Fire3d",
    "SqueezeNet3D",
    "load_classifier_datalist",
    "load_pretrained",
    "load_best",
    "TestAccuracy",
    "summarise_accuracy",
]

EXPERIMENTS = ("real", "synthetic", "finetune")


class Fire3d(nn.Module):
    """SqueezeNet fire module in 3D: ``squeeze`` 1x1x1 conv, then 1x1x1 and 3x3x3 ``expand`` convs concatenated.

    Args:
        in_channels: input channels.
        squeeze: squeeze channels.
        expand1: 1x1x1 expand channels.
        expand3: 3x3x3 expand channels.
        norm: BatchNorm3d after every conv.
    """

    def __init__(self, in_channels: int, squeeze: int, expand1: int, expand3: int, norm: bool = True) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, k: int) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, k, padding=k // 2)]
            layers += [nn.BatchNorm3d(c_out)] if norm else []
            return nn.Sequential(*layers, nn.ReLU(inplace=True))

        self.squeeze = block(in_channels, squeeze, 1)
        self.expand1 = block(squeeze, expand1, 1)
        self.expand3 = block(squeeze, expand3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], dim=1)


class SqueezeNet3D(nn.Module):
    """3D SqueezeNet (Iandola et al. 2016, version 1.1 layout) for scan-level nodule classification.

    ``Conv3d(in, 64, k3, s2, p1)`` -> ReLU -> MaxPool3d(3, 2, 1) -> Fire(16, 64, 64) x2 -> MaxPool ->
    Fire(32, 128, 128) x2 -> MaxPool -> Fire(48, 192, 192) x2 -> Fire(64, 256, 256) x2 -> Dropout ->
    ``Conv3d(512 -> num_classes, 1)`` -> global average pool -> logits (every width times ``width``).

    Args:
        in_channels: input channels (1: the CT volume in [0, 1]).
        num_classes: logits (1: nodule / no nodule with BCE).
        width: width multiplier of every layer.
        norm: BatchNorm3d after every conv.
        dropout: dropout before the classifier conv.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 1, width: float = 1.0, norm: bool = True, dropout: float = 0.5
    ) -> None:
        super().__init__()

        def w(c: int) -> int:
            return max(1, round(c * width))

        fires = [(16, 64, 64), (16, 64, 64), "pool", (32, 128, 128), (32, 128, 128), "pool"]
        fires += [(48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
        stem: list[nn.Module] = [nn.Conv3d(in_channels, w(64), 3, 2, 1)]
        stem += [nn.BatchNorm3d(w(64))] if norm else []
        layers: list[nn.Module] = [*stem, nn.ReLU(inplace=True), nn.MaxPool3d(3, 2, 1)]
        c = w(64)
        for f in fires:
            if f == "pool":
                layers.append(nn.MaxPool3d(3, 2, 1))
                continue
            s, e1, e3 = (w(v) for v in f)
            layers.append(Fire3d(c, s, e1, e3, norm))
            c = e1 + e3
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Conv3d(c, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).mean(dim=(2, 3, 4))


def load_classifier_datalist(path: str | os.PathLike, key: str = "training") -> list[dict[str, Any]]:
    """Entries ``{"image", "label": 0.0 | 1.0, "case"}`` of a datalist written by ``nodules.json``.

    The class is the entry's ``nodule`` flag; paths are made absolute against the datalist's folder; ``case`` (the
    patient id of the study's split) is the entry's ``case`` field, else the image's file name without ``.nii.gz``.

    Raises:
        FileNotFoundError: when the datalist or an image is missing.
        ValueError: when an entry has no ``image`` or ``nodule`` (naming the file and the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no datalist (write one with configs/nodules.json)")
    entries = json.loads(path.read_text()).get(key, [])
    out = []
    for i, e in enumerate(entries):
        if "image" not in e or "nodule" not in e:
            raise ValueError(f"{path}: entry {i} of '{key}' needs 'image' and 'nodule' (0/1), got {sorted(e)}")
        image = Path(e["image"]) if Path(e["image"]).is_absolute() else path.parent / e["image"]
        if not image.is_file():
            raise FileNotFoundError(f"{path}: entry {i}: image {image} not found")
        case = str(e.get("case", nifti_stem(image)))
        out.append({"image": str(image), "label": float(e["nodule"]), "case": case})
    if not out:
        raise ValueError(f"{path}: no entries under '{key}'")
    return out


def load_pretrained(network: nn.Module, path: str | os.PathLike | None, key: str = "classifier") -> nn.Module:
    """Load the weights of a previous classifier run (``finetune``) into ``network``: a weights file, or a run folder
    (its best-validation or final weights, see :func:`load_best`); nothing when ``path`` is None.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    if path is None:
        return network
    if Path(path).is_dir():
        return load_best(network, path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no pre-trained classifier (run the 'synthetic' experiment first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state.get(key, state))
    return network


def load_best(network: nn.Module, run_dir: str | os.PathLike) -> nn.Module:
    """Load a run's best-validation weights (``model.pt``), or its final weights (``final.pt``) when the run had no
    validation split.

    Raises:
        FileNotFoundError: when the run wrote neither.
    """
    run_dir = Path(run_dir)
    for name in ("model.pt", "final.pt"):
        if (run_dir / name).is_file():
            return load_pretrained(network, run_dir / name)
    raise FileNotFoundError(f"{run_dir}: neither model.pt (best validation) nor final.pt was written")


class TestAccuracy:
    """Accuracy of a classifier on the test split, written to ``test_metrics.json`` (the paper's Fig. 3b measure).

    Args:
        network: the classifier.
        loader: test ``DataLoader`` (``image``, ``label``).
        out: output JSON path.
        device: torch device.
        info: facts recorded beside the accuracy (experiment, seed, nodule size).
    """

    def __init__(
        self,
        network: nn.Module,
        loader: Any,
        out: str | os.PathLike,
        device: str | torch.device = "cpu",
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.network, self.loader, self.out, self.device = network, loader, Path(out), torch.device(device)
        self.info = dict(info or {})

    @torch.no_grad()
    def run(self) -> dict[str, Any]:
        self.network.eval()
        correct = total = 0
        for batch in self.loader:
            logits = self.network(batch["image"].to(self.device)).float().view(-1)
            labels = batch["label"].to(self.device).float().view(-1)
            correct += int(((logits > 0).float() == labels).sum().item())
            total += labels.numel()
        result = {**self.info, "accuracy": correct / max(total, 1), "n_test": total}
        write_json_atomic(result, self.out)
        return result


def summarise_accuracy(runs_dir: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Accuracy table and plot of classifier runs (the paper's Fig. 3b layout): mean ± std over seeds per experiment
    and nodule size, from every ``test_metrics.json`` under ``runs_dir``.

    Args:
        runs_dir: folder holding the runs (searched recursively).
        out: output folder (``accuracy.md``, ``accuracy.json``, ``accuracy.png``).

    Returns:
        ``{"rows": [{"experiment", "nodule_radius", "mean", "std", "seeds"}, ...]}``.

    Raises:
        FileNotFoundError: when no ``test_metrics.json`` is found.
    """
    files = sorted(Path(runs_dir).rglob("test_metrics.json"))
    if not files:
        raise FileNotFoundError(f"{runs_dir}: no test_metrics.json (run configs/train_classifier.json first)")
    groups: dict[tuple[str, Any], dict[int, float]] = {}
    for f in files:
        m = json.loads(f.read_text())
        groups.setdefault((m["experiment"], m.get("nodule_radius")), {})[int(m.get("seed", 0))] = float(m["accuracy"])
    order = {e: i for i, e in enumerate(EXPERIMENTS)}
    rows = []
    for (experiment, radius), by_seed in sorted(
        groups.items(), key=lambda kv: (float("inf") if kv[0][1] is None else kv[0][1], order.get(kv[0][0], 9))
    ):
        acc = np.array(list(by_seed.values()))
        rows.append(
            {
                "experiment": experiment,
                "nodule_radius": radius,
                "mean": float(acc.mean()),
                "std": float(acc.std()),
                "seeds": sorted(by_seed),
            }
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| nodule radius | experiment | test accuracy (mean ± std) | seeds |", "|---|---|---|---|"]
    lines += [
        f"| {_radius_text(r['nodule_radius'])} | {r['experiment']} | {r['mean']:.3f} ± {r['std']:.3f} | {r['seeds']} |"
        for r in rows
    ]
    (out / "accuracy.md").write_text("\n".join(lines) + "\n")
    write_json_atomic({"rows": rows}, out / "accuracy.json")
    _plot_accuracy(rows, out / "accuracy.png")
    return {"rows": rows}


def _radius_text(radius: Any) -> str:
    """Table / plot label of a nodule radius (``None``: a run on real data only, whose nodules are the scans' own)."""
    return "real nodules" if radius is None else f"{radius:g}" if isinstance(radius, float) else str(radius)


def _plot_accuracy(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radii = list(dict.fromkeys(_radius_text(r["nodule_radius"]) for r in rows))
    experiments = [e for e in EXPERIMENTS if any(r["experiment"] == e for r in rows)]
    width = 0.8 / max(len(experiments), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(radii), 3.5))
    for k, e in enumerate(experiments):
        xs, means, stds = [], [], []
        for i, radius in enumerate(radii):
            for r in rows:
                if r["experiment"] == e and _radius_text(r["nodule_radius"]) == radius:
                    xs.append(i + k * width)
                    means.append(r["mean"])
                    stds.append(r["std"])
        ax.bar(xs, means, width, yerr=stds, label=e, capsize=2)
    ax.set_xticks([i + width * (len(experiments) - 1) / 2 for i in range(len(radii))], radii)
    ax.set_xlabel("nodule radius")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
