"""The open suite (metric registry, EvaluationOptions, extractor-owned inputs) and the honesty checks (flags on
untrained / random-weight features, IS warnings, geometry warnings, JSON-safe writing)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from ctsynth.data.io import save_volume, to_json_safe, write_json_atomic
from ctsynth.metrics.features import extractor_input
from ctsynth.metrics.features.f3d import F3DFeatureExtractor
from ctsynth.metrics.features.inception import Inception2DSliceFeatureExtractor
from ctsynth.metrics.features.medicalnet import MedicalNet3DFeatureExtractor
from ctsynth.metrics.features.radimagenet import RadImageNet25DFeatureExtractor
from ctsynth.metrics.options import EvaluationOptions
from ctsynth.metrics.registry import DEFAULT_REGISTRY, VOLUME_FEATURES, MetricOutput, MetricRegistry
from ctsynth.metrics.suite import EvaluationSuite, evaluate

FAST_F3D = {"f3d": {"padding": "same", "resize_to": None}}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("registry")
    for what, affine in (("real", np.diag([1.0, 1.0, 1.0, 1.0])), ("syn", np.diag([1.0, 1.0, 1.0, 1.0]))):
        for i in range(4):
            v = ndimage.gaussian_filter(rng.normal(size=(16, 16, 16)), 1.5) * 1500.0 + 40.0
            save_volume(v.astype(np.float32), affine, root / what / f"v{i}.nii.gz")
    for i in range(4):  # the synthetic set at 3 mm in LPS: a physical-scale and orientation mismatch
        v = np.full((16, 16, 16), 40.0, np.float32) + rng.normal(0, 20, (16, 16, 16)).astype(np.float32)
        save_volume(v, np.diag([-3.0, -3.0, 3.0, 1.0]), root / "syn3mm" / f"v{i}.nii.gz")
    return root


def _report(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def test_custom_metric_registered_from_test_code_lands_in_metrics_json(sets, tmp_path):
    registry = DEFAULT_REGISTRY.copy()

    @registry.register("mean_hu_gap", needs={"centre_slices"}, default=True, measures="realism")
    def mean_gap(ctx):
        r = np.mean([s.mean() for s in ctx.real.slices["axial"]])
        s = np.mean([s.mean() for s in ctx.synthetic.slices["axial"]])
        return MetricOutput({"value": float(abs(r - s)), "protocol": {"definition": "|mean r - mean s|"}},
                            rows=[{"gap": float(abs(r - s))}])  # fmt: skip

    registry.register("feature_norm", lambda ctx: {"value": float(np.linalg.norm(ctx.features()[1]))},
                      features=VOLUME_FEATURES)  # fmt: skip
    path = evaluate(sets / "real", sets / "syn", tmp_path / "o", metrics=["mean_hu_gap", "feature_norm", "psnr"],
                    registry=registry, extractor_kwargs=FAST_F3D, progress=False)  # fmt: skip
    report = _report(path)
    assert report["metrics"]["mean_hu_gap"]["value"] >= 0 and report["metrics"]["mean_hu_gap"]["measures"] == "realism"
    assert (tmp_path / "o" / "mean_hu_gap.csv").read_text().startswith("gap")
    feat = report["metrics"]["feature_norm"]
    assert feat["value"] > 0 and feat["features"] == "f3d" and feat["feature_weights"] == "untrained_by_definition"
    assert "feature_norm" in report["flags"]
    assert "mean_hu_gap" not in DEFAULT_REGISTRY  # the copy was extended, the default registry is untouched
    default = EvaluationSuite(sets / "real", sets / "syn", tmp_path / "d", registry=registry).select_metrics()
    assert "mean_hu_gap" in default and "feature_norm" not in default


def test_registry_rejects_duplicates_and_unknown_needs():
    registry = MetricRegistry()
    registry.register("a", lambda ctx: {})
    with pytest.raises(ValueError, match="'a' is already registered"):
        registry.register("a", lambda ctx: {})
    with pytest.raises(ValueError, match="unknown stream products \\['pixels'\\]"):
        registry.register("b", lambda ctx: {}, needs={"pixels"})
    with pytest.raises(KeyError, match="unknown metric 'zz'"):
        registry["zz"]


def test_options_object_and_unknown_option(sets, tmp_path):
    opts = EvaluationOptions(window=(-500, 500), resize_to=8, progress=False)
    assert opts.resize_to == (8, 8, 8) and opts.hist_body_mask is True and opts.memorisation_max_shift == 4
    report = _report(evaluate(sets / "real", sets / "syn", tmp_path / "o", metrics="mmd_linear", options=opts))
    assert report["preprocessing"]["window_hu"] == [-500.0, 500.0] and report["volume_shape"] == [8, 8, 8]
    with pytest.raises(TypeError, match="unknown evaluation option\\(s\\) \\['windw'\\]"):
        EvaluationSuite(sets / "real", sets / "syn", tmp_path / "x", windw=(0, 1))
    with pytest.raises(ValueError, match="window must be \\(low, high\\) with high > low"):
        EvaluationOptions(window=(10, -10))


def test_each_extractor_owns_its_input_convention():
    x = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 3, 1, 1)
    window = (-1000.0, 1000.0)
    assert torch.equal(F3DFeatureExtractor.from_windowed(None, x, window), x)
    assert torch.equal(Inception2DSliceFeatureExtractor.from_windowed(None, x, window), x)
    assert torch.allclose(
        MedicalNet3DFeatureExtractor.from_windowed(None, x, window).flatten(), torch.tensor([-1, -0.5, 1.0])
    )
    hu = RadImageNet25DFeatureExtractor.from_windowed(None, x, window).flatten()
    assert torch.allclose(hu, torch.tensor([-1000.0, -500.0, 1000.0]))

    class Custom:  # an extractor a bundle adds, without from_windowed: gets the [0, 1] volume
        pass

    assert extractor_input(Custom(), x, window) is x


def test_random_weight_features_flag_every_metric_that_reuses_them(sets, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ctsynth.metrics.suite"):
        path = evaluate(sets / "real", sets / "syn", tmp_path / "o",
                        metrics="fid3d_medicalnet,mmd_gaussian,prdc,is,memorisation,mmd_linear",
                        allow_random_weights=True, batch_size=4, progress=False)  # fmt: skip
    report = _report(path)
    for metric in ("fid3d_medicalnet", "mmd_gaussian", "prdc", "is", "memorisation"):
        m = report["metrics"][metric]
        assert m["features"] == "medicalnet3d" and m["feature_weights"] == "random", metric
        assert "random weights" in report["flags"][metric] and f"{metric}: computed on medicalnet3d" in caplog.text
    assert report["metrics"]["mmd_linear"].get("flag") is None and "mmd_linear" not in report["flags"]
    is_ = report["metrics"]["is"]
    assert is_["warnings"] and "meaningless" in is_["warnings"][0] and np.isfinite(is_["log_value"])


def test_is_on_f3d_features_is_flagged(sets, tmp_path):
    report = _report(evaluate(sets / "real", sets / "syn", tmp_path / "o", metrics="is,f3d",
                              extractor_kwargs=FAST_F3D, progress=False))  # fmt: skip
    is_ = report["metrics"]["is"]
    assert is_["feature_weights"] == "untrained_by_definition" and "untrained seeded 3D CNN" in is_["flag"]
    assert any("is: computed on f3d features" in w for w in report["warnings"])
    assert is_["log_value"] == pytest.approx(np.log(is_["value"]))
    assert "untrained seeded 3D CNN" in report["flags"]["f3d"]


def test_geometry_mismatch_is_warned(sets, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ctsynth.metrics.suite"):
        path = evaluate(sets / "real", sets / "syn3mm", tmp_path / "o", metrics="mmd_linear", progress=False)
    geo = _report(path)["geometry"]
    assert geo["matches"] is False
    assert any("voxel spacing (mm)" in w and "[3.0, 3.0, 3.0]" in w for w in geo["warnings"])
    assert any("orientation" in w and "LPS" in w for w in geo["warnings"])
    assert "differ in voxel spacing" in caplog.text
    same = _report(evaluate(sets / "real", sets / "syn", tmp_path / "p", metrics="mmd_linear", progress=False))
    assert same["geometry"]["matches"] is True and same["geometry"]["real"]["spacings_mm"][0]["spacing"] == [1, 1, 1]


def test_json_safe_writer(tmp_path):
    data = {"a": np.float32(1.5), "b": np.arange(3), "c": Path("/x/y"), "d": float("nan"), "e": -np.inf,
            "f": (np.int64(2), {3}), "g": torch.tensor([1.0, 2.0]), 4: np.bool_(True)}  # fmt: skip
    path = write_json_atomic(data, tmp_path / "d.json")
    assert json.loads(path.read_text()) == {
        "a": 1.5, "b": [0, 1, 2], "c": "/x/y", "d": None, "e": "-inf", "f": [2, [3]], "g": [1.0, 2.0], "4": True,
    }  # fmt: skip
    assert to_json_safe(float("nan"), nan="NaN") == "NaN"


def test_f3d_input_scale_option_feeds_0_255_and_is_recorded(sets, tmp_path):
    """EvaluationOptions.f3d_input_scale=255 feeds the network 0-255 values (the scale the 3DGAUnet paper's F3D
    magnitudes fit); the default stays [0, 1] and gives the same value as before."""
    x = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 3, 1, 1)
    assert torch.equal(F3DFeatureExtractor(**FAST_F3D["f3d"], input_scale=255).from_windowed(x, (0.0, 1.0)), x * 255)
    base = _report(evaluate(sets / "real", sets / "syn", tmp_path / "a", metrics="f3d", extractor_kwargs=FAST_F3D,
                            progress=False))  # fmt: skip
    one = _report(evaluate(sets / "real", sets / "syn", tmp_path / "b", metrics="f3d", extractor_kwargs=FAST_F3D,
                           f3d_input_scale=1.0, progress=False))  # fmt: skip
    big = _report(evaluate(sets / "real", sets / "syn", tmp_path / "c", metrics="f3d", extractor_kwargs=FAST_F3D,
                           f3d_input_scale=255.0, progress=False))  # fmt: skip
    v0, v255 = base["metrics"]["f3d"]["value"], big["metrics"]["f3d"]["value"]
    assert one["metrics"]["f3d"]["value"] == v0
    assert 1e3 < v255 / v0 < 1e6  # about 255^2 (biases and ReLU make it inexact)
    assert big["preprocessing"]["feature_inputs"]["f3d"].startswith("[0, 255]")
    assert big["metrics"]["f3d"]["protocol"]["extractor"]["input_scale"] == 255.0
    with pytest.raises(ValueError, match="f3d_input_scale must be positive"):
        EvaluationOptions(f3d_input_scale=0)
