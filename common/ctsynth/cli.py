"""The ``ctsynth`` command line: data preparation, validation, previews and evaluation.

Each command is a thin wrapper over a library function (imported lazily so ``ctsynth --help`` is fast);
the functions are the API, the CLI only parses arguments. Run ``ctsynth <command> --help`` for flags.

Examples::

    ctsynth make-phantoms --kind abdomen --n 32 --size 128 --out data/phantom_abdomen
    ctsynth dicom-to-nifti --dicom_dir scan_dicom/ --out scan.nii.gz
    ctsynth make-datalist --source data/phantom_abdomen --out data/phantom_abdomen/datalist.json
    ctsynth validate data/phantom_abdomen/datalist.json
    ctsynth preview --image img.nii.gz --label lbl.nii.gz --out img.png
    ctsynth evaluate --real data/real --synthetic samples/ --out eval/
"""

from __future__ import annotations

import sys
from typing import Any


def make_phantoms(
    out: str,
    kind: str = "abdomen",
    n: int = 8,
    size: int = 128,
    spacing: float = 1.0,
    seed: int = 0,
    tumor_fraction: float = 1.0,
    nodules: int = 1,
) -> str:
    """Write an MSD-style dataset (imagesTr/, labelsTr/, dataset.json) of procedural CT phantoms.

    Args:
        out: output folder.
        kind: "abdomen" (pancreas=1, tumour=2) or "chest" (nodule=1).
        n: number of volumes.
        size: cube edge in voxels.
        spacing: isotropic voxel spacing in mm.
        seed: base seed; volume i uses seed + i.
        tumor_fraction: abdomen only, fraction of volumes that carry a PDAC tumour.
        nodules: chest only, number of nodules per volume.

    Returns:
        Path of the written ``dataset.json``.
    """
    from ctsynth.data.phantoms import write_phantom_dataset

    path = write_phantom_dataset(
        out, kind=kind, n=n, size=size, spacing=spacing, seed=seed, tumor_fraction=tumor_fraction, nodules=nodules
    )
    print(f"wrote {n} {kind} phantoms: {path}")
    return str(path)


def dicom_to_nifti(dicom_dir: str, out: str, series_uid: str | None = None, allow_non_ct: bool = False) -> str:
    """Convert one DICOM CT series to a NIfTI volume in HU with the correct affine.

    Args:
        dicom_dir: folder holding the series' files.
        out: destination ``.nii.gz``.
        series_uid: SeriesInstanceUID to convert when the folder holds several series.
        allow_non_ct: convert a non-CT series (with a warning) instead of failing.

    Returns:
        The written path.
    """
    from ctsynth.data.dicom import dicom_series_to_nifti

    path = dicom_series_to_nifti(dicom_dir, out, series_uid=series_uid, allow_non_ct=allow_non_ct)
    print(f"wrote {path}")
    return str(path)


def make_datalist(
    source: str, out: str | None = None, n_folds: int = 5, test_fraction: float = 0.2, seed: int = 0
) -> str:
    """Make a datalist JSON (MSD style, with seeded folds and a held-out test split).

    Args:
        source: an MSD ``dataset.json``, or a folder holding one or holding ``imagesTr/`` and ``labelsTr/``.
        out: destination JSON (default: ``<dataset folder>/datalist.json``).
        n_folds: number of cross-validation folds over the non-test cases.
        test_fraction: fraction of cases held out as the test split.
        seed: seed of the split.

    Returns:
        Path of the written datalist.
    """
    from ctsynth.data.datalist import make_datalist as _make

    path = _make(source, out=out, n_folds=n_folds, test_fraction=test_fraction, seed=seed)
    print(f"wrote {path}")
    return str(path)


def validate(datalist: str, base_dir: str | None = None, labels: Any = None, check_hu: bool = True) -> None:
    """Check every file of a datalist; exit non-zero with one line per problem.

    Args:
        datalist: datalist JSON (or an MSD ``dataset.json``).
        base_dir: folder the relative paths are relative to (default: the datalist's folder).
        labels: allowed label values, e.g. ``--labels 1,2`` (default: any non-negative integers).
        check_hu: check that image intensities look like Hounsfield units.
    """
    from ctsynth.data.validation import DataValidationError, validate_datalist

    allowed = None
    if labels is not None:  # fire parses "1,2" as a tuple, "1" as an int, '"1,2"' as a string
        values = labels if isinstance(labels, list | tuple) else str(labels).split(",")
        allowed = [int(v) for v in values]
    try:
        report = validate_datalist(datalist, base_dir=base_dir, allowed_labels=allowed, check_hu=check_hu)
    except DataValidationError as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)
    print(report)


def preview(image: str, out: str, label: str | None = None, window: tuple[float, float] = (-160.0, 240.0)) -> str:
    """Save a PNG of the three orthogonal centre slices, with the label overlaid.

    Args:
        image: NIfTI image in HU.
        out: destination PNG.
        label: optional NIfTI label map on the same grid.
        window: HU display window.

    Returns:
        The written path.
    """
    from ctsynth.report.previews import save_preview_from_files

    path = save_preview_from_files(image, out, label=label, window=tuple(window))
    print(f"wrote {path}")
    return str(path)


def evaluate(real: str, synthetic: str, out: str, metrics: Any = None, **kwargs: Any) -> str:
    """Evaluate a synthetic set against a real reference set; writes metrics.json, CSVs and plots.

    Args:
        real: folder of NIfTI volumes or a datalist JSON.
        synthetic: folder of NIfTI volumes.
        out: output folder.
        metrics: metric names (comma-separated or a list); default: the full suite.
        kwargs: fields of :class:`ctsynth.metrics.options.EvaluationOptions` as flags (``--window``,
            ``--resize_to``, ``--max_volumes``, ``--hist_body_mask``, ``--memorisation_max_shift``, ...). Flags on
            untrained or random-weight features and geometry mismatches between the sets are printed as warnings.

    Returns:
        Path of ``metrics.json``.
    """
    from ctsynth.metrics.suite import evaluate as _evaluate

    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    path = _evaluate(real=real, synthetic=synthetic, out=out, metrics=metrics, **kwargs)
    print(f"wrote {path}")
    return str(path)


COMMANDS = {
    "make-phantoms": make_phantoms,
    "dicom-to-nifti": dicom_to_nifti,
    "make-datalist": make_datalist,
    "validate": validate,
    "preview": preview,
    "evaluate": evaluate,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ctsynth`` console script (python-fire)."""
    import fire

    argv = sys.argv[1:] if argv is None else argv
    commands = dict(COMMANDS)
    commands.update({k.replace("-", "_"): v for k, v in COMMANDS.items()})
    fire.Fire(commands, command=argv, name="ctsynth")


if __name__ == "__main__":
    main()
