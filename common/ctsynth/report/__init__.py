"""ctsynth.report."""
