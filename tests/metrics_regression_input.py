"""The tiny fixed input of the metrics.json regression test (tests/test_metrics_regression.py) and the options it runs
with; ``python tests/metrics_regression_input.py --record`` rewrites ``tests/data/metrics_regression.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
RECORD = Path(__file__).parent / "data" / "metrics_regression.json"
# values recorded before the suite was split into registry / options / extractor-owned input conventions
FAST_METRICS = [
    "f3d", "mmd_linear", "mmd_gaussian", "msssim", "psnr", "histogram", "is", "prdc", "memorisation", "masks",
]  # fmt: skip
PRETRAINED_METRICS = ["fid3d_medicalnet", "fid25d_radimagenet", "fid2d_slices", "mmd_gaussian", "is", "prdc"]
# options that reproduce the recorded behaviour (later defaults changed: body-mask histograms, shifted-copy search)
LEGACY = {"hist_body_mask": False, "memorisation_max_shift": 0}


def write_inputs(root: Path) -> Path:
    """4 real and 4 synthetic 16^3 volumes (one synthetic a noisy copy of a real one), label maps; returns ``root``."""
    from ctsynth.data.io import save_volume

    rng = np.random.default_rng(123)
    real = []
    for i in range(4):
        v = ndimage.gaussian_filter(rng.normal(size=(16, 16, 16)), 1.5) * 1500.0 + 30.0
        v[:2] = -1000.0
        real.append(v.astype(np.float32))
        save_volume(real[-1], AFFINE, root / "real" / f"case{i}.nii.gz")
    for i in range(4):
        if i == 0:
            v = real[1] + rng.normal(0, 5.0, real[1].shape).astype(np.float32)
        else:
            v = (ndimage.gaussian_filter(rng.normal(size=(16, 16, 16)), 1.0) * 1200.0 + 80.0).astype(np.float32)
            v[:3] = -1000.0
        save_volume(v, AFFINE, root / "syn" / f"sample_{i}.nii.gz")
    for what in ("real_labels", "syn_labels"):
        for i in range(4):
            m = np.zeros((16, 16, 16), np.uint8)
            c = rng.integers(5, 11, size=3)
            m[c[0] - 3 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 2 : c[2] + 2] = 1
            m[c[0], c[1], c[2]] = 2
            name = f"case{i}.nii.gz" if what == "real_labels" else f"sample_{i}.nii.gz"
            save_volume(m, AFFINE, root / what / name, dtype=np.uint8)
    return root


def numbers(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten the numeric and string leaves of a metrics dict to ``{"a/b/c": value}`` (protocol text left out)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k in ("protocol", "extractor"):
                continue
            out.update(numbers(v, f"{prefix}{k}/"))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{prefix}{i}/"))
    else:
        out[prefix.rstrip("/")] = tree
    return out


def run_legacy_call(root: Path, metrics: list[str], **kwargs: Any) -> dict[str, Any]:
    """Run the suite through its keyword API (as before the refactor) and return the ``metrics`` dict."""
    from ctsynth.metrics.suite import evaluate

    out = root / f"out_{len(metrics)}"
    path = evaluate(root / "real", root / "syn", out, metrics=metrics, progress=False, **kwargs)
    return json.loads(Path(path).read_text())["metrics"]


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = write_inputs(Path(tmp))
        fast = run_legacy_call(
            root,
            FAST_METRICS,
            real_label_dir=root / "real_labels",
            synthetic_label_dir=root / "syn_labels",
            extractor_kwargs={"f3d": {"padding": "same", "resize_to": None}},
            batch_size=3,
            window=(-1000.0, 1000.0),
        )
        pre = run_legacy_call(
            root,
            PRETRAINED_METRICS,
            allow_random_weights=True,
            batch_size=4,
            window=(-1000.0, 1000.0),
            extractor_kwargs={"inception2d": {"slices": "centre"}, "radimagenet25d": {"slices": "centre"}},
        )
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({"fast": numbers(fast), "pretrained_random": numbers(pre)}, indent=1) + "\n")
    print(f"wrote {RECORD}")
