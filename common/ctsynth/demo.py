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
from typing import Any

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
    # the bundle (its `scripts`) and this checkout's ctsynth, whichever ctsynth the environment has installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BUNDLES_DIR / bundle), str(REPO_ROOT / "common")]))
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


DEMO_FILE = "demo.json"


def _fill(value: Any, places: dict[str, str]) -> Any:
    """Replace ``{data}`` / ``{work}`` placeholders in strings (recursively in lists)."""
    if isinstance(value, str):
        for key, path in places.items():
            value = value.replace("{" + key + "}", path)
        return value
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    return value


def _cli_value(value: Any) -> str:
    """A command-line value as ``monai.bundle`` / fire parse it (JSON for lists and booleans)."""
    return value if isinstance(value, str) else json.dumps(value)


def step_command(bundle_dir: Path, step: dict[str, Any], places: dict[str, str]) -> list[str]:
    """``python -m`` arguments of one demo step.

    A step runs ``monai.bundle run [run_id] --config_file [configs..., configs/smoke.json]`` (the default), or another
    module of the bundle (``"module": "scripts.checkpoint_selection"``); ``args`` become ``--key value`` flags.

    Args:
        bundle_dir: the bundle folder.
        step: ``{"name", "configs"?, "run_id"?, "module"?, "args"?, "smoke"?}``.
        places: placeholder values.

    Returns:
        The argument list after ``python -m``.

    Raises:
        ValueError: when a step has neither ``configs`` nor ``module``.
    """
    flags: list[str] = []
    for key, value in step.get("args", {}).items():
        flags += [f"--{key}", _cli_value(_fill(value, places))]
    if "module" in step:
        return [step["module"], *flags]
    if "configs" not in step:
        raise ValueError(f"{bundle_dir / DEMO_FILE}: step '{step.get('name')}' needs 'configs' or 'module'")
    configs = list(step["configs"])
    if step.get("smoke", True) and (bundle_dir / "configs" / "smoke.json").is_file():
        configs.append("configs/smoke.json")
    run_id = [step["run_id"]] if "run_id" in step else []
    return ["monai.bundle", "run", *run_id, "--config_file", json.dumps(configs).replace('"', "'"), *flags]


def discover_bundle_demos(bundles_dir: Path = BUNDLES_DIR) -> dict[str, dict[str, Any]]:
    """Every bundle's demo declaration (``bundles/<name>/demo.json``), by bundle name.

    Raises:
        ValueError: when a declaration is not valid JSON or has no steps (the message names the file).
    """
    from ctsynth.data.io import read_json

    demos: dict[str, dict[str, Any]] = {}
    for path in sorted(bundles_dir.glob(f"*/{DEMO_FILE}")):
        declaration = read_json(path)
        if not declaration.get("steps"):
            raise ValueError(f"{path}: no 'steps'")
        demos[path.parent.name] = declaration
    return demos


def run_bundle_demo(name: str, declaration: dict[str, Any], out: Path, folders: dict[str, Path]) -> None:
    """Run one bundle's declared demo steps (tiny CPU settings from its smoke overlay).

    The samples show that the pipeline works, not what a trained model looks like (that takes days on a GPU).
    """
    bundle_dir = BUNDLES_DIR / name
    work = out / name
    data = declaration.get("data", "abdomen")
    places = {"data": str(folders[data]), "work": str(work)}
    for i, step in enumerate(declaration["steps"]):
        args = step_command(bundle_dir, step, places)
        seconds = run_bundle_command(name, args, work / "logs" / f"{i:02d}_{step['name'].split()[0]}.log")
        _log(f"{name}: {step['name']}: {seconds:.0f} s")
    for what, where in declaration.get("outputs", {}).items():
        _log(f"{name}: {what}: {_fill(where, places)}")
    _log(f"{name}: logs {work / 'logs'}")


def run_bundle_demos(out: Path, folders: dict[str, Path], only: list[str] | None = None) -> None:
    """Run every bundle's demo steps on the phantom data (see each bundle's ``demo.json``)."""
    if not BUNDLES_DIR.is_dir():
        _log(f"no bundles folder at {BUNDLES_DIR} (installed outside the repository): skipping bundle demos")
        return
    for name, declaration in discover_bundle_demos().items():
        if only and name not in only:
            continue
        _log(f"{name}: running its demo steps")
        run_bundle_demo(name, declaration, out, folders)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--n", type=int, default=4, help="phantoms per kind")
    parser.add_argument("--size", type=int, default=128, help="phantom cube edge in voxels")
    parser.add_argument("--skip_bundles", action="store_true", help="only write the phantom data and previews")
    parser.add_argument("--bundles", nargs="*", default=None, help="run only these bundles' demos (default: all)")
    args = parser.parse_args(argv)
    if args.n < 4:
        parser.error("--n must be at least 4 (one test case and two cross-validation folds need 3 more)")
    out = Path(args.out).resolve()
    t0 = time.perf_counter()
    folders = make_phantom_data(out, args.n, args.size)
    if not args.skip_bundles:
        run_bundle_demos(out, folders, args.bundles)
    _log(f"done in {time.perf_counter() - t0:.0f} s")
    _log(f"phantom datasets: {folders['abdomen']}  {folders['chest']}")
    _log(f"PNG previews:     {folders['previews']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
