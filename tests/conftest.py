"""Shared pytest fixtures: paths to the shared real CT and schemas, and small phantom datasets."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTSYNTH_SHARED", REPO_ROOT.parent / "shared"))
REAL_CT_DIR = SHARED / "data" / "real-ct"
REAL_CHEST_DIR = SHARED / "data" / "real-ct-chest"
SCHEMA_DIR = SHARED / "monai-schemas"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set CTSYNTH_SHARED to the shared/ folder to run this test)")
    return path


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    """Folder with the real abdominal CT (``ct.nii.gz``, ``masks/``); skips when absent."""
    return _require(REAL_CT_DIR / "ct.nii.gz", "the real CT").parent


@pytest.fixture(scope="session")
def real_chest_dir() -> Path:
    """Folder with the real chest CT angiography crop (``ct.nii.gz``, 1.5 mm); skips when absent."""
    return _require(REAL_CHEST_DIR / "ct.nii.gz", "the real chest CT").parent


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    """Folder with offline copies of the MONAI metadata schemas; skips when absent."""
    return _require(SCHEMA_DIR, "the MONAI metadata schemas")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator, fresh per test."""
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- bundles
BUNDLES_DIR = REPO_ROOT / "bundles"


class BundleRunner:
    """Run a bundle of this repository the ways users do, for tests.

    - :meth:`scripts`: the bundle's ``scripts`` package imported in-process (bundle root on ``sys.path``); every
      bundle has a package named ``scripts``, so previous ``scripts`` modules and ``sys.path`` are restored after.
    - :meth:`run`: a config through ``monai.bundle.run`` (the function behind ``python -m monai.bundle run``)
      in-process, with the bundle's ``configs/smoke.json`` merged last unless ``smoke=False``.
    - :meth:`run_cli`: the same through ``python -m monai.bundle run`` in a subprocess of ``sys.executable``.
    - :meth:`workflow`: an initialised ``ConfigWorkflow`` (``check_properties()``).

    Args:
        name: folder name under ``bundles/``, or the path of a bundle folder.
    """

    def __init__(self, name: str | os.PathLike) -> None:
        self.root = Path(name) if Path(name).is_absolute() else BUNDLES_DIR / name
        self.name = self.root.name
        self.configs = self.root / "configs"
        if not self.root.is_dir():
            raise FileNotFoundError(f"no bundle {self.root}")

    def config_files(self, *configs: str, smoke: bool = True) -> list[str]:
        """Absolute config paths, smoke overlay last."""
        files = [str(self.configs / c) for c in configs]
        if smoke and (self.configs / "smoke.json").is_file():
            files.append(str(self.configs / "smoke.json"))
        return files

    @contextlib.contextmanager
    def scripts(self):
        """The bundle's ``scripts`` package, importable inside the block (state restored afterwards)."""
        import importlib
        import sys

        saved_modules = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
        for k in saved_modules:
            del sys.modules[k]
        saved_path = list(sys.path)
        sys.path.insert(0, str(self.root))
        try:
            yield importlib.import_module("scripts")
        finally:
            sys.path[:] = saved_path
            for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
                del sys.modules[k]
            sys.modules.update(saved_modules)

    def run(self, *configs: str, smoke: bool = True, **overrides) -> None:
        """``monai.bundle.run`` of configs of this bundle in-process (``scripts`` isolated as in :meth:`scripts`)."""
        from monai.bundle import run

        with self.scripts():
            run(
                config_file=self.config_files(*configs, smoke=smoke),
                meta_file=str(self.configs / "metadata.json"),
                logging_file=False,
                **overrides,
            )

    def workflow(self, *configs: str, workflow_type: str, smoke: bool = False, **overrides):
        """An initialised ``monai.bundle.ConfigWorkflow`` of configs of this bundle (with its metadata, no logging
        file), for ``check_properties()``; enter :meth:`scripts` first when the configs import the bundle's scripts.
        """
        from monai.bundle import ConfigWorkflow

        wf = ConfigWorkflow(
            config_file=self.config_files(*configs, smoke=smoke),
            meta_file=str(self.configs / "metadata.json"),
            logging_file=False,
            workflow_type=workflow_type,
            **overrides,
        )
        wf.initialize()
        return wf

    def run_cli(self, *configs: str, args: tuple[str, ...] = (), smoke: bool = True, timeout: int = 600, check=True):
        """``python -m monai.bundle run`` in a subprocess (cwd: the bundle); fails the test on error when ``check``."""
        import subprocess
        import sys

        files = "[" + ",".join(f"'{c}'" for c in self.config_files(*configs, smoke=smoke)) + "]"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *args]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(self.root), str(REPO_ROOT / "common")]),
            OMP_NUM_THREADS="2",
        )
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        return proc

    def run_torchrun(
        self,
        *configs: str,
        args: tuple[str, ...] = (),
        finalize_first: tuple[str, ...] = (),
        nproc: int = 2,
        smoke: bool = True,
        timeout: int = 600,
    ):
        """``python -m torch.distributed.run`` of ``monai.bundle run`` on ``nproc`` CPU processes (gloo).

        ``finalize_first`` expressions run before the configs' own ``finalize`` (e.g. each rank dumping its weights
        before the process group is torn down). Returns the ``CompletedProcess``; the caller asserts on it.
        """
        import json
        import subprocess
        import sys

        files = self.config_files(*configs, smoke=smoke)
        finalize: list[str] = []
        for f in files:
            finalize = json.loads(Path(f).read_text()).get("finalize", finalize)
        extra = ["--finalize", json.dumps([*finalize_first, *finalize])] if finalize_first else []
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
               "-m", "monai.bundle", "run", "--config_file", "[" + ",".join(f"'{c}'" for c in files) + "]",
               *args, *extra]  # fmt: skip
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(self.root), str(REPO_ROOT / "common")]),
            OMP_NUM_THREADS="1",
        )
        return subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)

    def verify_metadata(self, schema_dir: Path, tmp_path: Path) -> dict:
        """Validate ``configs/metadata.json`` against the offline copy of the schema it names; returns the metadata."""
        import json
        import shutil

        from monai.bundle import verify_metadata

        meta_file = self.configs / "metadata.json"
        meta = json.loads(meta_file.read_text())
        schema = tmp_path / "schema.json"
        shutil.copy(schema_dir / meta["schema"].rsplit("/", 1)[-1], schema)
        verify_metadata(meta_file=str(meta_file), filepath=str(schema))
        return meta


@pytest.fixture(scope="session")
def bundle_runner():
    """Factory: ``bundle_runner("pancreas_ct_3dgaunet")`` -> :class:`BundleRunner`."""
    return BundleRunner
