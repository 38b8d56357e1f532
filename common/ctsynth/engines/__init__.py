"""ctsynth.engines: what every generator bundle shares to train and sample.

- :class:`GenerativeTrainer`: MONAI ``Trainer`` with named networks/optimisers; a bundle writes ``train_step``.
- :mod:`~ctsynth.engines.losses`: BCE, Wasserstein, gradient-penalty and R1 losses.
- :class:`CheckpointHandler`: atomic checkpoints with network definitions and RNG states, resume, final save.
- :mod:`~ctsynth.engines.networks`: rebuild a trained network from its checkpoint alone (:func:`load_network`).
- :class:`SeededSampler`: sample ``i`` depends only on ``(seed, i)``; NIfTI in HU, previews, manifest.
- :func:`checkpoint_module`: activation checkpointing that keeps BatchNorm running statistics right.
- loss CSV logging, checkpoint selection by the 3DGAUnet rule, seeding, DDP helpers.
"""

from ctsynth.engines.checkpoints import (
    CheckpointHandler,
    RNGState,
    find_latest_checkpoint,
    is_readable_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ctsynth.engines.distributed import all_ranks_agree, get_rank, get_world_size, is_distributed, is_main_process
from ctsynth.engines.loss_log import EpochLossLogger, read_loss_log
from ctsynth.engines.losses import (
    bce_discriminator_loss,
    bce_generator_loss,
    gradient_penalty,
    r1_penalty,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from ctsynth.engines.memory import checkpoint_module, held_batchnorm_statistics
from ctsynth.engines.networks import (
    build_network,
    load_network,
    network_definition,
    read_checkpoint_info,
    read_run_info,
)
from ctsynth.engines.sampling import (
    LatentSampleFn,
    SeededSampler,
    invert_intensity,
    merge_sample_parts,
    read_manifest,
    sample_generators,
    seeded_randn,
)
from ctsynth.engines.seeding import per_index_seed, seed_everything, seed_worker, seeded_noise
from ctsynth.engines.selection import (
    CheckpointChoice,
    choose_checkpoint_epoch,
    detect_blowup,
    rolling_median,
    select_checkpoint,
)
from ctsynth.engines.trainer import GenerativeTrainer, NonFiniteLossError, prepare_dict_batch, unwrap

__all__ = [
    "CheckpointChoice",
    "CheckpointHandler",
    "EpochLossLogger",
    "GenerativeTrainer",
    "LatentSampleFn",
    "NonFiniteLossError",
    "RNGState",
    "SeededSampler",
    "all_ranks_agree",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "build_network",
    "checkpoint_module",
    "choose_checkpoint_epoch",
    "detect_blowup",
    "find_latest_checkpoint",
    "get_rank",
    "get_world_size",
    "gradient_penalty",
    "held_batchnorm_statistics",
    "invert_intensity",
    "is_distributed",
    "is_main_process",
    "is_readable_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_network",
    "merge_sample_parts",
    "network_definition",
    "per_index_seed",
    "prepare_dict_batch",
    "r1_penalty",
    "read_checkpoint_info",
    "read_loss_log",
    "read_manifest",
    "read_run_info",
    "rolling_median",
    "sample_generators",
    "save_checkpoint",
    "seed_everything",
    "seed_worker",
    "seeded_noise",
    "seeded_randn",
    "select_checkpoint",
    "unwrap",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
]
