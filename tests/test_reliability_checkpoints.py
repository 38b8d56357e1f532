"""A crafted checkpoint (a pickle that runs code when unpickled) is refused on every path that loads one: resume,
inference, checkpoint selection, metric weights, export. The payload would create a marker file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ctsynth.engines import CheckpointHandler, load_checkpoint, load_network, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "pancreas_ct_3dgaunet"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(tmp_path):
    """``(path, marker)``: a checkpoint-looking file whose unpickling would touch ``marker``."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "checkpoints" / "checkpoint_epoch=7.pt"
    path.parent.mkdir()
    torch.save({"generator": _Payload(marker), "trainer": {"epoch": 7}}, path)
    return path, marker


def test_resume_refuses_a_crafted_checkpoint(crafted):
    from ignite.engine import Engine

    path, marker = crafted
    net = nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    CheckpointHandler(path.parent, {"generator": net}).attach(engine)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


def test_inference_refuses_a_crafted_checkpoint(crafted):
    path, marker = crafted
    with pytest.raises(ValueError, match="not a readable weights-only checkpoint"):
        load_network(path, "generator")
    assert not marker.exists()


def test_selection_refuses_a_crafted_checkpoint(crafted, bundle_runner):
    path, marker = crafted
    run = path.parent.parent
    (run / "losses.csv").write_text("epoch,g_loss\n" + "".join(f"{e},1.0\n" for e in range(1, 8)))
    with bundle_runner("pancreas_ct_3dgaunet").scripts():
        from scripts.checkpoint_selection import select_and_export

        with pytest.raises(Exception, match="Weights only load failed|weights_only"):
            select_and_export(run, out=run / "model.pt")
    assert not marker.exists() and not (run / "model.pt").exists()


def test_metric_weights_refuse_a_crafted_file(crafted):
    from ctsynth.metrics.features.base import load_checkpoint_state_dict

    path, marker = crafted
    with pytest.raises(ValueError, match="cannot read MedicalNet weights from"):
        load_checkpoint_state_dict(path, "MedicalNet")
    assert not marker.exists()


def test_load_checkpoint_refuses_a_crafted_file(crafted):
    path, marker = crafted
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.slow
def test_export_refuses_a_crafted_checkpoint(crafted, tmp_path, bundle_runner):
    path, marker = crafted
    # the inference config rebuilds the network from a genuine checkpoint; ckpt_export then loads the crafted file
    genuine = tmp_path / "genuine.pt"
    definition = (
        '{"generator": {"_target_": "scripts.networks.UNetGenerator3D", "spatial_size": 32, "channels": [4, 8]}}'
    )
    with bundle_runner("pancreas_ct_3dgaunet").scripts():
        from scripts.networks import UNetGenerator3D

        generator = UNetGenerator3D(32, channels=(4, 8))
    save_checkpoint({"generator": generator, "network_definitions": definition}, genuine)
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "g.ts"),
           "--ckpt_file", str(path), "--ckpt_path", str(genuine), "--key_in_ckpt", "generator",
           "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BUNDLE), str(REPO / "common")]))
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Weights only load failed" in proc.stderr
    assert not marker.exists() and not (tmp_path / "g.ts").exists()
