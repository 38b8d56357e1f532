"""Repository-level checks: dependency ranges, CI entry, README commands."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO_ROOT


def test_package_metadata_uses_ranges_not_cpu_pins():
    meta = tomllib.loads((REPO_ROOT / "common" / "pyproject.toml").read_text())
    deps = meta["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    monai = [d for d in deps if d.startswith("monai")]
    assert torch == ["torch>=2.4"], "torch must be a range so GPU users keep their CUDA build"
    assert monai and ">=1.5" in monai[0]
    assert not any("==" in d or "+cpu" in d for d in deps), deps
    assert meta["project"]["scripts"]["ctsynth"] == "ctsynth.cli:main"


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in ci
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile  # the CPU wheel on local disk, installed before monai
