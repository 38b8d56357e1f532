"""Experiments: patient-level splits made once and recorded, study arms (real / real+synthetic / synthetic) and a
study runner that runs a bundle config per arm and fold."""

from ctsynth.experiments.arms import ArmKind, StudyArm, synthetic_counts_for_balance
from ctsynth.experiments.runner import StudyRunner, bundle_cli_overrides, overrides_from_argv
from ctsynth.experiments.splits import (
    PatientSplit,
    assert_no_test_leak,
    case_id_of,
    filter_records,
    load_or_make_patient_split,
    make_patient_split,
)

__all__ = [
    "ArmKind",
    "PatientSplit",
    "StudyArm",
    "StudyRunner",
    "assert_no_test_leak",
    "case_id_of",
    "filter_records",
    "load_or_make_patient_split",
    "make_patient_split",
    "bundle_cli_overrides",
    "overrides_from_argv",
    "synthetic_counts_for_balance",
]
