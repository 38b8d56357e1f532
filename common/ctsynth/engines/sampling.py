"""One seeded sampler for every generator: sample ``i`` depends only on ``(seed, i)``.

A bundle gives a ``sample_fn`` that turns a list of per-sample ``torch.Generator`` s into a batch (a GAN generator fed
with latents drawn from them, a diffusion inferer started from noise drawn from them, a recurrent generator fed with
random sequences drawn from them). The sampler

- draws sample ``i`` from a generator seeded by ``(seed, i)``, so the files do not depend on the batch size or on
  how the index range is split across processes or GPUs (each process takes a disjoint range);
- maps the network's output back to HU through the *inverse* of the bundle's own preprocessing transform
  (:func:`invert_intensity`), not a hand-written formula;
- optionally post-processes each sample and rejects it (an empty mask, say): a rejected sample ``i`` is redrawn from
  ``(seed, i, attempt)``, and the manifest counts the redraws;
- writes image (and label) NIfTI in HU with a real affine, PNG previews and a manifest (``samples.json``) that
  lists exactly the files of this run. A folder that already holds samples is replaced as a whole with
  ``overwrite=True`` and refused otherwise, so downstream steps never mix the samples of two models.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform
from torch import nn

from ctsynth.data.io import SAMPLE_MANIFEST, save_volume, write_json_atomic
from ctsynth.engines.distributed import barrier, get_rank, get_world_size, is_distributed
from ctsynth.engines.seeding import per_index_seed

__all__ = [
    "MANIFEST",
    "sample_generators",
    "seeded_randn",
    "LatentSampleFn",
    "invert_intensity",
    "SeededSampler",
    "read_manifest",
    "merge_sample_parts",
]

logger = logging.getLogger(__name__)

MANIFEST = SAMPLE_MANIFEST  # one name for the manifest, shared with ctsynth.data.io.list_volumes
SampleFn = Callable[[Sequence[torch.Generator], torch.device], torch.Tensor | Mapping[str, torch.Tensor]]


def sample_generators(seed: int, indices: Sequence[int], attempt: int = 0) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per sample index, seeded by ``(seed, index)`` (and ``attempt`` for redraws).

    Args:
        seed: the run's sampling seed.
        indices: sample indices.
        attempt: 0 for the first draw of each sample; k for its k-th redraw.

    Returns:
        The generators, in index order.
    """
    seeds = [
        per_index_seed(seed, i) if attempt == 0 else per_index_seed(seed, i * 1_000_003 + attempt) for i in indices
    ]
    return [torch.Generator(device="cpu").manual_seed(s) for s in seeds]


def seeded_randn(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    std: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise ``(len(generators), *shape)`` whose row ``k`` comes from ``generators[k]`` only.

    Drawn on the CPU so the numbers are the same on every device.
    """
    rows = [torch.randn(tuple(int(s) for s in shape), generator=g) for g in generators]
    out = torch.stack(rows) * float(std) if rows else torch.zeros((0, *shape))
    return out.to(device=device, dtype=dtype)


class LatentSampleFn:
    """``sample_fn`` of a generator fed with Gaussian latents: ``network(N(0, std^2) of latent_shape)``.

    Args:
        network: the generator, in eval mode.
        latent_shape: shape of one sample's latent (a vector ``(256,)`` or a noise volume ``(1, 32, 32, 32)``).
        latent_std: standard deviation of the latent.
        autocast_dtype: optional autocast dtype of the forward pass (``torch.bfloat16``).
    """

    def __init__(
        self,
        network: nn.Module,
        latent_shape: Sequence[int],
        latent_std: float = 1.0,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.network = network
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.latent_std = float(latent_std)
        self.autocast_dtype = autocast_dtype

    def __call__(self, generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
        z = seeded_randn(generators, self.latent_shape, self.latent_std, device=device)
        with torch.autocast(
            device_type=torch.device(device).type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            return self.network(z).float()


def invert_intensity(sample: torch.Tensor, transform: InvertibleTransform, key: str = "image") -> torch.Tensor:
    """Map a generated sample from network space back to HU with the inverse of the preprocessing transform.

    MONAI inverts a transform from the trace it left on the data it was applied to; a generated sample has no such
    trace. The transform is therefore applied to a template on the sample's grid and its trace is replayed onto the
    sample before ``inverse``. This is exact for transforms whose trace does not depend on voxel values (HU windowing
    and fixed-range scaling, such as :class:`ctsynth.transforms.intensity.HUWindowd`).

    Args:
        sample: channel-first sample ``(C, ...)`` in network space.
        transform: the bundle's intensity transform (a dictionary transform on ``key``, or an array transform).
        key: key of the image for dictionary transforms.

    Returns:
        The sample in HU (a plain float32 tensor).
    """
    template = MetaTensor(torch.zeros_like(sample, dtype=torch.float32))
    is_dict = hasattr(transform, "keys")
    forward = transform({key: template})[key] if is_dict else transform(template)
    traced = MetaTensor(sample.float(), applied_operations=copy.deepcopy(forward.applied_operations))
    back = transform.inverse({key: traced})[key] if is_dict else transform.inverse(traced)
    return back.as_tensor().float() if isinstance(back, MetaTensor) else torch.as_tensor(back).float()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a sample folder written by :class:`SeededSampler`.

    Args:
        folder: sample folder.

    Returns:
        The manifest; ``manifest["samples"]`` lists ``{"index", "image", "label"?}`` with paths relative to it.

    Raises:
        FileNotFoundError: when the folder has no manifest (not written by a sampler, or the run did not finish).
    """
    import json

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder}: no {MANIFEST}; sample folders are read through their manifest (run the bundle's inference "
            "config to write one)"
        )
    return json.loads(path.read_text())


