"""``make demo``'s data part: phantom datasets, validation and previews (the bundle steps have their own tests)."""

from __future__ import annotations

import json

import pytest

from ctsynth.demo import main


def test_demo_writes_phantoms_datalists_and_previews(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--n", "4", "--size", "48", "--skip_bundles"]) == 0
    out = capsys.readouterr().out
    assert "PNG previews:" in out and str(tmp_path) in out
    for kind in ("abdomen", "chest"):
        dl = json.loads((tmp_path / f"phantom_{kind}" / "datalist.json").read_text())
        assert len(dl["training"]) + len(dl["testing"]) == 4
    pngs = sorted(p.name for p in (tmp_path / "previews").glob("*.png"))
    assert len(pngs) == 4 and any(p.startswith("chest_") for p in pngs)


def test_demo_rejects_too_few_phantoms(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--n", "2"])
