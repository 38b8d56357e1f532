"""NIfTI reading and writing with the true affine, shared by every module that touches files."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "DEFAULT_EXCLUDE_PATTERN",
    "NIFTI_SUFFIXES",
    "atomic_directory",
    "atomic_write",
    "datalist_image_entries",
    "is_nifti_file",
    "list_volumes",
    "load_volume",
    "nifti_stem",
    "read_json",
    "require_finite",
    "save_volume",
    "spacing_from_affine",
    "to_json_safe",
    "write_json_atomic",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# file stems skipped by list_volumes in image folders: label maps written next to the images.
DEFAULT_EXCLUDE_PATTERN = r"(^|[_.-])(label|labels|mask|masks|seg)([_.-]|$)"


def is_nifti_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular, non-hidden ``.nii`` / ``.nii.gz`` file.

    Hidden files are not volumes: the MSD archives hold macOS ``._pancreas_001.nii.gz`` resource forks next to the
    real files, and reading one fails.
    """
    path = Path(path)
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without its ``.nii.gz`` / ``.nii`` suffix (``Path.stem`` for other names)."""
    path = Path(path)
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def list_volumes(source: str | os.PathLike, exclude_pattern: str | None = DEFAULT_EXCLUDE_PATTERN) -> list[Path]:
    """NIfTI files of a folder (sorted; hidden and label-like names excluded), or the image entries of a datalist JSON.

    A folder written by a bundle's sampler (it holds a ``samples.json`` manifest) is read through its manifest: exactly
    the samples of its last run, never stray files of an earlier one.

    Args:
        source: a folder of ``.nii``/``.nii.gz`` files; a sample folder with a ``samples.json`` manifest; a datalist /
            MSD ``dataset.json`` file; or a folder holding no NIfTI files but a ``datalist.json`` / ``dataset.json``.
        exclude_pattern: regex searched in each file stem; matching files are skipped (folders only; None keeps all).

    Returns:
        The volume paths (datalist entries in training, validation, testing order).

    Raises:
        FileNotFoundError: when the source does not exist or a datalist lists a missing file.
        ValueError: when it holds no volumes.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src}: not found")
    if src.is_dir() and (src / SAMPLE_MANIFEST).is_file():
        return _manifest_images(src)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if is_nifti_file(p))
        if exclude_pattern:
            files = [p for p in files if not re.search(exclude_pattern, nifti_stem(p), flags=re.IGNORECASE)]
        if files:
            return files
        if not any((src / n).is_file() for n in ("datalist.json", "dataset.json")):
            raise ValueError(f"{src}: no NIfTI volumes (.nii/.nii.gz) and no datalist.json/dataset.json found")
    return [Path(e["image"]) for e in datalist_image_entries(src)]


SAMPLE_MANIFEST = "samples.json"


def _manifest_images(folder: Path) -> list[Path]:
    """The image files a sampler's manifest lists (checked to exist)."""
    manifest_path = folder / SAMPLE_MANIFEST
    try:
        samples = json.loads(manifest_path.read_text())["samples"]
        files = [folder / str(s["image"]) for s in samples]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest_path}: not a sample manifest ({type(e).__name__}: {e})") from e
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{manifest_path}: {len(missing)} listed sample(s) missing, e.g. {missing[0]}")
    if not files:
        raise ValueError(f"{manifest_path}: the manifest lists no samples")
    return files


