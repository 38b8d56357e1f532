"""Custom code of the chest_ct_sgan bundle (imported by the configs as ``scripts``): CT-SGAN and baseline networks,
the slab sampling transform, the training steps, the volume sampler, the slice-wise FID/IS protocol, the nodule
injector/eraser and the 3D SqueezeNet nodule classifier."""
