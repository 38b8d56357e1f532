"""Study runner: one bundle config run per (arm, fold), every user override forwarded, metrics in one table.

Each run is a fresh MONAI bundle workflow (networks, optimisers, engines and handlers are new): in this process
through :class:`monai.bundle.ConfigWorkflow`, or in a subprocess through ``python -m monai.bundle run`` with the
current interpreter (``sys.executable``). The runner sets three config ids itself (the arm, the fold and the study's
output folder); every other override the user gave is forwarded unchanged to every run, nested ids such as
``train#dataloader#batch_size`` included. An override that would be replaced by the runner raises instead of being
dropped silently.

When a study is started from a bundle config (``python -m monai.bundle run --config_file train_x.json ...`` whose
``run`` section calls :meth:`StudyRunner.run`), the config cannot see which ids the user overrode on the command
line; :func:`overrides_from_argv` reads them back from the command line (and ``--args_file``) so that they reach
every run too.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctsynth.data.io import atomic_write, write_json_atomic

__all__ = ["RUN_ARGUMENTS", "StudyRunner", "bundle_cli_overrides", "cli_value", "overrides_from_argv"]

logger = logging.getLogger(__name__)

#: parameters of ``monai.bundle.scripts.run`` that are not config overrides
RUN_ARGUMENTS = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")


def _parse_value(text: str) -> Any:
    """A command-line value parsed as ``python -m monai.bundle`` (Python Fire) parses it."""
    from fire.parser import DefaultParseValue

    return DefaultParseValue(text)


def bundle_cli_overrides(exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The config overrides of the ``python -m monai.bundle run ...`` command line that started this process.

    A study started from a bundle config forwards these to every run it starts, so nothing the user gave is dropped.

    Args:
        exclude: ids to leave out (those the study sets for each run itself).

    Returns:
        ``{id: value}`` (:func:`overrides_from_argv`), or ``{}`` when the process was started otherwise (pytest, a
        script).
    """
    main = Path(sys.argv[0]) if sys.argv else Path()
    if main.parts[-3:] != ("monai", "bundle", "__main__.py") or len(sys.argv) < 2 or sys.argv[1] != "run":
        return {}
    return overrides_from_argv(sys.argv[1:], exclude=exclude)


def overrides_from_argv(argv: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The config overrides of a ``python -m monai.bundle run`` command line.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``), e.g.
            ``["run", "--config_file", "c.json", "--train#dataloader#batch_size", "2"]``.
        exclude: further ids to leave out.

    Returns:
        ``{id: value}`` of every ``--id value`` / ``--id=value`` pair (values parsed as Fire parses them; a bare
        ``--flag`` is ``True``), without ``monai.bundle run``'s own parameters; pairs of ``--args_file`` come first
        and the command line wins.

    Raises:
        FileNotFoundError: when ``--args_file`` names a missing file.
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    if tokens and tokens[0] == "run":
        tokens = tokens[1:]
    if tokens and not tokens[0].startswith("--"):
        tokens = tokens[1:]  # positional run_id
    pairs: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected command-line argument {token!r} (expected --id value)")
        key, sep, text = token[2:].partition("=")
        if sep:
            value: Any = _parse_value(text)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = _parse_value(tokens[i + 1])
            i += 2
        else:
            value, i = True, i + 1
        pairs[key] = value
    merged: dict[str, Any] = {}
    if "args_file" in pairs:
        from monai.bundle import ConfigParser

        args_file = Path(str(pairs["args_file"]))
        if not args_file.is_file():
            raise FileNotFoundError(f"{args_file}: args_file not found")
        merged.update(ConfigParser.load_config_file(str(args_file)))
    merged.update(pairs)
    skip = set(RUN_ARGUMENTS) | set(exclude)
    return {k: v for k, v in merged.items() if k not in skip}


