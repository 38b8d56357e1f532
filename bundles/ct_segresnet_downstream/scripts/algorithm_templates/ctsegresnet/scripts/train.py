"""Training of one fold of the ctsegresnet template; Auto3DSeg runs ``python <fold>/scripts/train.py run
--config_file <configs> [--key=value ...]`` (``torchrun`` with one process per GPU when several are visible).

The loop: class-balanced ROI crops, SegResNetDS with deep supervision, DiceCE loss, AdamW with a warm-up cosine
schedule, validation by sliding window every ``num_epochs_per_validation`` epochs; the best mean foreground Dice is
kept as ``model/model.pt`` and logged to ``model/progress.yaml`` (read by Auto3DSeg's ``get_score``).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import fire
import torch
import torch.distributed as dist
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, decollate_batch
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss
from monai.metrics import DiceMetric
from monai.optimizers import WarmupCosineSchedule
from monai.transforms import AsDiscrete, Compose
from monai.utils import set_determinism
from monai.utils.module import instantiate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from segmenter import base_transforms, build_network, fold_records, load_config, train_transforms  # noqa: E402


def _distributed() -> tuple[bool, int, torch.device]:
    """Join the process group torchrun started (NCCL on GPUs, gloo on CPU); returns (distributed, rank, device)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available()
    if world > 1:
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if cuda:
            torch.cuda.set_device(local_rank)
        return True, dist.get_rank(), torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    return False, 0, torch.device("cuda:0" if cuda else "cpu")


def make_optimizer(parser: ConfigParser, params: Any) -> torch.optim.Optimizer:
    """The configured optimizer (``optimizer`` with its ``_target_``, AdamW by default) over ``params``."""
    spec = parser["optimizer"]
    kwargs = {k: parser.get_parsed_content(f"optimizer#{k}") for k in spec if not k.startswith("_")}
    return instantiate(spec["_target_"], "default", params=params, **kwargs)


def validate(model: torch.nn.Module, loader: DataLoader, parser: ConfigParser, device: torch.device) -> list[float]:
    """Mean Dice per foreground class over the validation records (sliding window over the resampled image)."""
    n_classes = int(parser["output_classes"])
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    to_onehot_pred = AsDiscrete(argmax=True, to_onehot=n_classes)
    to_onehot_label = AsDiscrete(to_onehot=n_classes)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            logits = sliding_window_inference(
                batch["image"].to(device),
                roi_size=[int(v) for v in parser["roi_size"]],
                sw_batch_size=int(parser["sw_batch_size"]),
                predictor=model,
                overlap=float(parser["sw_overlap"]),
            )
            preds = [to_onehot_pred(p) for p in decollate_batch(logits)]
            labels = [to_onehot_label(lb) for lb in decollate_batch(batch["label"].to(device))]
            metric(y_pred=preds, y=labels)
    return [float(v) for v in metric.aggregate().cpu()]


def run(config_file: str | Sequence[str] | None = None, **override: Any) -> float:
    """Train this fold; returns the best mean foreground Dice on its validation records."""
    parser = load_config(config_file or [], override)
    distributed, rank, device = _distributed()
    set_determinism(seed=int(parser["seed"]))
    train_files, val_files = fold_records(parser)
    if distributed:
        train_files = train_files[rank :: dist.get_world_size()] or train_files[:1]
    batch = int(parser["num_images_per_batch"])
    train_loader = DataLoader(
        Dataset(train_files, transform=train_transforms(parser)),
        batch_size=batch,
        shuffle=True,
        num_workers=int(parser["num_workers"]),
    )
    val_loader = DataLoader(Dataset(val_files, transform=Compose(base_transforms(parser))), batch_size=1)
    model = build_network(parser).to(device)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    loss_fn = DeepSupervisionLoss(parser.get_parsed_content("loss"), weight_mode="exp")
    optimizer = make_optimizer(parser, model.parameters())
    epochs = int(parser["num_epochs"])
    steps = max(len(train_loader), 1)
    scheduler = WarmupCosineSchedule(
        optimizer,
        warmup_steps=min(int(parser["num_warmup_epochs"]), max(epochs - 1, 0)) * steps,
        t_total=epochs * steps,
        warmup_multiplier=0.1,
    )
    amp = bool(parser["amp"]) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    ckpt_dir = parser.get_parsed_content("ckpt_path")
    os.makedirs(ckpt_dir, exist_ok=True)
    best, progress, history = -1.0, [], []
    every = max(int(parser["num_epochs_per_validation"] or 1), 1)
    for epoch in range(epochs):
        model.train()
        t0, total = time.time(), 0.0
        for data in train_loader:
            image, label = data["image"].to(device), data["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                loss = loss_fn(model(image), label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += float(loss.detach())
        if distributed:
            dist.barrier()
        if rank == 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            net = model.module if distributed else model
            dice = validate(net, val_loader, parser, device)
            mean = float(sum(dice) / len(dice))
            row = {"epoch": epoch + 1, "train_loss": total / steps, "val_dice": mean, "seconds": time.time() - t0}
            history.append({**row, **{f"val_dice_{k + 1}": d for k, d in enumerate(dice)}})
            print(f"epoch {epoch + 1}/{epochs} loss {row['train_loss']:.4f} val dice {mean:.4f} {dice}", flush=True)
            if mean > best:
                best = mean
                torch.save(
                    {"state_dict": net.state_dict(), "epoch": epoch + 1, "best_metric": best}, f"{ckpt_dir}/model.pt"
                )
                progress.append({"best_avg_dice_score": best, "best_dice_per_class": dice, "epoch": epoch + 1})
                ConfigParser.export_config_file(progress, f"{ckpt_dir}/progress.yaml", fmt="yaml")
            with open(f"{ckpt_dir}/accuracy_history.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(history[-1]))
                writer.writeheader()
                writer.writerows(history)
        if distributed:
            dist.barrier()
    if distributed:
        dist.destroy_process_group()
    return best


if __name__ == "__main__":
    fire.Fire()
