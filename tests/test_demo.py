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


def test_bundle_demos_are_discovered_from_their_declarations():
    from ctsynth.demo import BUNDLES_DIR, discover_bundle_demos, step_command

    demos = discover_bundle_demos()
    assert "pancreas_ct_3dgaunet" in demos
    places = {"data": "/d", "work": "/w"}
    for name, declaration in demos.items():
        for step in declaration["steps"]:
            args = step_command(BUNDLES_DIR / name, step, places)
            assert "{" not in " ".join(args)  # every placeholder filled
            if args[0] == "monai.bundle":  # bundle configs exist, and the smoke overlay comes last
                files = json.loads(args[args.index("--config_file") + 1].replace("'", '"'))
                assert files[-1] == "configs/smoke.json"
                assert all((BUNDLES_DIR / name / f).is_file() for f in files)


def test_step_command_flags_and_errors(tmp_path):
    from ctsynth.demo import discover_bundle_demos, step_command

    step = {"name": "x", "configs": ["configs/a.json"], "run_id": "go", "args": {"n": 2, "flag": True, "p": "{work}/o"}}
    args = step_command(tmp_path, step, {"work": "/w"})
    assert args == ["monai.bundle", "run", "go", "--config_file", "['configs/a.json']", "--n", "2", "--flag", "true",
                    "--p", "/w/o"]  # fmt: skip
    with pytest.raises(ValueError, match="needs 'configs' or 'module'"):
        step_command(tmp_path, {"name": "bad"}, {})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "demo.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"b/demo.json: not valid JSON"):
        discover_bundle_demos(tmp_path)
