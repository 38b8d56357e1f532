""" "Ours beside the paper" tables: markdown, CSV and JSON, each with its protocol and a comparability note per column.

A table that puts our numbers under a paper's invites reading them as a reproduction. Each table therefore states,
in a header note printed above it (markdown), in ``#`` comment lines at the top of the CSV (read it with
``pandas.read_csv(path, comment="#")``) and in its JSON, *how* our values were computed (the protocol) and, per
value column, whether it can be compared with the paper's:

- ``comparable``: same metric, settings and scale; the numbers can be set side by side;
- ``ordering only``: a related protocol; only the ranking of models or methods can be compared;
- ``not comparable``: different scale, settings or data; the paper's value is context only.

:class:`PaperTable` declares a table once (columns, key columns, the paper's values and citation, protocol and
comparability) and writes our rows interleaved with the paper's: each paper row followed by our row with the same
key, our other rows at the end.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ctsynth.data.io import atomic_write, to_json_safe, write_json_atomic

__all__ = [
    "ColumnComparability",
    "Comparability",
    "PaperTable",
    "format_value",
    "header_note",
    "interleave_rows",
    "paper_rows",
    "table_to_markdown",
    "write_table",
]


class Comparability(StrEnum):
    """How a column of ours compares with the paper's column of the same name."""

    COMPARABLE = "comparable"
    ORDERING_ONLY = "ordering only"
    NOT_COMPARABLE = "not comparable"


@dataclass(frozen=True)
class ColumnComparability:
    """Comparability of one column and why.

    Args:
        level: a :class:`Comparability` (or its value).
        reason: what differs from (or matches) the paper's protocol.
    """

    level: Comparability | str
    reason: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "level", Comparability(self.level))
        except ValueError as e:
            levels = [c.value for c in Comparability]
            raise ValueError(f"unknown comparability {self.level!r}; use one of {levels}") from e


def _as_comparability(value: ColumnComparability | str | Sequence[str]) -> ColumnComparability:
    if isinstance(value, ColumnComparability):
        return value
    if isinstance(value, str):
        return ColumnComparability(value)
    return ColumnComparability(*value)


def format_value(value: Any, digits: int = 2) -> str:
    """Number with ``digits`` decimals, or 3 significant digits when ``digits`` decimals would show fewer than two
    (so small values such as an untrained network's F3D do not print as 0.00, while 0.67 with 3 decimals stays
    0.670 like the other cells of its column); ``None``/NaN as ``n/a``; other values as ``str``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        v = float(value)
        if v != 0 and abs(v) < 10.0 ** (1 - digits):
            return f"{v:#.3g}"
        return f"{v:.{digits}f}"
    return str(value)


def header_note(
    protocol: str = "", comparability: Mapping[str, ColumnComparability | str | Sequence[str]] | None = None
) -> list[str]:
    """Lines of a table's header note: the protocol, then the comparability of each column with the paper (columns
    of the same level and reason grouped, in column order).

    Args:
        protocol: how our values were computed.
        comparability: ``{column: ColumnComparability | level | (level, reason)}``.
    """
    lines = [f"Protocol: {protocol}"] if protocol else []
    groups: dict[tuple[str, str], list[str]] = {}
    for column, value in (comparability or {}).items():
        c = _as_comparability(value)
        groups.setdefault((str(c.level), c.reason), []).append(column)
    if groups:
        lines.append("Comparability with the paper, per column:")
        for (level, reason), columns in groups.items():
            lines.append(f"- {', '.join(columns)}: **{level}**" + (f" ({reason})" if reason else ""))
    return lines


def table_to_markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 2,
    header: Sequence[str] = (),
) -> str:
    """A GitHub-markdown table of ``rows`` (dicts) restricted to ``columns``, with an optional title, header note
    (printed above the table, e.g. from :func:`header_note`) and notes (bullets below it)."""
    lines = [f"### {title}", ""] if title else []
    if header:
        lines.extend(header)
        lines.append("")
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), digits) for c in columns) + " |")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    out_dir: str | os.PathLike,
    name: str,
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 2,
    extra: Mapping[str, Any] | None = None,
    protocol: str = "",
    comparability: Mapping[str, ColumnComparability | str | Sequence[str]] | None = None,
) -> dict[str, Path]:
    """Write one table as ``<name>.md``, ``<name>.csv`` and ``<name>.json`` in ``out_dir`` (each atomically).

    Args:
        rows: one dict per row (keys = column names; missing cells print ``n/a`` in markdown, empty in CSV).
        columns: column order.
        out_dir: destination folder.
        name: file stem.
        title: markdown heading.
        notes: markdown bullet notes below the table (provenance, skipped rows, flags).
        digits: decimals in markdown (CSV/JSON keep full precision).
        extra: additional JSON fields (settings, flags).
        protocol: how our values were computed (header note; CSV comment line; JSON ``protocol``).
        comparability: per value column, its comparability with the paper (header note; CSV comment lines; JSON
            ``comparability``).

    Returns:
        ``{"md": path, "csv": path, "json": path}``.

    Raises:
        ValueError: when ``comparability`` names a column that is not in ``columns``.
    """
    notes_by_column = {k: _as_comparability(v) for k, v in (comparability or {}).items()}
    unknown = [k for k in notes_by_column if k not in columns]
    if unknown:
        raise ValueError(f"table {name}: comparability given for unknown column(s) {unknown}; columns: {list(columns)}")
    header = header_note(protocol, notes_by_column)
    out = Path(out_dir)
    md = table_to_markdown(rows, columns, title, notes, digits, header)
    buffer = io.StringIO()
    if protocol:
        buffer.write(f"# protocol: {protocol}\n")
    for column, c in notes_by_column.items():
        buffer.write(f"# {column}: {c.level}" + (f" ({c.reason})" if c.reason else "") + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    payload: dict[str, Any] = {"title": title, "columns": list(columns), "rows": [dict(r) for r in rows]}
    payload["notes"] = list(notes)
    if protocol or notes_by_column:
        payload["protocol"] = protocol
        payload["comparability"] = {k: {"level": str(c.level), "reason": c.reason} for k, c in notes_by_column.items()}
    payload.update(extra or {})
    text = buffer.getvalue()
    return {
        "md": atomic_write(out / f"{name}.md", lambda tmp: Path(tmp).write_text(md)),
        "csv": atomic_write(out / f"{name}.csv", lambda tmp: Path(tmp).write_text(text)),
        "json": write_json_atomic(to_json_safe(payload, inf=None), out / f"{name}.json"),  # NaN, inf -> null
    }


def paper_rows(
    values: Mapping[Any, Mapping[str, Any]], keys: Sequence[str], source: str, source_column: str = "Source"
) -> dict[Any, dict[str, Any]]:
    """Rows of a paper's published values: ``{key: {key columns..., source_column: source, values...}}``.

    Args:
        values: ``{key: {column: value}}``; a key is a tuple of key-column values (or one value for one key column).
        keys: the key columns.
        source: text of the source column (e.g. ``"paper (Shi et al. 2023)"``).
        source_column: name of the source column.
    """
    rows = {}
    for key, row in values.items():
        names = key if isinstance(key, tuple) else (key,)
        rows[key] = {**dict(zip(keys, names, strict=True)), source_column: source, **row}
    return rows


def interleave_rows(
    ours: Sequence[Mapping[str, Any]], paper: Mapping[Any, Mapping[str, Any]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Paper rows in the paper's order, each followed by our rows of the same key; our other rows at the end."""
    rows, used = [], set()
    for key, paper_row in paper.items():
        rows.append(dict(paper_row))
        k = key if isinstance(key, tuple) else (key,)
        for i, row in enumerate(ours):
            if tuple(row.get(c) for c in keys) == k:
                rows.append(dict(row))
                used.add(i)
    rows += [dict(row) for i, row in enumerate(ours) if i not in used]
    return rows


