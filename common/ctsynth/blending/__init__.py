"""ctsynth.blending."""
