"""Study arms: which records a downstream model trains on in one arm of a synthetic-data study.

An arm turns the real training records of one fold and a pool of synthetic records into a training list:

- ``real``: the real records only (the baseline);
- ``real+synthetic``: the real records plus synthetic ones, either ``mix_ratio`` synthetic per real record, or as
  many per class as balance the classes (:func:`synthetic_counts_for_balance`, the 3DGAUnet paper's Config II rule);
- ``synthetic``: synthetic records only (all of the pool, or ``n_synthetic`` of it).

Validation and test records are never touched by an arm: they stay real. Synthetic draws are seeded (a fixed subset
for a given seed and pool, in the pool's order) and every returned record carries ``"source"`` (``"real"`` or
``"synthetic"``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = ["ArmKind", "StudyArm", "synthetic_counts_for_balance"]

logger = logging.getLogger(__name__)


class ArmKind(StrEnum):
    """What an arm trains on."""

    REAL = "real"
    REAL_PLUS_SYNTHETIC = "real+synthetic"
    SYNTHETIC = "synthetic"


def synthetic_counts_for_balance(
    real_counts: Mapping[Hashable, int], available: Mapping[Hashable, int], total: int | None = None
) -> dict[Hashable, int]:
    """How many synthetic records of each class to add so the training classes are balanced.

    Rule (water filling): raise the smallest classes to a common level ``L`` with synthetic records, choosing the
    highest ``L`` such that the additions fit within what is available per class and within the ``total`` budget;
    ``L`` goes above the largest real class only while every class can reach it, so classes end equal whenever
    balance is reachable, and otherwise the minority classes get all that is available (the closest to balance).
    With the 3DGAUnet paper's 139 PDAC / 203 healthy real cubes and a budget of 164 this gives its +114 PDAC and
    +50 healthy (253 / 253; Shi et al. 2023, section 3.4).

    Args:
        real_counts: real training records per class.
        available: synthetic records available per class (a class missing here has none).
        total: maximum number of synthetic records to add (``None``: no budget).

    Returns:
        Synthetic records to add, per class of ``real_counts``.

    Raises:
        ValueError: for negative or non-integer counts.
    """
    classes = list(real_counts)
    values = [real_counts[c] for c in classes] + [available.get(c, 0) for c in classes]
    if any(int(v) != v or v < 0 for v in values) or (total is not None and (int(total) != total or total < 0)):
        raise ValueError(f"counts must be non-negative integers, got {dict(real_counts)}, {dict(available)}, {total}")
    n = {c: int(real_counts[c]) for c in classes}
    avail = {c: int(available.get(c, 0)) for c in classes}
    budget = sum(avail.values()) if total is None else int(total)
    if not classes:
        return {}

    def adds(level: int) -> dict[Hashable, int]:
        return {c: min(max(level - n[c], 0), avail[c]) for c in classes}

    top, reach = max(n.values()), min(n[c] + avail[c] for c in classes)
    best = adds(min(n.values()))
    for level in range(min(n.values()), max(top, reach) + 1):
        if level > top and level > reach:
            break
        candidate = adds(level)
        if sum(candidate.values()) > budget:
            break
        best = candidate
    return best


@dataclass(frozen=True)
class StudyArm:
    """One arm of a study.

    Args:
        name: name of the arm (folder and table row; e.g. ``"I"``, ``"real"``).
        kind: :class:`ArmKind` (or its value ``"real"``, ``"real+synthetic"``, ``"synthetic"``).
        mix_ratio: ``real+synthetic`` only: synthetic records per real record (``0.5``: one synthetic per two real).
        balance_classes: ``real+synthetic`` only: add synthetic records per class so the classes end balanced
            (instead of ``mix_ratio``).
        n_synthetic: budget of synthetic records (``real+synthetic`` with balancing: the ``total`` of
            :func:`synthetic_counts_for_balance`; ``synthetic``: how many of the pool, default all).
        label_key: class key of the records (balancing only).
    """

    name: str
    kind: ArmKind | str = ArmKind.REAL
    mix_ratio: float | None = None
    balance_classes: bool = False
    n_synthetic: int | None = None
    label_key: str = "label"

    def __post_init__(self) -> None:
        try:
            kind = ArmKind(self.kind)
        except ValueError as e:
            raise ValueError(
                f"arm {self.name!r}: unknown kind {self.kind!r}; use one of {[k.value for k in ArmKind]}"
            ) from e
        object.__setattr__(self, "kind", kind)
        if kind is ArmKind.REAL_PLUS_SYNTHETIC and (self.mix_ratio is None) == (not self.balance_classes):
            raise ValueError(f"arm {self.name!r}: real+synthetic needs exactly one of mix_ratio or balance_classes")
        if kind is not ArmKind.REAL_PLUS_SYNTHETIC and (self.mix_ratio is not None or self.balance_classes):
            raise ValueError(f"arm {self.name!r}: mix_ratio and balance_classes apply to real+synthetic arms only")
        if self.mix_ratio is not None and self.mix_ratio < 0:
            raise ValueError(f"arm {self.name!r}: mix_ratio must be >= 0, got {self.mix_ratio}")
        if self.n_synthetic is not None and self.n_synthetic < 0:
            raise ValueError(f"arm {self.name!r}: n_synthetic must be >= 0, got {self.n_synthetic}")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> StudyArm:
        """An arm from a config dict, e.g. ``{"name": "II", "kind": "real+synthetic", "balance_classes": true}``."""
        return cls(**dict(spec))

    def training_records(
        self,
        real: Sequence[Mapping[str, Any]],
        synthetic: Sequence[Mapping[str, Any]] = (),
        seed: int = 0,
        balance_reference: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The training records of this arm for one fold.

        Args:
            real: the real training records of the fold (already filtered by the patient split).
            synthetic: the synthetic pool.
            seed: seed of the synthetic draw.
            balance_reference: records whose class counts the balancing uses (default ``real``); e.g. the whole real
                training set, so that every fold gets the same synthetic subset (the 3DGAUnet paper's counts are for
                its whole training set).

        Returns:
            Copies of the chosen records (real first, then synthetic), each with ``"source"`` set.

        Raises:
            ValueError: when the pool is too small for ``mix_ratio`` / ``n_synthetic``, or a record lacks the class
                key when balancing.
        """
        real_items = [{**r, "source": r.get("source", "real")} for r in real]
        pool = [{**s, "source": "synthetic"} for s in synthetic]
        rng = np.random.default_rng(seed)
        if self.kind is ArmKind.REAL:
            return real_items
        if self.kind is ArmKind.SYNTHETIC:
            n = len(pool) if self.n_synthetic is None else int(self.n_synthetic)
            return self._draw(pool, n, rng)
        if self.mix_ratio is not None:
            n = int(np.floor(self.mix_ratio * len(real_items) + 0.5))
            if self.n_synthetic is not None:
                n = min(n, int(self.n_synthetic))
            return real_items + self._draw(pool, n, rng)
        reference = real_items if balance_reference is None else list(balance_reference)
        return real_items + self._balanced(reference, pool, rng)

    def _draw(self, pool: list[dict[str, Any]], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        if n > len(pool):
            raise ValueError(f"arm {self.name!r}: needs {n} synthetic record(s), the pool has {len(pool)}")
        return [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]

    def _balanced(
        self, real: list[dict[str, Any]], pool: list[dict[str, Any]], rng: np.random.Generator
    ) -> list[dict[str, Any]]:
        missing = [r for r in real + pool if self.label_key not in r]
        if missing:
            raise ValueError(
                f"arm {self.name!r}: balancing needs {self.label_key!r} in every record, e.g. {missing[0]}"
            )
        by_class: dict[Hashable, list[dict[str, Any]]] = {}
        for s in pool:
            by_class.setdefault(s[self.label_key], []).append(s)
        counts = synthetic_counts_for_balance(
            Counter(r[self.label_key] for r in real), {c: len(v) for c, v in by_class.items()}, self.n_synthetic
        )
        added: list[dict[str, Any]] = []
        for cls in sorted(counts, key=str):
            added += self._draw(by_class.get(cls, []), counts[cls], rng)
        if not added:
            logger.warning(
                "arm %s: no synthetic record added (pool per class %s), so it trains on the real records only",
                self.name,
                {c: len(v) for c, v in by_class.items()},
            )
        return added
