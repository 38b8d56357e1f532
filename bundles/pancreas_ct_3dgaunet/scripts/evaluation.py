"""Tables in the 3DGAUnet paper's layout (Tables 1-4) with the published numbers beside ours.

The published values are copied from the paper (Shi et al. 2023, Tables 1-3 and section 3.4) and are always labelled
``(paper)``; nothing here computes them. Each table is written through :mod:`ctsynth.report.tables` with its protocol
and, per column, whether it is comparable with the paper (:data:`PAPER_TABLES`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctsynth.data.io import write_json_atomic
from ctsynth.metrics.options import EvaluationOptions
from ctsynth.report.tables import PaperTable, format_value, interleave_rows, paper_rows, table_to_markdown
from ctsynth.report.tables import write_table as write_table_with_notes

__all__ = [
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "BLEND_REFERENCE_CHOICE",
    "PAPER_TABLES",
    "PLANES",
    "PaperEvaluation",
    "table1_row",
    "table2_row",
    "table3_row",
    "format_value",
    "paper_tables",
    "reference_set",
    "table_to_markdown",
    "write_table",
]

PLANES = ("sagittal", "axial", "coronal")
PLANE_ABBREV = {"sagittal": "Sag", "axial": "Ax", "coronal": "Cor"}

# Table 1: slice-wise FID and PSNR on the centre slice of 100 real and 100 synthetic volumes, per plane.
PAPER_TABLE1: dict[tuple[str, str], dict[str, float]] = {
    ("tumor", "3D-GAN"): {
        "FID-Sag": 249.32, "FID-Ax": 262.18, "FID-Cor": 244.27, "PSNR-Sag": 20.10, "PSNR-Ax": 18.63, "PSNR-Cor": 19.49,
    },
    ("tumor", "3DGAUNet"): {
        "FID-Sag": 198.23, "FID-Ax": 202.44, "FID-Cor": 188.66, "PSNR-Sag": 16.52, "PSNR-Ax": 17.76, "PSNR-Cor": 17.16,
    },
    ("pancreas", "3D-GAN"): {
        "FID-Sag": 293.62, "FID-Ax": 342.60, "FID-Cor": 335.20, "PSNR-Sag": 18.20, "PSNR-Ax": 16.31, "PSNR-Cor": 14.05,
    },
    ("pancreas", "3DGAUNet"): {
        "FID-Sag": 287.75, "FID-Ax": 435.72, "FID-Cor": 327.41, "PSNR-Sag": 12.73, "PSNR-Ax": 7.21, "PSNR-Cor": 9.42,
    },
}  # fmt: skip

# Table 2: F3D (untrained seed-42 classifier CNN), MMD^2, pairwise MS-SSIM among synthetic samples (lower = diverse).
PAPER_TABLE2: dict[tuple[str, str], dict[str, float]] = {
    ("tumor", "3D-GAN"): {"F3D": 472.64, "MMD^2": 5571.90, "MS-SSIM": 0.86},
    ("tumor", "3DGAUNet"): {"F3D": 271.31, "MMD^2": 5327.32, "MS-SSIM": 0.81},
    ("pancreas", "3D-GAN"): {"F3D": 889.40, "MMD^2": 8924.39, "MS-SSIM": 0.83},
    ("pancreas", "3DGAUNet"): {"F3D": 872.33, "MMD^2": 9122.40, "MS-SSIM": 0.77},
}

# Table 3: slice-wise FID of 100 blended cubes per method (reference set not stated by the paper).
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "Blend I": {"FID-Sag": 42.10, "FID-Ax": 40.26, "FID-Cor": 32.94},
    "Blend II": {"FID-Sag": 21.01, "FID-Ax": 35.82, "FID-Cor": 12.62},
    "Blend III": {"FID-Sag": 13.21, "FID-Ax": 13.88, "FID-Cor": 10.06},
}


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    out_dir: str | os.PathLike,
    name: str,
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 2,
    extra: Mapping[str, Any] | None = None,
    tables: Mapping[str, PaperTable] | None = None,
) -> dict[str, Path]:
    """:func:`ctsynth.report.tables.write_table` with the protocol and per-column comparability of the 3DGAUnet table
    ``name`` when it is one of ``tables`` (default :data:`PAPER_TABLES`, Tables 1-3), so every table carries its
    header note."""
    spec = (PAPER_TABLES if tables is None else tables).get(name)
    protocol = spec.protocol if spec is not None else ""
    comparability = {k: v for k, v in spec.comparability.items() if k in columns} if spec is not None else None
    return write_table_with_notes(
        rows, columns, out_dir, name, title, notes, digits, extra, protocol=protocol, comparability=comparability
    )


# slice-plane names of ctsynth's slice extractors (xy axial, yz sagittal, zx coronal for RAS volumes) and of its PSNR
FID_PLANE_KEYS = {"sagittal": "yz", "axial": "xy", "coronal": "zx"}
TABLE1_COLUMNS = ["Tissue", "Model", "Source", "FID-Sag", "FID-Ax", "FID-Cor", "PSNR-Sag", "PSNR-Ax", "PSNR-Cor"]
TABLE2_COLUMNS = ["Tissue", "Model", "Source", "F3D", "MMD^2", "MS-SSIM"]
TABLE3_COLUMNS = ["Blending Methods", "Source", "FID-Sag", "FID-Ax", "FID-Cor", "F3D", "MMD^2"]
PAPER_SOURCE = "paper (Shi et al. 2023)"
PAPER_NOTE = "Rows marked 'paper' are the published values of 3DGAUnet (Shi et al. 2023), copied, not computed here."
# the paper's Tables 1-2 metrics; the rest of the ctsynth suite is added by default (configs/evaluate.json)
PAPER_METRICS = ("fid2d_slices", "psnr", "f3d", "mmd_linear", "msssim")
TABLE1_METRICS = ("fid2d_slices", "psnr")
TABLE2_METRICS = ("f3d", "mmd_linear", "msssim")
TABLE3_METRICS = ("fid2d_slices", "f3d", "mmd_linear")
RANDOM_WEIGHTS_NOTE = (
    "random weights: a feature network of this table's metrics ran without pretrained weights "
    "(allow_random_weights); those numbers are not comparable to published ones."
)

_SUITE_BASE = (
    "ctsynth metric suite on cubes in HU windowed [-100, 170] -> [0, 1], at most max_volumes (100) per set, a seeded "
    "subset"
)
_SUITE = f"{_SUITE_BASE}; real reference = the unaugmented ('orig') training cubes of this dataset"
_FID_SLICES = (
    "Inception-v3 pool3 features of the centre slice per plane as in the paper, but on other scans, another real "
    "reference and another sample count; absolute FID depends on all three"
)
_F3D_01 = (
    "not comparable",
    "F3D grows with the square of the input intensity; ours feeds the [0, 1] window (f3d_input_scale 1), about "
    "65,000 times below the 0-255 scale the paper's magnitudes fit; rerun with --f3d_input_scale 255 for its scale",
)
_F3D_255 = (
    "ordering only",
    "0-255 input as the paper's magnitudes suggest (f3d_input_scale 255), but on other scans and reference sets and an "
    "untrained network whose seeded weights are ours (the paper's framework and initialiser are not stated)",
)
BLEND_REFERENCE_CHOICE = (
    "the paper's negative set: 100 random abdominal 64^3 cubes (HU, 1 mm) of the non-test patients "
    "(prepare_data.json make_negative_cubes), the only reference set its blending section names (Shi et al. 2023, "
    "section 3.3: 'used to compare 3D metrics with the blended volumes'); the paper does not say which set its "
    "Table 3 FID used"
)
TABLE3_3D_COLUMNS = ["F3D", "MMD^2"]


def paper_tables(f3d_input_scale: float = 1.0, blend_reference: str = BLEND_REFERENCE_CHOICE) -> dict[str, PaperTable]:
    """Protocol and per-column comparability of the paper's Tables 1-3 (Shi et al. 2023) for one evaluation setting.

    Args:
        f3d_input_scale: the F3D input scale of the run (1: [0, 1]; 255: the paper's apparent 0-255), which decides
            whether Table 2's F3D is "not comparable" or "ordering only".
        blend_reference: what Table 3's real reference set is (printed in its protocol).

    Returns:
        ``{"table1": ..., "table2": ..., "table3": ...}`` (:class:`~ctsynth.report.tables.PaperTable`).
    """
    f3d_scale = "[0, 1]" if float(f3d_input_scale) == 1.0 else f"[0, {float(f3d_input_scale):g}]"
    return {
        "table1": PaperTable(
            name="table1",
            title="Table 1: 2D image quality (slice-wise FID and PSNR, centre slices)",
            columns=tuple(TABLE1_COLUMNS),
            key_columns=("Tissue", "Model"),
            paper_values=PAPER_TABLE1,
            citation="Shi et al. 2023, Table 1",
            paper_source=PAPER_SOURCE,
            protocol=f"{_SUITE}; fid2d_slices (centre slice per plane) and psnr (centre slices, mean per plane).",
            comparability={
                **{f"FID-{a}": ("ordering only", _FID_SLICES) for a in PLANE_ABBREV.values()},
                **{
                    f"PSNR-{a}": ("ordering only", "unpaired real and synthetic slices; the paper does not say how "
                                  "it paired them")
                    for a in PLANE_ABBREV.values()
                },
            },
        ),
        "table2": PaperTable(
            name="table2",
            title="Table 2: 3D image quality (F3D, MMD^2, MS-SSIM)",
            columns=tuple(TABLE2_COLUMNS),
            key_columns=("Tissue", "Model"),
            paper_values=PAPER_TABLE2,
            citation="Shi et al. 2023, Table 2",
            paper_source=PAPER_SOURCE,
            protocol=(
                f"{_SUITE}; f3d (untrained seed-42 classifier CNN, input {f3d_scale}), mmd_linear, msssim (pairwise "
                "among samples)."
            ),
            comparability={
                "F3D": _F3D_01 if float(f3d_input_scale) == 1.0 else _F3D_255,
                "MMD^2": ("not comparable", "the paper states neither its kernel nor its input scale; ours is the "
                          "linear-kernel MMD^2 on [0, 1] voxels"),
                "MS-SSIM": ("ordering only", "pairwise among synthetic samples as in the paper, whose window and "
                            "scales are not stated; ours use a 5-voxel window with 3 scales at 32^3 and 4 at 64^3, "
                            "so tumour and pancreas values are not on one scale either"),
            },
        ),
        "table3": PaperTable(
            name="table3",
            title="Table 3: slice-wise FID of the blending methods (+ 3D metrics, not in the paper's table)",
            columns=tuple(TABLE3_COLUMNS),
            key_columns=("Blending Methods",),
            paper_values=PAPER_TABLE3,
            citation="Shi et al. 2023, Table 3",
            paper_source=PAPER_SOURCE,
            protocol=(
                f"{_SUITE_BASE}; fid2d_slices (and f3d, mmd_linear) of each blended set against the reference set: "
                f"{blend_reference}."
            ),
            comparability={
                **{
                    f"FID-{a}": ("ordering only", "the paper's Table 3 values are about ten times below its Table 1 "
                                 "values, so its reference set differs from Table 1's; ours is the reference set "
                                 "named in the protocol, other scans and sample counts")
                    for a in PLANE_ABBREV.values()
                },
                **{c: ("ordering only", "no published value: ranks the blending methods against the negative "
                       "set only") for c in TABLE3_3D_COLUMNS},
            },
        ),
    }  # fmt: skip


#: the tables of the default setting (F3D on [0, 1], Table 3 against the paper's negative set)
PAPER_TABLES: dict[str, PaperTable] = paper_tables()


def _metric(results: Mapping[str, Any], name: str, *path: str) -> Any:
    value: Any = results.get(name)
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def table1_row(tissue: str, model: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Table 1 cells (slice-wise FID and PSNR per plane) from a suite ``metrics.json``'s ``metrics`` dict."""
    row: dict[str, Any] = {"Tissue": tissue, "Model": model, "Source": "ours"}
    for plane, abbrev in PLANE_ABBREV.items():
        row[f"FID-{abbrev}"] = _metric(metrics, "fid2d_slices", "per_plane", FID_PLANE_KEYS[plane])
        row[f"PSNR-{abbrev}"] = _metric(metrics, "psnr", plane, "mean")
    return row


def table2_row(tissue: str, model: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Table 2 cells (F3D, linear MMD^2, pairwise MS-SSIM of the synthetic set) from a suite ``metrics`` dict."""
    return {
        "Tissue": tissue,
        "Model": model,
        "Source": "ours",
        "F3D": _metric(metrics, "f3d", "value"),
        "MMD^2": _metric(metrics, "mmd_linear", "value"),
        "MS-SSIM": _metric(metrics, "msssim", "value"),
    }


def table3_row(method: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Table 3 cells (slice-wise FID per plane of one blending method, and F3D / linear MMD^2 when computed)."""
    row: dict[str, Any] = {"Blending Methods": method, "Source": "ours"}
    for plane, abbrev in PLANE_ABBREV.items():
        row[f"FID-{abbrev}"] = _metric(metrics, "fid2d_slices", "per_plane", FID_PLANE_KEYS[plane])
    row["F3D"] = _metric(metrics, "f3d", "value")
    row["MMD^2"] = _metric(metrics, "mmd_linear", "value")
    return row


def _paper_rows(table: Mapping[Any, Mapping[str, float]], keys: Sequence[str]) -> dict[Any, dict[str, Any]]:
    return paper_rows(table, keys, PAPER_SOURCE)


def _canonical_model(model: str) -> str:
    return {"3dgaunet": "3DGAUNet", "3dgan": "3D-GAN", "3d-gan": "3D-GAN"}.get(model.lower(), model)


class PaperEvaluation:
    """3DGAUnet Tables 1-3 with the ctsynth evaluation suite, written beside the paper's numbers.

    For every synthetic set of ``sets`` the suite (:func:`ctsynth.metrics.suite.evaluate`) runs against its real
    reference with ``metrics`` (the paper's slice-wise FID and PSNR, F3D, MMD^2, MS-SSIM, plus the rest of the
    suite); for every blending method of ``blend_sets`` it computes the slice-wise FID (Table 3). Each suite run keeps
    its own folder (``<out>/<tissue>_<model>/metrics.json``, CSVs, plots); the tables go to ``<out>/table1.*``,
    ``table2.*`` and ``table3.*`` (markdown, CSV, JSON), ours and the paper's rows side by side.

    Args:
        sets: ``[{"tissue": "tumor"|"pancreas", "model": "3DGAUNet"|"3D-GAN", "real": dir, "synthetic": dir}]``;
            entries whose ``synthetic`` folder is missing are skipped with a note (e.g. no 3D-GAN baseline).
        out: output folder.
        blend_sets: ``{"Blend I": dir, "Blend II": dir, "Blend III": dir}`` of blended cubes (missing ones skipped).
        blend_reference: real reference cubes of Table 3 (the paper does not say which; default in
            ``configs/evaluate.json``: the paper's negative set of 100 random abdominal 64^3 cubes, see
            :data:`BLEND_REFERENCE_CHOICE`).
        blend_reference_note: what ``blend_reference`` is, for Table 3's protocol.
        metrics: suite metrics of Tables 1-2 runs (must include the paper's five for a full table).
        blend_metrics: suite metrics of Table 3 runs.
        suite_options: the :class:`~ctsynth.metrics.options.EvaluationOptions` of every suite run (or a mapping of
            its fields: ``window``, ``feature_weights``, ``allow_random_weights``, ``max_volumes``, ...).
    """

    def __init__(
        self,
        sets: Sequence[Mapping[str, Any]],
        out: str | os.PathLike,
        blend_sets: Mapping[str, Any] | None = None,
        blend_reference: str | os.PathLike | None = None,
        metrics: Sequence[str] = PAPER_METRICS,
        blend_metrics: Sequence[str] = TABLE3_METRICS,
        suite_options: EvaluationOptions | Mapping[str, Any] | None = None,
        blend_reference_note: str = BLEND_REFERENCE_CHOICE,
    ) -> None:
        for s in sets:
            missing = [k for k in ("tissue", "model", "real", "synthetic") if k not in s]
            if missing:
                raise ValueError(
                    f"every entry of sets needs tissue, model, real and synthetic; {dict(s)} lacks {missing}."
                )
        if blend_sets and blend_reference is None:
            raise ValueError("blend_sets given without blend_reference (the real cubes Table 3's FID compares with).")
        self.sets = [dict(s) for s in sets]
        self.out = Path(out)
        self.blend_sets = dict(blend_sets or {})
        self.blend_reference = blend_reference
        self.metrics = list(metrics)
        self.blend_metrics = list(blend_metrics)
        self.suite_options = EvaluationOptions.from_kwargs(suite_options)
        self.tables = paper_tables(self.suite_options.f3d_input_scale, blend_reference_note)

    def _evaluate(self, real: Any, synthetic: Any, out: Path, metrics: Sequence[str]) -> dict[str, Any]:
        from ctsynth.metrics.suite import evaluate

        path = evaluate(real=real, synthetic=synthetic, out=out, metrics=list(metrics), options=self.suite_options)
        return json.loads(Path(path).read_text())

    def run(self) -> dict[str, Path]:
        """Run the suite for every available set and write the three tables; returns ``{table name: md path}``.

        Each table gets only its own notes: skipped sets (Tables 1-2) or skipped blends (Table 3), and the
        random-weights warning only when a feature network feeding one of *its* metrics ran without pretrained
        weights (F3D's network is untrained by design and never counts).
        """
        set_notes: list[str] = []
        blend_notes: list[str] = []
        rows1, rows2, rows3, flags = [], [], [], {}
        random_in = {"table1": False, "table2": False, "table3": False}
        for s in self.sets:
            tissue, model = str(s["tissue"]).lower(), _canonical_model(str(s["model"]))
            if s["synthetic"] is None or not Path(s["synthetic"]).exists():
                set_notes.append(f"{tissue} / {model}: no synthetic set at {s['synthetic']}, row skipped.")
                continue
            report = self._evaluate(s["real"], s["synthetic"], self.out / f"{tissue}_{model}", self.metrics)
            flags[f"{tissue}_{model}"] = report.get("random_weights_used", False)
            random_in["table1"] |= _uses_random_weights(report, TABLE1_METRICS)
            random_in["table2"] |= _uses_random_weights(report, TABLE2_METRICS)
            rows1.append(table1_row(tissue, model, report["metrics"]))
            rows2.append(table2_row(tissue, model, report["metrics"]))
        for method, folder in self.blend_sets.items():
            if folder is None or not Path(folder).exists():
                blend_notes.append(f"{method}: no blended set at {folder}, row skipped.")
                continue
            slug = method.lower().replace(" ", "_")
            report = self._evaluate(self.blend_reference, folder, self.out / slug, self.blend_metrics)
            flags[slug] = report.get("random_weights_used", False)
            random_in["table3"] |= _uses_random_weights(report, TABLE3_METRICS)
            rows3.append(table3_row(method, report["metrics"]))

        def _notes(table: str, skipped: list[str]) -> list[str]:
            return [PAPER_NOTE, *skipped] + ([RANDOM_WEIGHTS_NOTE] if random_in[table] else [])

        options = {k: str(v) for k, v in dataclasses.asdict(self.suite_options).items()}
        extra = {"random_weights_used": flags, "suite_options": options}
        paper1 = _paper_rows(PAPER_TABLE1, ("Tissue", "Model"))
        paper2 = _paper_rows(PAPER_TABLE2, ("Tissue", "Model"))
        paper3 = _paper_rows(PAPER_TABLE3, ("Blending Methods",))
        written = {
            "table1": write_table(
                _interleave(rows1, paper1, ("Tissue", "Model")), TABLE1_COLUMNS, self.out, "table1",
                title="Table 1: 2D image quality (slice-wise FID and PSNR, centre slices)",
                notes=_notes("table1", set_notes), extra=extra, tables=self.tables,
            )["md"],
            "table2": write_table(
                _interleave(rows2, paper2, ("Tissue", "Model")), TABLE2_COLUMNS, self.out, "table2",
                title="Table 2: 3D image quality (F3D, MMD^2, MS-SSIM)", notes=_notes("table2", set_notes), extra=extra,
                tables=self.tables,
            )["md"],
            "table3": write_table(
                _interleave(rows3, paper3, ("Blending Methods",)), TABLE3_COLUMNS, self.out, "table3",
                title=self.tables["table3"].title, notes=_notes("table3", blend_notes), extra=extra,
                tables=self.tables,
            )["md"],
        }  # fmt: skip
        return written


def _uses_random_weights(report: Mapping[str, Any], metrics: Sequence[str]) -> bool:
    """Whether one of ``metrics`` of a suite report was computed on features of a randomly initialised network
    that should have had pretrained weights (the suite lists those extractors in ``random_weights_notes``)."""
    random_extractors = set(report.get("random_weights_notes") or {})
    if not random_extractors:
        return False
    for name in metrics:
        features = _metric(report.get("metrics", {}), name, "protocol", "features")
        if features in random_extractors:
            return True
    return False


_interleave = interleave_rows


def reference_set(kind_dir: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """The real reference of one cube kind without the offline-augmented copies.

    ``configs/prepare_data.json`` writes ``<kind>/images/<case>_<tag>.nii.gz`` with a ``datalist.json`` whose items
    carry ``augmentation`` (``"orig"`` for the unaugmented cube). The paper compares with real volumes, so when that
    datalist exists a datalist of the ``orig`` items (absolute paths) is written to ``<out_dir>/reference_<kind>.json``
    and its path returned; otherwise ``<kind>/images`` (or ``kind_dir`` itself) is returned as it is.
    """
    kind = Path(kind_dir)
    datalist = kind / "datalist.json"
    if not datalist.is_file():
        return str(kind / "images") if (kind / "images").is_dir() else str(kind)
    items = json.loads(datalist.read_text()).get("training", [])
    originals = [
        {"image": str((kind / it["image"]).resolve())} for it in items if it.get("augmentation", "orig") == "orig"
    ]
    if not originals:
        raise ValueError(f"{datalist}: no unaugmented ('orig') cube listed.")
    out = Path(out_dir) / f"reference_{kind.name}.json"
    write_json_atomic({"description": f"unaugmented real {kind.name} cubes", "training": originals}, out)
    return str(out)
