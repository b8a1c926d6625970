"""Recall and precision of PHI detection against labelled spans, per entity type.

A labelled span counts as found when every one of its characters is inside some
detected span, whatever type the detector gave it: what matters for de-identification
is that the text is gone (a phone taken for an ID number is still removed). A detected
span counts as correct when it overlaps a labelled span; else it is a false positive
(text removed that a researcher could have read). Recall is by labelled type, precision
by detected type — the usual way de-identification challenges (i2b2 2014) score
"token-level, any PHI" results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from medlake.privacy.phi_text import ENTITY_TYPES, PhiSpan


@dataclass(frozen=True)
class LabelledSpan:
    """A piece of PHI a person (or the synthetic generator) marked in a document."""

    document_id: str
    entity: str
    start: int
    end: int


@dataclass
class EntityScore:
    """Counts for one entity type; ``recall`` and ``precision`` are 1.0 when nothing to count."""

    entity: str
    labelled: int = 0
    found: int = 0
    detected: int = 0
    correct: int = 0

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.detected if self.detected else 1.0


def score_phi(
    labelled: Iterable[LabelledSpan], detected: Mapping[str, Sequence[PhiSpan]]
) -> dict[str, EntityScore]:
    """Scores per entity type (every type of :data:`ENTITY_TYPES`, plus any other seen).

    ``detected`` maps each scored document's id to the spans found in it; labelled spans
    of documents missing from it count as not found.
    """
    scores = {entity: EntityScore(entity) for entity in ENTITY_TYPES}
    by_document: dict[str, list[LabelledSpan]] = {}
    for span in labelled:
        by_document.setdefault(span.document_id, []).append(span)
    for document_id in set(by_document) | set(detected):
        truth = by_document.get(document_id, [])
        found = detected.get(document_id, ())
        covered = {i for span in found for i in range(span.start, span.end)}
        true_chars = {i for span in truth for i in range(span.start, span.end)}
        for span in truth:
            score = scores.setdefault(span.entity, EntityScore(span.entity))
            score.labelled += 1
            score.found += all(i in covered for i in range(span.start, span.end))
        for span in found:
            score = scores.setdefault(span.entity, EntityScore(span.entity))
            score.detected += 1
            score.correct += any(i in true_chars for i in range(span.start, span.end))
    return scores