def cli_value(key: str, value: Any) -> str:
    """The command-line text of an override value that Fire parses back to the same value (paths as strings).

    Raises:
        TypeError: for a value that has no literal form (e.g. a ``torch.device``); pass those in process.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and _parse_value(value) == value and type(_parse_value(value)) is str:
        return value
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise TypeError(f"override {key!r}: {type(value).__name__} value {value!r} cannot be passed on a command line")
    return text


def _scalars(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) metrics dict, with ``a/b`` names for nested keys; booleans and lists left out."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_scalars(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
        elif value is None:
            out[name] = math.nan
    return out


class StudyRunner:
    """Run a bundle config once per (arm, fold) and collect each run's metrics into one table.

    Args:
        config_file: the bundle config (or a list merged in order); the subprocess runs start in the bundle folder
            (the config folder's parent), so the bundle's ``scripts`` package imports.
        arms: arm names (the value given to ``arm_key``).
        folds: number of folds (runs folds ``0..n-1``) or the list of folds to run.
        output_dir: study folder, forwarded as ``output_key``; the table goes there.
        overrides: every other config override, forwarded to every run unchanged (nested ids such as
            ``"train#dataloader#batch_size"`` included).
        meta_file: ``metadata.json`` (default: beside the config, if present).
        run_id: config section each run executes.
        arm_key: config id that receives the arm name.
        fold_key: config id that receives the fold.
        output_key: config id that receives ``output_dir``.
        run_dir: folder of one run relative to ``output_dir``, formatted with ``arm`` and ``fold``.
        metrics_files: ``{split name: metrics JSON relative to the run folder}`` to collect.
        in_process: ``True``: :class:`monai.bundle.ConfigWorkflow` in this process; ``False``: one
            ``python -m monai.bundle run`` subprocess per run.
        skip_completed: skip a run whose metrics files all exist (the study resumes after a crash).
        workflow_type: ``workflow_type`` of the in-process workflow (``None``: no property check).

    Raises:
        ValueError: when ``overrides`` sets an id that the runner sets itself (arm, fold, or a different output folder).
    """

    def __init__(
        self,
        config_file: str | os.PathLike | Sequence[str | os.PathLike],
        arms: Sequence[str],
        folds: int | Sequence[int],
        output_dir: str | os.PathLike,
        overrides: Mapping[str, Any] | None = None,
        meta_file: str | os.PathLike | None = None,
        run_id: str = "run",
        arm_key: str = "arm",
        fold_key: str = "fold",
        output_key: str = "output_dir",
        run_dir: str = "{arm}/fold_{fold}",
        metrics_files: Mapping[str, str] | None = None,
        in_process: bool = True,
        skip_completed: bool = True,
        workflow_type: str | None = None,
    ) -> None:
        files = [config_file] if isinstance(config_file, str | os.PathLike) else list(config_file)
        if not files:
            raise ValueError("config_file: no config given")
        self.config_files = [str(f) for f in files]
        missing = [f for f in self.config_files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: bundle config not found")
        if meta_file is None:
            candidate = Path(self.config_files[0]).parent / "metadata.json"
            meta_file = candidate if candidate.is_file() else None
        self.meta_file = None if meta_file is None else str(meta_file)
        self.arms = [str(a) for a in arms]
        self.folds = list(range(int(folds))) if isinstance(folds, int) else [int(f) for f in folds]
        if not self.arms or not self.folds:
            raise ValueError(f"a study needs at least one arm and one fold, got arms={self.arms} folds={self.folds}")
        self.output_dir = Path(output_dir)
        self.overrides = dict(overrides or {})
        for key in (arm_key, fold_key):
            if key in self.overrides:
                raise ValueError(
                    f"override {key!r}={self.overrides[key]!r}: the study sets {key!r} for every run; choose the arms "
                    "and folds of the study instead"
                )
        given_out = self.overrides.pop(output_key, None)
        if given_out is not None and Path(str(given_out)).resolve() != self.output_dir.resolve():
            raise ValueError(
                f"override {output_key!r}={given_out!r} differs from the study's output folder {str(self.output_dir)!r}"
            )
        self.run_id = run_id
        self.arm_key, self.fold_key, self.output_key = arm_key, fold_key, output_key
        self.run_dir_template = run_dir
        self.metrics_files = dict(metrics_files or {"test": "metrics.json"})
        self.in_process = in_process
        self.skip_completed = skip_completed
        self.workflow_type = workflow_type

    def run_dir(self, arm: str, fold: int) -> Path:
        """Folder of one run."""
        return self.output_dir / self.run_dir_template.format(arm=arm, fold=fold)

    def run_overrides(self, arm: str, fold: int) -> dict[str, Any]:
        """Everything one run receives: the user's overrides, then the arm, the fold and the output folder."""
        return {**self.overrides, self.arm_key: arm, self.fold_key: int(fold), self.output_key: str(self.output_dir)}

    def command(self, arm: str, fold: int) -> list[str]:
        """The ``python -m monai.bundle run`` command of one run (subprocess mode)."""
        cfg = self.config_files[0] if len(self.config_files) == 1 else repr(self.config_files)
        cmd = [sys.executable, "-m", "monai.bundle", "run", self.run_id, "--config_file", cfg]
        if self.meta_file is not None:
            cmd += ["--meta_file", self.meta_file]
        for key, value in self.run_overrides(arm, fold).items():
            cmd += [f"--{key}", cli_value(key, value)]
        return cmd

    def _completed(self, arm: str, fold: int) -> bool:
        run_dir = self.run_dir(arm, fold)
        return all((run_dir / rel).is_file() for rel in self.metrics_files.values())

    def run_one(self, arm: str, fold: int) -> None:
        """Run one (arm, fold) pair (skipped when completed and ``skip_completed``).

        Raises:
            RuntimeError: when a subprocess run fails (the message holds the end of its output).
        """
        if self.skip_completed and self._completed(arm, fold):
            logger.info("study: arm %s fold %d already done, skipped", arm, fold)
            return
        logger.info("study: arm %s fold %d", arm, fold)
        if self.in_process:
            from monai.bundle import ConfigWorkflow

            workflow = ConfigWorkflow(
                config_file=self.config_files,
                meta_file=self.meta_file,
                logging_file=False,
                workflow_type=self.workflow_type,
                run_id=self.run_id,
                **self.run_overrides(arm, fold),
            )
            workflow.initialize()
            workflow.run()
            workflow.finalize()
            return
        cwd = Path(self.config_files[0]).resolve().parent.parent
        res = subprocess.run(self.command(arm, fold), cwd=cwd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(
                f"study run arm {arm} fold {fold} failed (exit {res.returncode}):\n"
                f"{res.stdout[-2000:]}{res.stderr[-3000:]}"
            )

    def collect(self) -> list[dict[str, Any]]:
        """One row per (arm, fold, split) whose metrics file exists: ``arm``, ``fold``, ``split`` and its numbers."""
        rows = []
        for arm in self.arms:
            for fold in self.folds:
                for split, rel in self.metrics_files.items():
                    path = self.run_dir(arm, fold) / rel
                    if not path.is_file():
                        continue
                    try:
                        data = json.loads(path.read_text())
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}: metrics file is not valid JSON ({e})") from e
                    rows.append({"arm": arm, "fold": fold, "split": split, **_scalars(data)})
        return rows

    def write_table(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
        """Write ``study_metrics.csv`` / ``.json`` (one row per run and split) and ``study_summary.json`` (mean and
        standard deviation over folds per arm and split) to the output folder."""
        columns = ["arm", "fold", "split"]
        columns += sorted({k for r in rows for k in r} - set(columns))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None or r.get(c) != r.get(c) else r.get(c) for c in columns])
        paths = {
            "csv": atomic_write(self.output_dir / "study_metrics.csv", lambda t: Path(t).write_text(buffer.getvalue()))
        }
        safe = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
        paths["json"] = write_json_atomic({"columns": columns, "rows": safe}, self.output_dir / "study_metrics.json")
        summary: dict[str, Any] = {}
        for arm in self.arms:
            for split in self.metrics_files:
                group = [r for r in rows if r["arm"] == arm and r["split"] == split]
                if not group:
                    continue
                stats = {}
                for metric in columns[3:]:
                    vals = [r[metric] for r in group if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
                    if vals:
                        stats[metric] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
                summary.setdefault(arm, {})[split] = stats
        paths["summary"] = write_json_atomic(summary, self.output_dir / "study_summary.json")
        return paths

    def run(self) -> list[dict[str, Any]]:
        """Run every (arm, fold) pair (arm-major order), then collect and write the table; returns its rows."""
        for arm in self.arms:
            for fold in self.folds:
                self.run_one(arm, fold)
        rows = self.collect()
        self.write_table(rows)
        return rows
