"""Tests of the shared seeded sampler: per-index determinism, split runs, HU inversion, redraws, whole-folder writes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from ctsynth.engines import (
    LatentSampleFn,
    SeededSampler,
    invert_intensity,
    merge_sample_parts,
    read_manifest,
    sample_generators,
    seeded_randn,
)
from ctsynth.transforms.intensity import HUWindowd, unwindow_hu


class CubeGenerator(nn.Module):
    """Latent (4,) -> (1, 6, 6, 6) in [0, 1], with a batch-statistics-free forward (eval-mode deterministic)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 216)

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(-1, 1, 6, 6, 6)


def _sampler(out, **kwargs):
    fn = LatentSampleFn(CubeGenerator().eval(), latent_shape=(4,))
    args = dict(num_samples=5, seed=3, intensity_transform=HUWindowd("image", -100, 170), num_previews=0, affine=2.0)
    args.update(kwargs)
    return SeededSampler(fn, out, **args)


def _arrays(folder):
    manifest = read_manifest(folder)
    return {r["index"]: nib.load(folder / r["image"]).get_fdata() for r in manifest["samples"]}


def test_samples_do_not_depend_on_batch_size(tmp_path):
    _sampler(tmp_path / "b1", batch_size=1).run()
    _sampler(tmp_path / "b4", batch_size=4).run()
    a, b = _arrays(tmp_path / "b1"), _arrays(tmp_path / "b4")
    assert sorted(a) == list(range(5))
    for i in a:  # equal up to the rounding of batched matrix products (HU values ~1e-5 apart)
        np.testing.assert_allclose(a[i], b[i], rtol=1e-5, atol=1e-3)
    assert not np.array_equal(a[0], a[1])


def test_split_index_ranges_give_the_files_of_one_run(tmp_path):
    _sampler(tmp_path / "one", batch_size=1).run()
    _sampler(tmp_path / "split", index_range=(0, 2)).run()
    _sampler(tmp_path / "split", index_range=(2, 5)).run()
    merged = merge_sample_parts(tmp_path / "split")
    assert [r["index"] for r in merged["samples"]] == list(range(5))
    one, split = _arrays(tmp_path / "one"), _arrays(tmp_path / "split")
    for i in one:
        np.testing.assert_array_equal(one[i], split[i])
    assert not list((tmp_path / "split").glob("samples.part*.json"))


def test_merge_refuses_incomplete_parts(tmp_path):
    _sampler(tmp_path / "s", index_range=(0, 2)).run()
    with pytest.raises(ValueError, match=r"do not cover every index once \(missing \[2, 3, 4\]"):
        merge_sample_parts(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no part manifests"):
        merge_sample_parts(tmp_path / "empty")


def test_output_is_hu_through_the_inverse_transform_with_the_affine(tmp_path):
    _sampler(tmp_path / "s").run()
    gen = CubeGenerator().eval()
    z = seeded_randn(sample_generators(3, [0]), (4,))
    expected = unwindow_hu(gen(z)[0, 0].detach().numpy(), -100, 170)
    img = nib.load(tmp_path / "s" / "sample_0000.nii.gz")
    np.testing.assert_allclose(img.get_fdata(), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.diag(img.affine)[:3], [2.0, 2.0, 2.0])
    manifest = read_manifest(tmp_path / "s")
    assert manifest["seed"] == 3 and manifest["redraws"] == 0 and len(manifest["samples"]) == 5


def test_invert_intensity_matches_unwindow():
    x = torch.rand(1, 4, 4, 4)
    out = invert_intensity(x, HUWindowd("image", -1024, 600, -1, 1))
    torch.testing.assert_close(out, unwindow_hu(x, -1024, 600, -1, 1))


def test_existing_folder_is_refused_or_replaced_as_a_whole(tmp_path):
    _sampler(tmp_path / "s").run()
    with pytest.raises(FileExistsError, match="already holds files; pass --overwrite true"):
        _sampler(tmp_path / "s").run()
    _sampler(tmp_path / "s", num_samples=2, overwrite=True).run()
    names = sorted(p.name for p in (tmp_path / "s").glob("*.nii.gz"))
    assert names == ["sample_0000.nii.gz", "sample_0001.nii.gz"]  # no stale samples of the first run
    assert not list(tmp_path.glob(".s.partial"))


def test_rejected_samples_are_redrawn_and_counted(tmp_path):
    calls = {"n": 0}

    def reject_first_two(sample):
        calls["n"] += 1
        return None if calls["n"] <= 2 else {**sample, "label": (sample["image"] > 0).to(torch.uint8)}

    manifest = _sampler(tmp_path / "s", num_samples=3, postprocess=reject_first_two).run()
    assert manifest["redraws"] == 2
    assert [r["attempt"] for r in manifest["samples"]] == [2, 0, 0]  # batch 1: sample 0 is drawn three times
    lbl = nib.load(tmp_path / "s" / manifest["samples"][0]["label"])
    assert lbl.get_data_dtype() == np.uint8
    with pytest.raises(RuntimeError, match=r"rejected by the post-processing 2 times"):
        _sampler(tmp_path / "t", postprocess=lambda s: None, max_attempts=2).run()


def test_non_finite_samples_are_refused(tmp_path):
    def nan_fn(gens, device):
        return torch.full((len(gens), 1, 2, 2, 2), float("nan"))

    with pytest.raises(ValueError, match="sample 0 holds NaN"):
        SeededSampler(nan_fn, tmp_path / "s", num_samples=1, num_previews=0).run()


def test_sampler_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="must be >= 1"):
        _sampler(tmp_path, num_samples=0)
    with pytest.raises(ValueError, match="index_range must satisfy"):
        _sampler(tmp_path, index_range=(3, 9))
    with pytest.raises(ValueError, match="affine must be a 4x4 matrix or a spacing"):
        _sampler(tmp_path, affine=[1.0, 2.0])


def test_previews_and_manifest_run_info(tmp_path):
    manifest = _sampler(tmp_path / "s", num_previews=1, run_info={"checkpoint": "x.pt"}).run()
    assert (tmp_path / "s" / "previews" / "sample_0000.png").is_file()
    assert json.loads((tmp_path / "s" / "samples.json").read_text())["run_info"] == {"checkpoint": "x.pt"}
    assert manifest["affine"][0][0] == 2.0


def _sample_in_process_group(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _sampler(out, batch_size=1).run()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_write_the_files_of_one_process(tmp_path):
    """Under torch.distributed each rank draws every world_size-th index; rank 0 merges the manifest."""
    import torch.multiprocessing as mp

    mp.spawn(_sample_in_process_group, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2)
    _sampler(tmp_path / "one", batch_size=1).run()
    one, ddp = _arrays(tmp_path / "one"), _arrays(tmp_path / "ddp")
    assert sorted(ddp) == list(range(5))
    for i in one:
        np.testing.assert_array_equal(one[i], ddp[i])
    assert not list(tmp_path.glob(".ddp.partial"))
