"""ctsynth.transforms."""
