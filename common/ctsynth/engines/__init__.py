"""ctsynth.engines: what several bundles share to train (GAN step helpers, checkpoint I/O, loss logs, seeding)."""

from ctsynth.engines.checkpoints import find_latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from ctsynth.engines.gan import AccuracyGate, GatedGanTrainer, discriminator_accuracy, make_gaussian_latent
from ctsynth.engines.loss_log import EpochLossLogger, read_loss_log
from ctsynth.engines.seeding import per_index_seed, seed_everything, seed_worker, seeded_noise
from ctsynth.engines.selection import (
    CheckpointChoice,
    choose_checkpoint_epoch,
    detect_blowup,
    rolling_median,
    select_checkpoint,
)

__all__ = [
    "AccuracyGate",
    "CheckpointChoice",
    "EpochLossLogger",
    "GatedGanTrainer",
    "choose_checkpoint_epoch",
    "detect_blowup",
    "discriminator_accuracy",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "make_gaussian_latent",
    "per_index_seed",
    "read_loss_log",
    "rolling_median",
    "save_checkpoint",
    "seed_everything",
    "seed_worker",
    "seeded_noise",
    "select_checkpoint",
]
