"""Custom code of the ct_pair_hagan bundle: HA-GAN networks, the HA-GAN training step, pair data helpers, sampling
post-processing and the thesis's evaluation (imported by the configs as ``scripts``)."""
