"""Vocabulary queries as Ibis expressions: descendants, ancestors, concepts by code.

Cohort definitions, mapping and quality checks all ask the same few questions of the
vocabulary tables ("every concept under E11", "the concept of LOINC 4548-4"). They are
built here once, as Ibis expressions on :meth:`medlake.engine.Engine.table`, so they run
unchanged on every engine; callers execute them (``engine.execute(expr)``) or compose
them further. Hierarchy comes from ``concept_ancestor``, which holds every
ancestor/descendant pair and, as Athena does, a level-0 row pairing each standard or
classification concept with itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import ibis.expr.types as ir

from medlake.engine import Engine


def descendants_query(
    engine: Engine, concept_ids: Iterable[int], *, include_self: bool = True
) -> ir.Table:
    """The ``concept`` rows of every descendant of ``concept_ids`` (each once).

    With ``include_self`` the given concepts are part of the answer when they have
    their level-0 ``concept_ancestor`` row (standard and classification concepts do).
    """
    ancestor = engine.table("concept_ancestor")
    pairs = ancestor.filter(ancestor.ancestor_concept_id.isin(_ids(concept_ids)))
    if not include_self:
        pairs = pairs.filter(pairs.min_levels_of_separation > 0)
    concept = engine.table("concept")
    return concept.semi_join(pairs, concept.concept_id == pairs.descendant_concept_id)


def ancestors_query(
    engine: Engine, concept_ids: Iterable[int], *, include_self: bool = False
) -> ir.Table:
    """The ``concept`` rows of every ancestor of ``concept_ids`` (each once)."""
    ancestor = engine.table("concept_ancestor")
    pairs = ancestor.filter(ancestor.descendant_concept_id.isin(_ids(concept_ids)))
    if not include_self:
        pairs = pairs.filter(pairs.min_levels_of_separation > 0)
    concept = engine.table("concept")
    return concept.semi_join(pairs, concept.concept_id == pairs.ancestor_concept_id)


def concept_lookup_query(engine: Engine, vocabulary_id: str, codes: Iterable[str]) -> ir.Table:
    """The ``concept`` rows of ``codes`` in ``vocabulary_id`` (e.g. ``"ICD10CM"``, ``["E11.9"]``).

    Codes not in the vocabulary are simply absent from the result.
    """
    concept = engine.table("concept")
    return concept.filter(
        (concept.vocabulary_id == vocabulary_id) & concept.concept_code.isin(list(codes))
    )


def _ids(concept_ids: Iterable[int]) -> list[int]:
    ids = [int(concept_id) for concept_id in concept_ids]
    if not ids:
        raise ValueError("at least one concept_id is needed")
    return ids
