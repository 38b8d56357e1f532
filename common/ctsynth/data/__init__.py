"""Data: procedural phantoms, NIfTI/DICOM I/O, datalists with folds, and input validation."""
