"""Report: PNG previews, plots and the HTML report."""

from ctsynth.report.previews import orthogonal_slices, save_orthogonal_preview, save_preview_from_files

__all__ = ["orthogonal_slices", "save_orthogonal_preview", "save_preview_from_files"]
