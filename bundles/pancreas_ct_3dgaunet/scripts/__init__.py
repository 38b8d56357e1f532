"""Custom code of the pancreas_ct_3dgaunet bundle: networks, GAN losses and latents, offline augmentation,
data preparation and checkpoint selection (imported by the configs as ``scripts``)."""
