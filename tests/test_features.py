"""Tests of the feature networks in ctsynth.metrics.features (F3D, MedicalNet 3D, RadImageNet 2.5D, Inception 2D)."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctsynth.metrics.features import (
    PLANES,
    RANDOM_WEIGHTS_NOTE,
    C3DClassifierBackbone,
    F3DFeatureExtractor,
    Inception2DSliceFeatureExtractor,
    InceptionV3Features,
    MedicalNet3DFeatureExtractor,
    MissingWeightsError,
    PlaneFeatureExtractor,
    RadImageNet25DFeatureExtractor,
    build_f3d_backbone,
    build_medicalnet_resnet50,
    build_radimagenet_resnet50,
    extract_slices,
    get_feature_extractor,
    load_inception_weights,
    load_medicalnet_weights,
    load_radimagenet_weights,
    slice_indices,
)
from ctsynth.metrics.features.base import (
    FeatureExtractor,
    as_volume_batch,
    load_checkpoint_state_dict,
    seeded_torch_init,
)
from ctsynth.metrics.features.inception import inception_preprocess
from ctsynth.metrics.features.radimagenet import normalize_hu_volumes, radimagenet_preprocess

REPO_ROOT = Path(__file__).resolve().parents[1]

# sha256 of the float32 bytes of (weight, bias) of blocks.0-3.conv and dense, in that order, for seed 42.
# A change means the seeded protocol (or NumPy's PCG64 uniform stream) changed: F3D values are then not comparable.
F3D_WEIGHTS_SHA256 = {
    "torch_default": "d98410e9f6d8535d2ddeda4b9d3f9e04d1fdc846ff3ab95db75b94e2327c376e",
    "keras": "e25da2fd1fb40e59ff5ddb605a1d1443deb9bb212bbac97852a5ca1eef80973e",
}


def _rand_volumes(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


def _weights_hash(net: C3DClassifierBackbone) -> str:
    h = hashlib.sha256()
    for layer in [b.conv for b in net.blocks] + [net.dense]:
        h.update(layer.weight.detach().numpy().tobytes())
        h.update(layer.bias.detach().numpy().tobytes())
    return h.hexdigest()


def _other_weights(build, seed: int) -> dict[str, torch.Tensor]:
    """State dict of a freshly built network with a different seed (same keys and shapes, other values)."""
    net = seeded_torch_init(build, seed=seed)
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


# ----------------------------------------------------------------------------------------------------------------- F3D


def test_f3d_parameter_count_matches_paper_classifier():
    backbone = C3DClassifierBackbone()
    learnable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    head = torch.nn.Linear(512, 1)
    assert learnable == 1_351_360
    assert learnable + sum(p.numel() for p in head.parameters()) == 1_351_873  # 3DGAUnet's stated count


def test_f3d_weights_follow_the_documented_numpy_protocol():
    net = build_f3d_backbone()
    rng = np.random.default_rng(42)
    for layer in [b.conv for b in net.blocks] + [net.dense]:
        shape = tuple(layer.weight.shape)
        fan_in = shape[1] * (math.prod(shape[2:]) if len(shape) > 2 else 1)
        bound = 1.0 / math.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        b = rng.uniform(-bound, bound, size=tuple(layer.bias.shape)).astype(np.float32)
        np.testing.assert_array_equal(layer.weight.detach().numpy(), w)
        np.testing.assert_array_equal(layer.bias.detach().numpy(), b)
    for block in net.blocks:
        assert torch.all(block.norm.running_mean == 0) and torch.all(block.norm.running_var == 1)
        assert torch.all(block.norm.weight == 1) and torch.all(block.norm.bias == 0)
    assert not net.training
    assert _weights_hash(net) == F3D_WEIGHTS_SHA256["torch_default"]


def test_f3d_keras_init():
    net = build_f3d_backbone(init="keras")
    conv = net.blocks[1].conv
    bound = math.sqrt(6.0 / (64 * 27 + 64 * 27))
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    assert torch.all(conv.bias == 0) and torch.all(net.dense.bias == 0)
    assert _weights_hash(net) == F3D_WEIGHTS_SHA256["keras"]


def _reference_f3d(net: C3DClassifierBackbone, x: torch.Tensor) -> torch.Tensor:
    """Float64 functional re-implementation: 4 x [conv -> ReLU -> maxpool 2 -> BN(eval, mean 0, var 1)], GAP, dense."""
    with torch.no_grad():
        h = x.double()
        for block in net.blocks:
            h = F.conv3d(h, block.conv.weight.double(), block.conv.bias.double())
            h = F.max_pool3d(F.relu(h), 2) / math.sqrt(1.0 + block.norm.eps)
        return F.relu(h.mean(dim=(2, 3, 4)) @ net.dense.weight.double().T + net.dense.bias.double())


def test_f3d_features_match_functional_reference():
    x = _rand_volumes((1, 1, 46, 46, 46))  # the smallest edge valid padding allows
    ext = F3DFeatureExtractor(resize_to=None, batch_size=1)
    feats = ext(x)
    assert feats.shape == (1, 512) and feats.dtype == np.float32 and ext.dim == 512
    ref = _reference_f3d(ext.net, x).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-6)
    gap = F3DFeatureExtractor(resize_to=None, layer="gap")(x)
    assert gap.shape == (1, 256)


def test_f3d_resize_and_padding_options():
    small = _rand_volumes((1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="vanish in the F3D network"):
        F3DFeatureExtractor(resize_to=None)(small)
    auto = F3DFeatureExtractor()(small)  # auto: resized to 64^3
    resized = F.interpolate(small, size=(64, 64, 64), mode="trilinear", align_corners=False)
    np.testing.assert_allclose(auto, F3DFeatureExtractor(resize_to=None)(resized), rtol=1e-5, atol=1e-7)
    same = F3DFeatureExtractor(padding="same", resize_to=None)(small)
    assert same.shape == (1, 512) and np.all(np.isfinite(same))
    assert C3DClassifierBackbone().output_spatial_size(64) == 2
    assert C3DClassifierBackbone(padding="same").output_spatial_size(32) == 2


def test_f3d_independent_of_torch_seed_and_leaves_global_rng_alone():
    x = _rand_volumes((1, 1, 48, 48, 48))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = F3DFeatureExtractor(resize_to=None)(x)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(12345)
    b = F3DFeatureExtractor(resize_to=None)(x)
    np.testing.assert_array_equal(a, b)


_F3D_SCRIPT = """
import hashlib, sys
import numpy as np, torch
from ctsynth.metrics.features.f3d import F3DFeatureExtractor
torch.manual_seed(int(sys.argv[1]))
x = torch.from_numpy(np.random.default_rng(0).random((2, 1, 48, 48, 48), dtype=np.float32))
print(hashlib.sha256(F3DFeatureExtractor(resize_to=None, batch_size=2)(x).tobytes()).hexdigest())
"""


@pytest.mark.slow  # two fresh interpreters importing torch and MONAI: ~6 s on 2 idle cores
def test_f3d_bit_identical_across_processes():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "common") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _F3D_SCRIPT, str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for seed in (1, 2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    hashes = [out.decode().strip() for out, _ in outs]
    assert len(hashes[0]) == 64 and hashes[0] == hashes[1]


def test_f3d_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        F3DFeatureExtractor()(torch.zeros(1, 64, 64, 64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        F3DFeatureExtractor()(torch.full((1, 1, 64, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="padding must be"):
        C3DClassifierBackbone(padding="causal")
    with pytest.raises(ValueError, match="layer must be"):
        F3DFeatureExtractor(layer="conv4")
    with pytest.raises(ValueError, match="resize_to must be"):
        F3DFeatureExtractor(resize_to=0)
    with pytest.raises(ValueError, match="init must be"):
        build_f3d_backbone(init="xavier")
    with pytest.raises(ValueError, match="empty batch"):
        as_volume_batch(torch.zeros(0, 1, 8, 8, 8))


# ---------------------------------------------------------------------------------------------------------- MedicalNet


def test_medicalnet_layout_is_dilated_and_2048d():
    net = build_medicalnet_resnet50().eval()
    assert net.conv1.stride == (2, 2, 2) and net.conv1.kernel_size == (7, 7, 7)
    assert net.layer3[0].conv2.dilation == (2, 2, 2) and net.layer3[0].conv2.stride == (1, 1, 1)
    assert net.layer4[2].conv2.dilation == (4, 4, 4) and net.layer4[0].downsample[0].stride == (1, 1, 1)
    assert net.layer1[0].downsample[0].bias is None  # MedicalNet's shortcut B is bias-free
    seen: dict[str, tuple[int, ...]] = {}

    def record(module, inputs, output):
        seen["shape"] = tuple(output.shape)

    net.layer4.register_forward_hook(record)
    with torch.inference_mode():
        out = net(torch.zeros(1, 1, 32, 32, 32))
    assert out.shape == (1, 2048)
    assert seen["shape"] == (1, 2048, 4, 4, 4)  # 8x downsampling, as MedicalNet (MONAI's plain ResNet: 32x)


def test_medicalnet_load_weights_in_tencent_format(tmp_path):
    random_ext = MedicalNet3DFeatureExtractor(allow_random_weights=True)
    # other values, same keys and shapes (cheaper than building a third 3D ResNet-50)
    state = {k: v + 0.01 for k, v in random_ext.net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ckpt = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    ckpt["state_dict"]["module.conv_seg.0.weight"] = torch.zeros(2, 2048, 1, 1, 1)  # head the extractor ignores
    path = tmp_path / "resnet_50.pth"
    torch.save(ckpt, path)

    x = _rand_volumes((1, 1, 32, 32, 32))
    loaded_ext = MedicalNet3DFeatureExtractor(weights=path)
    assert random_ext.note == RANDOM_WEIGHTS_NOTE and loaded_ext.note is None
    loaded = loaded_ext.net.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    a, b = random_ext(x), loaded_ext(x)
    assert a.shape == b.shape == (1, 2048)
    assert not np.allclose(a, b)


def test_medicalnet_reports_bad_checkpoints(tmp_path):
    net = build_medicalnet_resnet50()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    del state["layer1.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    state["bn1.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(
        ValueError, match=r"missing keys: layer1\.0\.conv1\.weight.*unexpected keys: layer9.*bn1\.weight"
    ):
        load_medicalnet_weights(net, path)
    with pytest.raises(MissingWeightsError, match="not found"):
        load_medicalnet_weights(net, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read MedicalNet"):
        load_checkpoint_state_dict(tmp_path / "junk.pth", "MedicalNet ResNet-50")


def test_medicalnet_zscore_is_affine_invariant():
    x = _rand_volumes((1, 1, 24, 24, 24))
    ext = MedicalNet3DFeatureExtractor(allow_random_weights=True, normalization="zscore")
    np.testing.assert_allclose(ext(x), ext(3.0 * x - 7.0), rtol=1e-3, atol=1e-4)


def test_pretrained_extractors_need_weights():
    for cls, what in (
        (MedicalNet3DFeatureExtractor, "MedicalNet"),
        (RadImageNet25DFeatureExtractor, "RadImageNet"),
        (Inception2DSliceFeatureExtractor, "Inception-v3"),
    ):
        with pytest.raises(
            MissingWeightsError, match=f"{what}.*needs a pretrained weights file.*Nothing is downloaded"
        ):
            cls()
        with pytest.raises(MissingWeightsError, match="weights file not found"):
            cls(weights="/nonexistent/weights.pth")


# --------------------------------------------------------------------------------------------------------- RadImageNet


_TORCHVISION_RESNET50_KEYS = {  # a sample of torchvision resnet50 state-dict keys and shapes
    "conv1.weight": (64, 3, 7, 7),
    "bn1.running_mean": (64,),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer3.5.conv3.weight": (1024, 256, 1, 1),
    "layer4.2.bn3.running_var": (2048,),
}


def test_radimagenet_net_has_torchvision_layout():
    net = build_radimagenet_resnet50()
    own = net.state_dict()
    for key, shape in _TORCHVISION_RESNET50_KEYS.items():
        assert tuple(own[key].shape) == shape, key
    assert net.conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (2, 2)  # ResNet v1.5 (stride in the 3x3)
    # torchvision resnet50 has 25,557,032 parameters, 2,049,000 of them in fc
    assert sum(p.numel() for p in net.parameters()) == 25_557_032 - 2_049_000


def test_radimagenet_loads_torchvision_layout_state_dict(tmp_path):
    state = _other_weights(build_radimagenet_resnet50, seed=5)  # torchvision names == MONAI names (the net's own keys)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path / "radimagenet_resnet50.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)

    net = build_radimagenet_resnet50().eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = net(x).clone()
    report = load_radimagenet_weights(net, path)
    assert report.ignored == ["fc.weight", "fc.bias"] and len(report.loaded) == len(state) - 2
    with torch.inference_mode():
        after = net(x)
    assert torch.equal(net.state_dict()["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
    assert not torch.allclose(before, after)


def test_radimagenet_preprocessing():
    vol = torch.tensor([-3000.0, -1000.0, 0.0, 1000.0, 2000.0]).view(1, 1, 5, 1, 1)
    norm = normalize_hu_volumes(vol)
    np.testing.assert_allclose(norm.flatten().numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert torch.all(normalize_hu_volumes(torch.full((1, 1, 2, 2, 2), 50.0)) == 0)
    pre = radimagenet_preprocess(torch.full((1, 1, 2, 2), 0.5))
    np.testing.assert_allclose(pre[0, :, 0, 0].numpy(), [0.5 - 0.406, 0.5 - 0.456, 0.5 - 0.485], rtol=1e-6)


def test_radimagenet25d_extractor_planes():
    ext = RadImageNet25DFeatureExtractor(allow_random_weights=True, centre_ratio=0.25, batch_size=8)
    assert isinstance(ext, PlaneFeatureExtractor) and ext.note == RANDOM_WEIGHTS_NOTE
    hu = _rand_volumes((2, 1, 16, 16, 16)) * 2000 - 1000  # one slice shape: oneDNN sets up one set of kernels
    out = ext(hu)
    assert set(out) == set(PLANES)
    assert all(f.shape == (8, 2048) and np.all(np.isfinite(f)) for f in out.values())  # central 25 %: 4 per volume
    assert not np.allclose(out["xy"], out["yz"])


# ---------------------------------------------------------------------------------------------------------- Inception


def test_inception_has_torchvision_layout_and_size():
    net = InceptionV3Features()
    own = net.state_dict()
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7c.branch3x3dbl_3b.bn.weight": (384,),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(own[key].shape) == shape, key
    assert net.Mixed_7c.branch1x1.bn.eps == 0.001
    # torchvision inception_v3: 27,161,264 parameters = trunk + fc (2,049,000) + AuxLogits (3,326,696)
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 2_049_000 - 3_326_696


def test_inception_preprocess_range_and_size():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    out = inception_preprocess(x)
    assert out.shape == (1, 3, 299, 299)
    assert out.min() >= -1.0 and out.max() <= 1.0 and torch.equal(out[:, 0], out[:, 2])
    assert inception_preprocess(torch.ones(1, 1, 299, 299)).eq(1.0).all()


def test_inception_loads_weights_and_extracts_2048d(tmp_path):
    random_ext = Inception2DSliceFeatureExtractor(allow_random_weights=True, planes=("xy",))
    state = _other_weights(InceptionV3Features, seed=6)
    state["fc.weight"], state["AuxLogits.fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1000)
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)

    vols = _rand_volumes((1, 1, 8, 8, 8))
    loaded_ext = Inception2DSliceFeatureExtractor(weights=path, planes=("xy",))
    a, b = random_ext(vols)["xy"], loaded_ext(vols)["xy"]  # one 299x299 image each
    assert a.shape == b.shape == (1, 2048) and np.all(np.isfinite(b))
    assert not np.allclose(a, b)
    assert torch.equal(
        loaded_ext.net.state_dict()["Mixed_6c.branch7x7_2.conv.weight"], state["Mixed_6c.branch7x7_2.conv.weight"]
    )
    report = load_inception_weights(loaded_ext.net, path)
    assert sorted(report.ignored) == ["AuxLogits.fc.bias", "fc.weight"]
    with pytest.raises(ValueError, match="without a classifier"):
        loaded_ext.net.logits(torch.zeros(1, 3, 75, 75))


def test_inception_classifier_for_inception_score(tmp_path):
    net = InceptionV3Features(num_classes=1008)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    gen = torch.Generator().manual_seed(7)
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048, generator=gen), torch.randn(1008, generator=gen)
    path = tmp_path / "pt_inception_with_fc.pth"
    torch.save(state, path)
    load_inception_weights(net, path)
    assert torch.equal(net.fc.weight, state["fc.weight"])
    with torch.inference_mode():
        x = torch.rand(1, 3, 75, 75, generator=gen) * 2 - 1  # 75x75: the smallest input the trunk accepts
        logits = net.logits(x)
        np.testing.assert_allclose(logits, net(x) @ state["fc.weight"].T + state["fc.bias"], rtol=1e-4, atol=1e-4)
    assert logits.shape == (1, 1008)


# ------------------------------------------------------------------------------------------------------------- slices


def test_slice_indices_rules():
    assert slice_indices(9) == [4] and slice_indices(10) == [5]
    assert slice_indices(6, "all") == list(range(6))
    assert slice_indices(10, "all", centre_ratio=0.5) == [3, 4, 5, 6, 7]
    assert slice_indices(9, "all", centre_ratio=0.34) == [3, 4, 5]
    assert slice_indices(10, "every_k", every_k=3) == [0, 3, 6, 9]
    assert slice_indices(10, "all", centre_ratio=0.01) == [5]
    with pytest.raises(ValueError, match="centre_ratio must be in"):
        slice_indices(10, "all", centre_ratio=1.5)
    with pytest.raises(ValueError, match="slices must be"):
        slice_indices(10, "middle")
    with pytest.raises(ValueError, match="every_k must be"):
        slice_indices(10, "every_k", every_k=0)


def test_extract_slices_planes_follow_array_axes():
    vol = torch.arange(2 * 4 * 5 * 6, dtype=torch.float32).view(2, 1, 4, 5, 6)
    xy = extract_slices(vol, "xy")
    assert xy.shape == (2, 1, 4, 5) and torch.equal(xy[1, 0], vol[1, 0, :, :, 3])
    yz = extract_slices(vol, "sagittal")
    assert yz.shape == (2, 1, 5, 6) and torch.equal(yz[0, 0], vol[0, 0, 2])
    zx = extract_slices(vol, "zx", slices="all")
    assert zx.shape == (10, 1, 4, 6) and torch.equal(zx[5 + 3, 0], vol[1, 0, :, 3, :])
    with pytest.raises(ValueError, match="unknown plane"):
        extract_slices(vol, "oblique")


# ------------------------------------------------------------------------------------------------------------ factory


def test_get_feature_extractor():
    f3d = get_feature_extractor("f3d", allow_random_weights=True)
    assert isinstance(f3d, F3DFeatureExtractor) and isinstance(f3d, FeatureExtractor) and f3d.note is None
    assert f3d.describe()["seed"] == 42
    inc = get_feature_extractor("inception2d", allow_random_weights=True, slices="every_k", every_k=2)
    assert isinstance(inc, Inception2DSliceFeatureExtractor) and inc.describe()["slices"] == "every_k"
    assert isinstance(get_feature_extractor("medicalnet3d", allow_random_weights=True), MedicalNet3DFeatureExtractor)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        get_feature_extractor("vgg")
    with pytest.raises(ValueError, match="takes no weights file"):
        get_feature_extractor("f3d", weights="x.pth")