class SeededSampler:
    """Draw samples ``start..stop-1`` and write them as NIfTI in HU with previews and a manifest.

    Args:
        sample_fn: ``(generators, device) -> tensor (B, C, ...) or {"image": ..., "label": ...}`` in network space;
            row ``k`` must use ``generators[k]`` only.
        output_dir: destination folder (``<prefix>_<i:04d>.nii.gz``, ``labels/``, ``previews/``, ``samples.json``).
        num_samples: total number of samples of the run (indices ``0..num_samples-1``).
        seed: sampling seed.
        batch_size: samples per ``sample_fn`` call (does not change the files).
        intensity_transform: the bundle's invertible preprocessing intensity transform (see
            :func:`invert_intensity`); None when ``sample_fn`` already returns HU.
        postprocess: optional ``{"image": (C, ...) HU tensor, "label"?: tensor} -> same dict or None``, run per
            sample after the inverse; returning None rejects the sample, which is redrawn.
        max_attempts: draws per sample before giving up on it.
        affine: 4x4 voxel-to-world affine of every sample (or a spacing: a number or three numbers).
        image_key: key of the image in ``sample_fn``'s dict output.
        label_key: key of the label (saved as uint8 under ``labels/``) when present.
        prefix: file-name prefix.
        num_previews: PNG previews of the first N samples of this process (0: none).
        preview_window: HU window of the previews.
        device: device of the forward passes.
        index_range: ``(start, stop)`` to draw only part of the run (for splitting by hand across machines); by
            default, under ``torch.distributed``, each rank takes every ``world_size``-th index and rank 0 writes
            the manifest.
        overwrite: replace an existing sample folder as a whole; without it an existing one is refused.
        run_info: JSON-able facts recorded in the manifest (checkpoint, model kind, ...).

    Raises:
        ValueError: for ``num_samples`` or ``batch_size`` below 1 or an empty ``index_range``.
    """

    def __init__(
        self,
        sample_fn: SampleFn,
        output_dir: str | os.PathLike,
        num_samples: int,
        seed: int = 0,
        batch_size: int = 1,
        intensity_transform: InvertibleTransform | None = None,
        postprocess: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None] | None = None,
        max_attempts: int = 10,
        affine: np.ndarray | Sequence | float = 1.0,
        image_key: str = "image",
        label_key: str = "label",
        prefix: str = "sample",
        num_previews: int = 4,
        preview_window: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        index_range: Sequence[int] | None = None,
        overwrite: bool = False,
        run_info: Mapping[str, Any] | None = None,
    ) -> None:
        if int(num_samples) < 1 or int(batch_size) < 1 or int(max_attempts) < 1:
            raise ValueError(
                "num_samples, batch_size and max_attempts must be >= 1, "
                f"got {num_samples}, {batch_size}, {max_attempts}"
            )
        self.sample_fn = sample_fn
        self.output_dir = Path(output_dir)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.intensity_transform = intensity_transform
        self.postprocess = postprocess
        self.max_attempts = int(max_attempts)
        self.affine = self._as_affine(affine)
        self.image_key, self.label_key = image_key, label_key
        self.prefix = prefix
        self.num_previews = int(num_previews)
        self.preview_window = None if preview_window is None else [float(v) for v in preview_window]
        self.device = torch.device(device)
        self.index_range = None if index_range is None else (int(index_range[0]), int(index_range[1]))
        if self.index_range is not None and not 0 <= self.index_range[0] < self.index_range[1] <= self.num_samples:
            raise ValueError(f"index_range must satisfy 0 <= start < stop <= {self.num_samples}, got {index_range}")
        self.overwrite = bool(overwrite)
        self.run_info = dict(run_info or {})

    @staticmethod
    def _as_affine(affine: np.ndarray | Sequence | float) -> np.ndarray:
        a = np.asarray(affine, dtype=np.float64)
        if a.shape == (4, 4):
            return a
        spacing = np.broadcast_to(a.reshape(-1), (3,)) if a.size in (1, 3) else None
        if spacing is None:
            raise ValueError(f"affine must be a 4x4 matrix or a spacing (1 or 3 numbers), got shape {a.shape}")
        return np.diag([*spacing.tolist(), 1.0])

    # ------------------------------------------------------------------ index ranges and folders
    def my_indices(self) -> list[int]:
        """Sample indices this process draws."""
        if self.index_range is not None:
            return list(range(*self.index_range))
        return list(range(get_rank(), self.num_samples, get_world_size()))

    def _partial_run(self) -> bool:
        return self.index_range is not None and self.index_range != (0, self.num_samples)

    def _work_dir(self) -> Path:
        """Folder the files are written into: a temporary sibling for whole runs (renamed into place at the end)."""
        if self._partial_run():
            return self.output_dir
        return self.output_dir.with_name(f".{self.output_dir.name}.partial")

    def _check_destination(self) -> None:
        existing = self.output_dir / MANIFEST
        if self._partial_run():
            clash = [self._image_path(self.output_dir, i) for i in self.my_indices()]
            clash = [p for p in clash if p.exists()]
            if clash and not self.overwrite:
                raise FileExistsError(f"{clash[0]} exists; pass --overwrite true to replace the samples of this range")
            return
        if (existing.exists() or (self.output_dir.is_dir() and any(self.output_dir.iterdir()))) and not self.overwrite:
            raise FileExistsError(
                f"{self.output_dir} already holds files; pass --overwrite true to replace them as a whole, or choose "
                "another --output_dir"
            )

    def _image_path(self, folder: Path, index: int) -> Path:
        return folder / f"{self.prefix}_{index:04d}.nii.gz"

    # ------------------------------------------------------------------ drawing
    def _split(self, out: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(out, torch.Tensor):
            return {self.image_key: out}
        if self.image_key not in out:
            raise KeyError(f"sample_fn returned no '{self.image_key}' (keys: {sorted(out)})")
        return dict(out)

    def _to_hu(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = sample[self.image_key].detach().float().cpu()
        if self.intensity_transform is not None:
            image = invert_intensity(image, self.intensity_transform, self.image_key)
        result = {**sample, self.image_key: image}
        if self.label_key in sample:
            result[self.label_key] = sample[self.label_key].detach().cpu()
        return result

    def _draw(self, indices: list[int], attempt: int) -> dict[int, dict[str, torch.Tensor]]:
        gens = sample_generators(self.seed, indices, attempt)
        with torch.inference_mode():
            batch = self._split(self.sample_fn(gens, self.device))
        n = int(batch[self.image_key].shape[0])
        if n != len(indices):
            raise ValueError(f"sample_fn returned {n} samples for {len(indices)} generators")
        out: dict[int, dict[str, torch.Tensor]] = {}
        for k, index in enumerate(indices):
            sample = self._to_hu({key: value[k] for key, value in batch.items()})
            if not torch.isfinite(sample[self.image_key]).all():
                raise ValueError(
                    f"sample {index} holds NaN or infinite values: the generator's weights are unusable "
                    "(pick an earlier checkpoint)"
                )
            if self.postprocess is not None:
                sample = self.postprocess(sample)
            if sample is not None:
                out[index] = sample
        return out

    @torch.no_grad()
    def run(self) -> dict[str, Any]:
        """Draw and write this process's samples; returns the manifest (rank 0 merges it under DDP).

        Raises:
            FileExistsError: when the destination holds samples and ``overwrite`` is off.
            RuntimeError: when a sample is rejected ``max_attempts`` times.
        """
        self._check_destination()
        work = self._work_dir()
        if get_rank() == 0 and work != self.output_dir and work.exists():
            shutil.rmtree(work)
        barrier()
        records: list[dict[str, Any]] = []
        redraws = 0
        indices = self.my_indices()
        for start in range(0, len(indices), self.batch_size):
            pending = indices[start : start + self.batch_size]
            for attempt in range(self.max_attempts):
                accepted = self._draw(pending, attempt)
                for index, sample in sorted(accepted.items()):
                    records.append(self._write(work, index, sample, attempt))
                redraws += len(pending) - len(accepted) if attempt < self.max_attempts - 1 else 0
                pending = [i for i in pending if i not in accepted]
                if not pending:
                    break
            if pending:
                raise RuntimeError(
                    f"samples {pending} were rejected by the post-processing {self.max_attempts} times; "
                    "the generator may be untrained, or raise max_attempts"
                )
            logger.info("sampled %d/%d", start + len(indices[start : start + self.batch_size]), len(indices))
        self._previews(work, records[: self.num_previews])
        return self._finish(work, records, redraws)

    def _write(self, folder: Path, index: int, sample: dict[str, torch.Tensor], attempt: int) -> dict[str, Any]:
        image = sample[self.image_key].numpy()
        image_path = save_volume(
            image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1), self.affine, self._image_path(folder, index)
        )
        record: dict[str, Any] = {"index": index, "image": image_path.name, "attempt": attempt}
        if self.label_key in sample:
            label = sample[self.label_key].numpy()
            label = (label[0] if label.shape[0] == 1 else label).astype(np.uint8)
            label_path = save_volume(label, self.affine, folder / "labels" / image_path.name)
            record["label"] = f"labels/{label_path.name}"
        return record

    def _previews(self, folder: Path, records: Sequence[Mapping[str, Any]]) -> None:
        # previews: rank 0 of a distributed run, or each hand-split range
        if not records or (self.index_range is None and get_rank() != 0):
            return
        from ctsynth.report.previews import save_preview_from_files

        for record in records:
            image = folder / record["image"]
            label = folder / record["label"] if "label" in record else None
            out = folder / "previews" / record["image"].replace(".nii.gz", ".png")
            kwargs = {"window": self.preview_window} if self.preview_window else {}
            save_preview_from_files(image, out, label=label, **kwargs)

    def _finish(self, work: Path, records: list[dict[str, Any]], redraws: int) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "redraws": redraws,
            "affine": self.affine.tolist(),
            "run_info": self.run_info,
            "samples": sorted(records, key=lambda r: r["index"]),
        }
        if self._partial_run():
            part = work / f"{MANIFEST[:-5]}.part{self.index_range[0]}-{self.index_range[1]}.json"
            write_json_atomic(manifest, part)
            return manifest
        if is_distributed():
            gathered: list[Any] = [None] * get_world_size()
            torch.distributed.all_gather_object(gathered, manifest)
            manifest = {
                **manifest,
                "redraws": sum(m["redraws"] for m in gathered),
                "samples": sorted((r for m in gathered for r in m["samples"]), key=lambda r: r["index"]),
            }
        if get_rank() == 0:
            write_json_atomic(manifest, work / MANIFEST)
            if self.output_dir.exists():
                shutil.rmtree(self.output_dir)
            work.rename(self.output_dir)
        barrier()
        return manifest


