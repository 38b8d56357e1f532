"""ctsynth.report.tables: "ours beside the paper" tables with protocol and per-column comparability notes."""

from __future__ import annotations

import csv
import json

import pytest

from ctsynth.report.tables import (
    ColumnComparability,
    Comparability,
    PaperTable,
    format_value,
    header_note,
    interleave_rows,
    write_table,
)

PAPER = {("tumor", "GAN"): {"FID": 198.23, "F3D": 271.31}, ("pancreas", "GAN"): {"FID": 287.75, "F3D": 872.33}}


def _table(**kwargs) -> PaperTable:
    spec = {
        "name": "t1",
        "title": "Table 1: quality",
        "columns": ("Tissue", "Model", "Source", "FID", "F3D"),
        "key_columns": ("Tissue", "Model"),
        "paper_values": PAPER,
        "citation": "Doe et al. 2023, Table 1",
        "protocol": "centre slices, 100 vs 100 volumes",
        "comparability": {
            "FID": ("ordering only", "other reference set"),
            "F3D": ColumnComparability("not comparable", "input scale differs"),
        },
    }
    return PaperTable(**{**spec, **kwargs})


def test_paper_table_interleaves_and_prints_header_note(tmp_path):
    ours = [{"Tissue": "pancreas", "Model": "GAN", "FID": 12.5, "F3D": 0.00123}, {"Tissue": "x", "Model": "new"}]
    paths = _table().write(ours, tmp_path, notes=["one set skipped"])
    md = paths["md"].read_text()
    lines = md.splitlines()
    assert lines[0] == "### Table 1: quality"
    # header note above the table: protocol, then comparability per column
    table_start = lines.index("| Tissue | Model | Source | FID | F3D |")
    header = "\n".join(lines[:table_start])
    assert "Protocol: centre slices, 100 vs 100 volumes" in header
    assert "- FID: **ordering only** (other reference set)" in header
    assert "- F3D: **not comparable** (input scale differs)" in header
    body = lines[table_start + 2 : table_start + 7]
    assert body == [
        "| tumor | GAN | paper (Doe et al. 2023, Table 1) | 198.23 | 271.31 |",
        "| pancreas | GAN | paper (Doe et al. 2023, Table 1) | 287.75 | 872.33 |",
        "| pancreas | GAN | ours | 12.50 | 0.00123 |",
        "| x | new | ours | n/a | n/a |",
        "",
    ]
    assert "- Rows marked 'paper (Doe et al. 2023, Table 1)' are published values" in md and "- one set skipped" in md
    # CSV: comment lines with protocol and comparability, then the plain table
    text = paths["csv"].read_text().splitlines()
    assert text[:3] == [
        "# protocol: centre slices, 100 vs 100 volumes",
        "# FID: ordering only (other reference set)",
        "# F3D: not comparable (input scale differs)",
    ]
    rows = list(csv.DictReader(line for line in text if not line.startswith("#")))
    assert rows[2] == {"Tissue": "pancreas", "Model": "GAN", "Source": "ours", "FID": "12.5", "F3D": "0.00123"}
    assert rows[3]["FID"] == ""
    data = json.loads(paths["json"].read_text())
    assert data["comparability"]["F3D"] == {"level": "not comparable", "reason": "input scale differs"}
    assert data["protocol"] == "centre slices, 100 vs 100 volumes" and data["citation"] == "Doe et al. 2023, Table 1"
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary file


def test_paper_table_requires_a_note_per_value_column():
    with pytest.raises(ValueError, match=r"table t1: no comparability note for column\(s\) \['F3D'\]"):
        _table(comparability={"FID": "comparable"})
    with pytest.raises(ValueError, match=r"table t1: unknown column\(s\) \['PSNR'\]"):
        _table(comparability={"FID": "comparable", "F3D": "comparable", "PSNR": "comparable"})
    with pytest.raises(ValueError, match="unknown comparability 'roughly'"):
        _table(comparability={"FID": "roughly", "F3D": "comparable"})


def test_header_note_groups_columns():
    note = header_note("p", {"A": "comparable", "B": ("ordering only", "r"), "C": ("ordering only", "r")})
    assert note == [
        "Protocol: p",
        "Comparability with the paper, per column:",
        "- A: **comparable**",
        "- B, C: **ordering only** (r)",
    ]
    assert header_note() == []
    assert Comparability("not comparable") is Comparability.NOT_COMPARABLE


def test_write_table_plain_and_errors(tmp_path):
    rows = [{"Model": "3DGAUNet", "FID-Sag": 1.234, "FID-Ax": None}]
    paths = write_table(rows, ["Model", "FID-Sag", "FID-Ax"], tmp_path, "t", title="T", notes=["n1"])
    assert paths["csv"].read_text().splitlines() == ["Model,FID-Sag,FID-Ax", "3DGAUNet,1.234,"]
    assert "| 3DGAUNet | 1.23 | n/a |" in paths["md"].read_text()
    assert "comparability" not in json.loads(paths["json"].read_text())
    with pytest.raises(ValueError, match=r"table t: comparability given for unknown column\(s\) \['PSNR'\]"):
        write_table(rows, ["Model"], tmp_path, "t", comparability={"PSNR": "comparable"})


def test_interleave_and_format():
    paper = {("a",): {"k": "a", "v": 1}, ("b",): {"k": "b", "v": 2}}
    ours = [{"k": "b", "v": 20}, {"k": "z", "v": 9}, {"k": "a", "v": 10}]
    assert [r["v"] for r in interleave_rows(ours, paper, ["k"])] == [1, 10, 2, 20, 9]
    assert format_value(0.67, digits=3) == "0.670" and format_value(0.0012345) == "0.00123"
    assert format_value(float("nan")) == "n/a" and format_value(True) == "True"
