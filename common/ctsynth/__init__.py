"""ctsynth: shared pieces of the ctsynth MONAI bundles for synthetic 3D CT with label masks.

Subpackages:
    data: procedural CT phantoms, datalists and folds, DICOM to NIfTI, input validation.
    transforms: CT windowing, resampling, cube extraction, marker removal, pair stacking, crop regimes.
    blending: copy-paste, gradient-domain (Poisson) and style-refined insertion of a lesion into tissue.
    metrics: Frechet distances and feature networks, MMD, MS-SSIM, PSNR, histograms, IS, memorisation.
    engines: what several bundles share to train (GAN step helpers, checkpoint I/O, seeding).
    report: previews, plots and the HTML report.
"""

__version__ = "0.1.0"
