"""Scripts of the ``abdomen_ct_ldm`` bundle: what its configs cannot say by themselves.

- :mod:`scripts.data`: datalist, the thesis's three crop regimes, the dataset-level intensity range.
- :mod:`scripts.autoencoder`: stage 1 (AutoencoderKL + PatchDiscriminator) train step and the perceptual-loss check.
- :mod:`scripts.latent`: stage 2 pieces for MONAI's ``SupervisedTrainer`` (latent noise, the bound inferer, the
  scale factor) and the seeded sampling function.
- :mod:`scripts.networks`: loading the frozen autoencoder (our checkpoints or old-format MONAI Generative weights).
- :mod:`scripts.totalseg`: optional TotalSegmentator body mask (semi crop) and pancreas check.
- :mod:`scripts.rating`: the clinical rating kit (mid-slice PNGs, CSV template, per-plane means, Cohen's kappa).
- :mod:`scripts.evaluation`: ``evaluate.json``'s steps.
"""
