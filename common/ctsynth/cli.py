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

Errors a user can act on (a missing or corrupt file, a wrong or unknown flag, bad data) print one paragraph,
``ctsynth <command>: error: ...``, on stderr and exit with :data:`EXIT_USER_ERROR` (:data:`EXIT_USAGE` for flags);
``--debug`` anywhere on the command line shows the Python traceback instead. Hints of the library (``pass
series_uid=<uid>``) are shown as flags (``pass --series_uid=<uid>``).
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
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
        try:
            allowed = [int(v) for v in values]
        except (TypeError, ValueError):
            raise UsageError(f"--labels expects integer label values such as --labels 1,2; got {labels!r}") from None
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

#: Exit status of a data or file error (missing, corrupt or invalid input).
EXIT_USER_ERROR = 1
#: Exit status of a wrong or unknown flag.
EXIT_USAGE = 2
#: Exceptions that report a problem with the user's input rather than a bug: shown without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError)
DEBUG_FLAG = "--debug"


class UsageError(ValueError):
    """A flag is unknown or its value has the wrong type; the message names the flag as typed on the command line."""


def _flag_names(command: Callable) -> set[str] | None:
    """The flags ``command`` accepts (``--out``, ``--n_folds``...), or None when it forwards any (``**kwargs``)."""
    parameters = inspect.signature(command).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def check_flags(name: str, command: Callable, args: list[str]) -> None:
    """Refuse a flag the command does not have, before anything runs.

    python-fire would run the command with its defaults and then apply the unknown flag to the command's result.

    Args:
        name: the command as typed (``make-phantoms``).
        command: its function.
        args: the arguments after the command.

    Raises:
        UsageError: naming the unknown flag and listing the command's flags.
    """
    known = _flag_names(command)
    if known is None:
        return
    for arg in args:
        if arg == "--":  # fire's separator: what follows is for fire itself (e.g. -- --help)
            return
        if not arg.startswith("--") or arg in ("--help", "--helpfull"):
            continue
        flag = arg[2:].split("=", 1)[0].replace("-", "_")
        if flag not in known and not (flag.startswith("no") and flag[2:] in known):
            flags = ", ".join(f"--{k}" for k in sorted(known))
            raise UsageError(f"unknown flag --{flag}; `ctsynth {name}` takes {flags}")


def _accepted_types(hint: Any) -> tuple[type, ...]:
    """The plain types of an annotation (``int | None`` -> (int, NoneType)); () when it is not checked."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _accepted_types(arg))
    return (hint,) if hint in (int, float, str, bool, type(None)) else ()


def _checked(command: Callable) -> Callable:
    """Wrap a command so flag values of the wrong type are refused by flag name, before the library sees them.

    python-fire parses ``--n abc`` as the string ``"abc"`` and ``--out 123`` as the integer 123: an integer or
    float flag given a non-number is a :class:`UsageError`; a number given to a string flag becomes a string.
    """
    hints = typing.get_type_hints(command)
    signature = inspect.signature(command)

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs)
        for key, value in list(bound.arguments.items()):
            accepted = _accepted_types(hints.get(key))
            if not accepted or value is None or isinstance(value, bool) and bool in accepted:
                continue
            if str in accepted and isinstance(value, int | float) and not isinstance(value, bool):
                bound.arguments[key] = str(value)
            elif float in accepted and isinstance(value, int | float) and not isinstance(value, bool):
                continue
            elif not isinstance(value, accepted) or isinstance(value, bool) and bool not in accepted:
                kind = " or ".join(
                    "a number"
                    if t is float
                    else {int: "an integer", str: "a text", bool: "true or false"}.get(t, t.__name__)
                    for t in accepted
                    if t is not type(None)
                )
                raise UsageError(f"--{key} expects {kind}; got {value!r}")
        return command(*bound.args, **bound.kwargs)

    return run


_KEYWORD_HINT = re.compile(r"\bpass (\w+)=(\([^)]*\)|<[^>]*>|[^\s,;)]+)")


def as_flag_hints(message: str) -> str:
    """Rewrite the library's ``pass name=value`` hints as flags: ``pass --name=value`` (``--name`` for True)."""

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        return f"pass --{name}" if value == "True" else f"pass --{name}={value.replace(' ', '')}"

    return _KEYWORD_HINT.sub(flag, message)


def format_error(command: str | None, error: BaseException) -> str:
    """The paragraph shown for a user error: ``ctsynth <command>: error: <message>`` and how to see the traceback."""
    message = as_flag_hints(str(error).strip() or type(error).__name__)
    if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    where = f"ctsynth {command}" if command else "ctsynth"
    return f"{where}: error: {message}\n(run again with {DEBUG_FLAG} to see the traceback)"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ctsynth`` console script (python-fire).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``); ``--debug`` anywhere shows tracebacks of user errors.

    Raises:
        SystemExit: with :data:`EXIT_USAGE` for a wrong or unknown flag, :data:`EXIT_USER_ERROR` for another
            user error (see :data:`USER_ERRORS`), after printing one paragraph on stderr.
    """
    import fire

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    commands = {name: _checked(command) for name, command in COMMANDS.items()}
    commands.update({k.replace("-", "_"): v for k, v in commands.items()})
    name = argv[0] if argv and argv[0] in commands else None
    try:
        if name is not None:
            check_flags(name, COMMANDS[name.replace("_", "-")], argv[1:])
        fire.Fire(commands, command=argv, name="ctsynth")
    except USER_ERRORS as e:
        if debug:
            raise
        print(format_error(name, e), file=sys.stderr)
        sys.exit(EXIT_USAGE if isinstance(e, UsageError) else EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
