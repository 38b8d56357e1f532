"""``make demo``: the main job on the embedded default data (procedural phantoms), end to end on a CPU.

Writes an abdominal and a chest phantom dataset (MSD layout), validates them, writes PNG previews
(orthogonal slices with label overlay), then runs each bundle's demo steps with tiny CPU settings, and
prints where everything is.

Usage::

    python -m ctsynth.demo --out demo_output [--n 4] [--size 128] [--skip_bundles]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO_ROOT / "bundles"


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def make_phantom_data(out: Path, n: int, size: int, seed: int = 0) -> dict[str, Path]:
    """Write abdomen and chest phantom datasets with datalists and previews.

    Args:
        out: demo output folder.
        n: number of volumes per kind.
        size: cube edge in voxels (1 mm abdomen; chest uses 224 mm / size spacing so the thorax fits).
        seed: base seed.

    Returns:
        ``{"abdomen": dataset folder, "chest": dataset folder, "previews": preview folder}``.
    """
    from ctsynth.data.datalist import make_datalist
    from ctsynth.data.phantoms import write_phantom_dataset
    from ctsynth.data.validation import validate_datalist
    from ctsynth.report.previews import save_preview_from_files

    previews = out / "previews"
    folders: dict[str, Path] = {"previews": previews}
    for kind, spacing, window in (("abdomen", 1.0, (-160.0, 240.0)), ("chest", 2.0, (-1000.0, 400.0))):
        t0 = time.perf_counter()
        folder = out / f"phantom_{kind}"
        ds = write_phantom_dataset(folder, kind=kind, n=n, size=size, spacing=spacing, seed=seed)
        datalist = make_datalist(ds, out=folder / "datalist.json", n_folds=2, test_fraction=0.25)
        report = validate_datalist(datalist)
        _log(f"{kind}: {n} phantoms {size}^3 at {spacing} mm in {time.perf_counter() - t0:.1f} s -> {folder}")
        _log(f"{kind}: validate: {str(report).splitlines()[0]}")
        cases = json.loads(Path(ds).read_text())["training"]
        for case in cases[: min(2, len(cases))]:
            img = folder / case["image"]
            lbl = folder / case["label"]
            name = Path(case["image"]).name.replace(".nii.gz", ".png")
            save_preview_from_files(img, previews / f"{kind}_{name}", label=lbl, window=window)
        folders[kind] = folder
    return folders


def run_bundle_command(bundle: str, args: list[str], log_file: Path) -> float:
    """Run ``python -m <args>`` for one bundle (cwd = the bundle folder, ``scripts`` importable); returns seconds.

    Raises:
        RuntimeError: when the command fails; the message points at its log file.
    """
    cmd = [sys.executable, "-m", *args]
    env = dict(os.environ, PYTHONPATH=str(BUNDLES_DIR / bundle))
    t0 = time.perf_counter()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=BUNDLES_DIR / bundle, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{bundle}: `python -m {' '.join(args[:4])} ...` failed (exit {proc.returncode}); see {log_file}"
        )
    return time.perf_counter() - t0


def demo_pancreas_ct_3dgaunet(out: Path, folders: dict[str, Path]) -> None:
    """3DGAUnet on the abdominal phantoms: cubes, 2 epochs of each GAN (tiny widths), checkpoint choice, sampling,
    the three blends and the paper's Tables 1-3.

    The settings are the bundle README's CPU smoke-run overrides; the samples show the pipeline works, not what a
    trained model looks like (that takes days on a GPU).
    """
    bundle = "pancreas_ct_3dgaunet"
    root = out / bundle
    logs = root / "logs"
    tiny_g = ["--network_def#channels", "[8,16,32]"]
    tiny_d = ["--discriminator_def#channels", "[4,8,8]"]
    bundle_run = ["monai.bundle", "run", "--config_file"]
    steps: list[tuple[str, list[str]]] = [
        (
            "prepare cubes",
            [*bundle_run, "configs/prepare_data.json", "--dataset_dir", str(folders["abdomen"])]
            + ["--output_dir", str(root / "cubes"), "--augment_per_volume", "2"],
        )
    ]
    for model in ("tumor", "pancreas"):
        steps += [
            (
                f"train {model} GAN (2 epochs)",
                [*bundle_run, "configs/train.json", "--model", model, "--dataset_dir", str(root / "cubes" / model)]
                + ["--output_dir", str(root / "runs" / model), "--max_epochs", "2", "--save_interval", "1"]
                + ["--batch_size", "2", "--num_workers", "0", *tiny_g, *tiny_d],
            ),
            (
                f"select {model} checkpoint",
                ["scripts.checkpoint_selection", "--run_dir", str(root / "runs" / model)]
                + ["--out", str(root / "models" / f"model_{model}.pt")],
            ),
            (
                f"sample {model} cubes",
                [*bundle_run, "configs/inference.json", "--model", model]
                + ["--ckpt_path", str(root / "models" / f"model_{model}.pt"), "--num_samples", "4"]
                + ["--output_dir", str(root / "samples" / model), *tiny_g],
            ),
        ]
    steps += [
        (
            "blend tumours into tissue (Blend I, II, III)",
            ["monai.bundle", "run", "run_all_methods", "--config_file", "configs/blend.json"]
            + ["--tumor_dir", str(root / "samples" / "tumor"), "--tissue_dir", str(root / "samples" / "pancreas")]
            + ["--blend_root", str(root / "blended"), "--n_pairs", "4"],
        ),
        (
            "cut reference PDAC cubes",
            ["monai.bundle", "run", "make_cubes", "--config_file", "configs/train_classifier.json"]
            + ["--real_ct_dir", str(folders["abdomen"]), "--dataset_dir", str(root / "classifier")],
        ),
        (
            "evaluate (paper Tables 1-3 + suite; random-weight Inception: not comparable to the paper)",
            [*bundle_run, "configs/evaluate.json", "--tumor_real", str(root / "cubes" / "tumor" / "images")]
            + ["--tumor_synthetic_dir", str(root / "samples" / "tumor")]
            + ["--pancreas_real", str(root / "cubes" / "pancreas" / "images")]
            + ["--pancreas_synthetic_dir", str(root / "samples" / "pancreas")]
            + ["--blend_reference", str(root / "classifier" / "real_cubes" / "pdac" / "images")]
            + ["--blend_dir", str(root / "blended"), "--output_dir", str(root / "eval")]
            + ["--allow_random_weights", "true"],
        ),
    ]
    for i, (what, args) in enumerate(steps):
        seconds = run_bundle_command(bundle, args, logs / f"{i:02d}_{what.split()[0]}.log")
        _log(f"{bundle}: {what}: {seconds:.0f} s")
    _log(f"{bundle}: cubes {root / 'cubes'}, samples and previews {root / 'samples'}, blends {root / 'blended'}")
    _log(f"{bundle}: tables {root / 'eval'} (table1.md, table2.md, table3.md), logs {logs}")


BUNDLE_DEMOS = {"pancreas_ct_3dgaunet": demo_pancreas_ct_3dgaunet}


def run_bundle_demos(out: Path, folders: dict[str, Path]) -> None:
    """Run every bundle's demo steps on the phantom data (tiny CPU settings; see each bundle's README)."""
    if not BUNDLES_DIR.is_dir():
        _log(f"no bundles folder at {BUNDLES_DIR} (installed outside the repository): skipping bundle demos")
        return
    for name, demo in BUNDLE_DEMOS.items():
        _log(f"{name}: running its demo steps")
        demo(out, folders)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--n", type=int, default=4, help="phantoms per kind")
    parser.add_argument("--size", type=int, default=128, help="phantom cube edge in voxels")
    parser.add_argument("--skip_bundles", action="store_true", help="only write the phantom data and previews")
    args = parser.parse_args(argv)
    if args.n < 4:
        parser.error("--n must be at least 4 (one test case and two cross-validation folds need 3 more)")
    out = Path(args.out).resolve()
    t0 = time.perf_counter()
    folders = make_phantom_data(out, args.n, args.size)
    if not args.skip_bundles:
        run_bundle_demos(out, folders)
    _log(f"done in {time.perf_counter() - t0:.0f} s")
    _log(f"phantom datasets: {folders['abdomen']}  {folders['chest']}")
    _log(f"PNG previews:     {folders['previews']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
