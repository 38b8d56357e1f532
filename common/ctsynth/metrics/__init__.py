"""ctsynth.metrics."""
