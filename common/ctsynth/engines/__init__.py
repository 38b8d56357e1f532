"""ctsynth.engines."""
