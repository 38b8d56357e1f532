"""Repository-level checks: dependency ranges, CI entry, README commands."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.version import Version


def test_package_metadata_uses_ranges_not_cpu_pins():
    meta = tomllib.loads((REPO_ROOT / "common" / "pyproject.toml").read_text())
    deps = meta["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    monai = [d for d in deps if d.startswith("monai")]
    assert torch == ["torch>=2.4"], "torch must be a range so GPU users keep their CUDA build"
    assert monai and ">=1.5" in monai[0]
    assert not any("==" in d or "+cpu" in d for d in deps), deps
    assert meta["project"]["scripts"]["ctsynth"] == "ctsynth.cli:main"


def _monai_requirement(text: str) -> Requirement:
    found = [Requirement(d) for d in re.findall(r"[\"'](monai\[[^\"']*)[\"']", text)]
    assert len(found) == 1, found
    return found[0]


def test_monai_floor_excludes_the_release_that_unpickles_checkpoints():
    """MONAI 1.5.0's CheckpointLoader loads with ``weights_only=False``; 1.5.1 is the first weights-only release."""
    meta = tomllib.loads((REPO_ROOT / "common" / "pyproject.toml").read_text())
    from_metadata = [Requirement(d) for d in meta["project"]["dependencies"] if d.startswith("monai")]
    from_conda = _monai_requirement((REPO_ROOT / "environment.yml").read_text())
    for requirement in (*from_metadata, from_conda):
        assert not requirement.specifier.contains("1.5.0"), requirement
        assert requirement.specifier.contains("1.5.1") and requirement.specifier.contains("1.6.1"), requirement
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert floors and max(floors) >= Version("1.5.1"), requirement


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in ci
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile  # the CPU wheel on local disk, installed before monai