def merge_sample_parts(folder: str | os.PathLike) -> dict[str, Any]:
    """Join the part manifests of a run split by hand (``index_range``) into the folder's ``samples.json``.

    Args:
        folder: the sample folder all parts wrote into.

    Returns:
        The merged manifest.

    Raises:
        FileNotFoundError: when the folder has no part manifest.
        ValueError: when the parts disagree on the run (seed, count) or do not cover every index exactly once.
    """
    import json

    folder = Path(folder)
    parts = sorted(folder.glob(f"{MANIFEST[:-5]}.part*.json"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no part manifests ({MANIFEST[:-5]}.part<start>-<stop>.json) to merge")
    manifests = [json.loads(p.read_text()) for p in parts]
    first = manifests[0]
    for p, m in zip(parts, manifests, strict=True):
        if (m["num_samples"], m["seed"]) != (first["num_samples"], first["seed"]):
            raise ValueError(f"{p}: seed/num_samples differ from {parts[0].name}; the parts belong to different runs")
    samples = sorted((r for m in manifests for r in m["samples"]), key=lambda r: r["index"])
    indices = [r["index"] for r in samples]
    if indices != list(range(first["num_samples"])):
        missing = sorted(set(range(first["num_samples"])) - set(indices))
        raise ValueError(
            f"{folder}: the parts do not cover every index once (missing {missing[:10]}, got {len(indices)})"
        )
    merged = {**first, "redraws": sum(m["redraws"] for m in manifests), "samples": samples}
    write_json_atomic(merged, folder / MANIFEST)
    for p in parts:
        p.unlink()
    return merged