@dataclass(frozen=True)
class PaperTable:
    """One "ours beside the paper" table, declared once.

    Args:
        name: file stem (``table1`` -> ``table1.md/.csv/.json``).
        title: markdown heading.
        columns: column order (key columns, the source column and the value columns).
        key_columns: columns that identify a row (e.g. ``("Tissue", "Model")``).
        paper_values: ``{key: {value column: published value}}``, copied from the paper.
        citation: where the values come from (paper, table/section), e.g. ``"Shi et al. 2023, Table 1"``.
        protocol: how our values are computed.
        comparability: for every value column, its :class:`ColumnComparability` (or level, or ``(level, reason)``).
        source_column: column telling ours (``"ours"``) from the paper's rows.
        paper_source: text of the source column in the paper's rows (default: ``"paper (<citation>)"``).
        digits: decimals in markdown.

    Raises:
        ValueError: when a value column has no comparability note, or a note or key names an unknown column.
    """

    name: str
    title: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    paper_values: Mapping[Any, Mapping[str, Any]]
    citation: str
    protocol: str
    comparability: Mapping[str, Any] = field(default_factory=dict)
    source_column: str = "Source"
    paper_source: str | None = None
    digits: int = 2

    def __post_init__(self) -> None:
        value_columns = [c for c in self.columns if c not in (*self.key_columns, self.source_column)]
        missing = [c for c in value_columns if c not in self.comparability]
        unknown = [c for c in [*self.comparability, *self.key_columns] if c not in self.columns]
        if missing:
            raise ValueError(f"table {self.name}: no comparability note for column(s) {missing}")
        if unknown:
            raise ValueError(f"table {self.name}: unknown column(s) {unknown}; columns: {list(self.columns)}")
        notes = {k: _as_comparability(v) for k, v in self.comparability.items()}
        object.__setattr__(self, "comparability", notes)

    @property
    def paper_label(self) -> str:
        """Text of the source column in the paper's rows."""
        return self.paper_source or f"paper ({self.citation})"

    def rows(self, ours: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Our rows (source ``"ours"`` unless set) interleaved with the paper's."""
        mine = [{self.source_column: "ours", **r} for r in ours]
        paper = paper_rows(self.paper_values, self.key_columns, self.paper_label, self.source_column)
        return interleave_rows(mine, paper, self.key_columns)

    def provenance_note(self) -> str:
        """The note saying where the paper's rows come from."""
        return f"Rows marked '{self.paper_label}' are published values ({self.citation}), copied, not computed here."

    def write(
        self,
        ours: Sequence[Mapping[str, Any]],
        out_dir: str | os.PathLike,
        notes: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Path]:
        """Write the table (:func:`write_table`) with the provenance note first; returns the three paths."""
        return write_table(
            self.rows(ours),
            self.columns,
            out_dir,
            self.name,
            title=self.title,
            notes=[self.provenance_note(), *notes],
            digits=self.digits,
            extra={"citation": self.citation, **(extra or {})},
            protocol=self.protocol,
            comparability=self.comparability,
        )
