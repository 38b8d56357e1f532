"""metrics.json values on a tiny fixed input equal the values recorded before the suite was reorganised
(registry, options object, extractor-owned input conventions). Re-record only for an intended change of a metric:
``python tests/metrics_regression_input.py --record``."""

from __future__ import annotations

import json
import math

import pytest
from metrics_regression_input import (
    FAST_METRICS,
    LEGACY,
    PRETRAINED_METRICS,
    RECORD,
    numbers,
    run_legacy_call,
    write_inputs,
)

EXPECTED = json.loads(RECORD.read_text())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("regression"))


def _assert_same(got: dict, expected: dict) -> None:
    missing = sorted(set(expected) - set(got))
    assert not missing, f"keys gone from metrics.json: {missing}"
    for key, want in expected.items():
        have = got[key]
        if isinstance(want, float) and isinstance(have, float):
            assert math.isclose(have, want, rel_tol=1e-5, abs_tol=1e-9), f"{key}: {have} != recorded {want}"
        else:
            assert have == want, f"{key}: {have!r} != recorded {want!r}"


def test_fast_metrics_equal_recorded_values(root):
    got = run_legacy_call(
        root,
        FAST_METRICS,
        real_label_dir=root / "real_labels",
        synthetic_label_dir=root / "syn_labels",
        extractor_kwargs={"f3d": {"padding": "same", "resize_to": None}},
        batch_size=3,
        window=(-1000.0, 1000.0),
        **LEGACY,
    )
    _assert_same(numbers(got), EXPECTED["fast"])


def test_pretrained_network_metrics_equal_recorded_values(root):
    """Random-weight MedicalNet, RadImageNet and Inception: each extractor's input convention is unchanged."""
    got = run_legacy_call(
        root,
        PRETRAINED_METRICS,
        allow_random_weights=True,
        batch_size=4,
        window=(-1000.0, 1000.0),
        extractor_kwargs={"inception2d": {"slices": "centre"}, "radimagenet25d": {"slices": "centre"}},
        **LEGACY,
    )
    _assert_same(numbers(got), EXPECTED["pretrained_random"])
