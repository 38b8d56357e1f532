"""Shared pytest fixtures: paths to the shared real CT and schemas, and small phantom datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTSYNTH_SHARED", REPO_ROOT.parent / "shared"))
REAL_CT_DIR = SHARED / "data" / "real-ct"
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
def schema_dir() -> Path:
    """Folder with offline copies of the MONAI metadata schemas; skips when absent."""
    return _require(SCHEMA_DIR, "the MONAI metadata schemas")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator, fresh per test."""
    return np.random.default_rng(1234)