def datalist_image_entries(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries with an ``image`` of a datalist's training, validation and testing lists (files checked).

    Raises:
        ValueError: when there is no such entry.
        FileNotFoundError: when a listed image is missing (the message names the datalist and one missing file).
    """
    from ctsynth.data.datalist import load_datalist

    data = load_datalist(path)
    entries = [e for key in ("training", "validation", "testing") for e in data.get(key, []) if isinstance(e, dict)]
    entries = [e for e in entries if "image" in e]
    if not entries:
        raise ValueError(f"{path}: the datalist has no 'image' entries in training/validation/testing")
    missing = [e["image"] for e in entries if not Path(e["image"]).exists()]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
    return entries


def load_volume(path: str | os.PathLike, dtype: np.dtype | type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        dtype: optional dtype to cast the data to (default: the file's scaled data as float32 for images
            stored with scaling, else the on-disk dtype).

    Returns:
        ``(array, affine)``: the array indexed (x, y, z) as stored, and the 4x4 voxel-to-world affine.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file cannot be read as NIfTI (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises several types for corrupt files
        raise ValueError(f"{path}: cannot be read as NIfTI ({type(e).__name__}: {e})") from e
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return np.asarray(data), np.asarray(img.affine, dtype=np.float64)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file in the same folder, which is then renamed.

    A crash during the write leaves either the previous file or no file, never a truncated one. Every writer in
    ctsynth and the bundles (NIfTI, JSON, CSV, checkpoints) goes through this one function.

    Args:
        path: destination (parent folders are created).
        write: callable that writes the whole content to the temporary path it is given.
        suffix: suffix of the temporary file (some writers choose the format from it, e.g. ``.nii.gz``).

    Returns:
        The written path, with the permissions a plain ``open(path, "w")`` gives under the user's umask (``mkstemp``
        creates 0600 files, which a group on shared storage could not read).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


PARTIAL_TAG = "partial"
PREVIOUS_TAG = "previous"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _clean_stale(path: Path) -> None:
    """Remove what a killed :func:`atomic_directory` left next to ``path`` (its process is gone).

    A stale partial folder is deleted; a stale previous folder is put back when ``path`` is missing (the run was
    killed between its two renames), else deleted.
    """
    for tag in (PARTIAL_TAG, PREVIOUS_TAG):
        for stale in path.parent.glob(f".{path.name}.{tag}-*"):
            try:
                pid = int(stale.name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                continue
            if _pid_alive(pid) and pid != os.getpid():
                continue
            if tag == PREVIOUS_TAG and not path.exists():
                os.replace(stale, path)
            else:
                shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a folder as a whole: yield a temporary sibling folder, then swap it into place when the block succeeds.

    An exception in the block removes the temporary folder and leaves a previous ``path`` untouched. A process
    killed during the block leaves ``.<name>.partial-<pid>-<random>`` behind, which the next call for the same
    ``path`` removes (as it puts back a ``.<name>.previous-...`` folder of a run killed between the two renames).

    Args:
        path: the destination folder (its parent is created).

    Yields:
        The temporary folder to write into.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{PARTIAL_TAG}-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        previous = None
        if path.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{path.name}.{PREVIOUS_TAG}-{os.getpid()}-", dir=path.parent))
            os.replace(path, previous)
        os.replace(tmp, path)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def require_finite(array: np.ndarray, path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Return ``array`` when every value is finite, else raise naming the file.

    Args:
        array: values read from ``path``.
        path: the file they come from (for the message).
        what: what the array is ("image", "label").

    Raises:
        ValueError: ``<path>: <what> has N NaN and M infinite value(s), e.g. at voxel (i, j, k)``.
    """
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.floating):
        return array
    finite = np.isfinite(values)
    if finite.all():
        return array
    n_nan = int(np.isnan(values).sum())
    n_inf = int(finite.size - finite.sum()) - n_nan
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise ValueError(f"{path}: {what} has {n_nan} NaN and {n_inf} infinite value(s), e.g. at voxel {first}")


def _current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux (no change of process state), else by setting it
    and restoring it at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a syntax error names the file.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: ``<path>: not valid JSON (<parser message>)``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


_INF_AS_STRING = object()


def to_json_safe(value: Any, nan: Any = None, inf: Any = _INF_AS_STRING) -> Any:
    """``value`` with everything JSON cannot hold converted: NumPy scalars and arrays to Python numbers and lists,
    torch tensors likewise, paths to strings, tuples and sets to lists, mapping keys to strings; NaN to ``nan``
    (default ``None``, i.e. ``null``) and +-infinity to ``inf`` when given (e.g. ``None``), else to the strings
    ``"inf"`` / ``"-inf"`` (strict JSON has neither).
    """
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v, nan, inf) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_safe(v, nan, inf) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist(), nan, inf)
    if type(value).__module__ == "torch" and hasattr(value, "tolist"):
        return to_json_safe(value.tolist(), nan, inf)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return nan
        if inf is not _INF_AS_STRING:
            return inf
        return "inf" if value > 0 else "-inf"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json_atomic(data: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``data`` as strict JSON (with a final newline) through :func:`atomic_write`.

    ``data`` goes through :func:`to_json_safe` first: NumPy/torch values become numbers and lists, paths strings,
    NaN ``null`` and infinities ``"inf"`` / ``"-inf"``.
    """
    text = json.dumps(to_json_safe(data), indent=indent, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_volume(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, dtype: np.dtype | type | None = None
) -> Path:
    """Write a NIfTI volume atomically (temporary file in the same folder, then rename).

    Args:
        array: 3D array indexed (x, y, z).
        affine: 4x4 voxel-to-world affine.
        path: destination (``.nii.gz`` compresses).
        dtype: on-disk dtype (default: the array's dtype).

    Returns:
        The written path. Its header holds the affine twice: as the sform and as the qform (code "scanner").

    Raises:
        ValueError: when the affine is sheared (not representable as a qform); nothing is written then.
    """
    path = Path(path)
    data = np.asarray(array if dtype is None else array.astype(dtype))
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(data, affine)
    try:  # the qform (a rotation, zooms and a flip) must hold the same geometry as the sform
        img.header.set_qform(affine, code="scanner", strip_shears=False)
    except nib.spatialimages.HeaderDataError as e:
        raise ValueError(
            f"{path}: the affine is sheared (its axes are not orthogonal), which a NIfTI qform cannot hold and "
            "ITK-based readers refuse; resample the volume onto an orthogonal grid first"
        ) from e
    img.header.set_sform(affine, code="aligned")
    img.header.set_xyzt_units("mm")
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=suffix)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in mm (column norms of the affine's 3x3 part)."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((a**2).sum(axis=0)))
