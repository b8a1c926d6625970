"""Pairwise precision and recall of a clustering against known truth.

Every pair of records in one predicted person is a predicted link; every pair in one
true person is a true link. Counted from the contingency table (cluster sizes), never by
listing pairs, so a million records take a second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairwiseScore:
    records: int
    predicted_pairs: int
    true_pairs: int
    true_positive_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise_score(predicted: Sequence[object], truth: Sequence[object]) -> PairwiseScore:
    """Score ``predicted`` cluster labels against ``truth`` labels (same record order)."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth labels differ in length")
    both = Counter(zip(predicted, truth, strict=True))
    return PairwiseScore(
        records=len(predicted),
        predicted_pairs=sum(_pairs(n) for n in Counter(predicted).values()),
        true_pairs=sum(_pairs(n) for n in Counter(truth).values()),
        true_positive_pairs=sum(_pairs(n) for n in both.values()),
    )
