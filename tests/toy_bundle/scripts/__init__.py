"""A toy generator bundle for the engine tests: two WGAN-GP critics and an encoder (the shapes of CT-SGAN's D_slice
+ D_slab and HA-GAN's encoder step), written as a real bundle would be on :class:`ctsynth.engines.GenerativeTrainer`."""
