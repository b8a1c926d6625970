"""Concept search for people: a few words or a code in, the best matching concepts out.

What the cohort builder's concept picker asks ("metformin", "E11", "2型糖尿病",
"4548-4"). One Ibis expression on ``concept`` and ``concept_synonym``, so it runs on
every engine. Matching is case-insensitive substring on the concept name and on its
synonyms (Athena ships translations, e.g. Chinese names, as synonyms), a code prefix,
or the concept id itself; ``lower`` and ``contains`` work on Unicode text, so Chinese
needs no tokenizer, and the text is never a ``LIKE`` pattern (``%`` and ``_`` match
themselves).

Ordering, best first: valid concepts before retired ones; standard concepts (``S``)
before classification (``C``) before source codes; then an exact id or code, a code
prefix, a name or synonym starting with the text, a match anywhere; shorter names
first; then by id, so the order is stable.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from medlake.engine import Engine

#: Columns of every search result row.
SEARCH_COLUMNS = (
    "concept_id",
    "concept_name",
    "domain_id",
    "vocabulary_id",
    "concept_class_id",
    "standard_concept",
    "concept_code",
    "invalid_reason",
    "synonym",
)


def concept_search_query(
    engine: Engine, text: str, *, domain_ids: list[str] | None = None, limit: int = 20
) -> ir.Table:
    """The ``limit`` best concepts for ``text`` (see the module), in :data:`SEARCH_COLUMNS`.

    ``domain_ids`` keeps concepts of those OMOP domains (``"Condition"``, ``"Drug"``...).
    ``synonym`` is the matching synonym when only a synonym matched, else null.
    """
    needle = text.strip().lower()
    if not needle:
        raise ValueError("search text is empty")
    concept = engine.table("concept")
    synonym = engine.table("concept_synonym")
    named = synonym.filter(synonym.concept_synonym_name.lower().contains(needle))
    # One synonym per concept (the shortest: the closest to the text).
    by_concept = named.group_by(s_concept="concept_id").agg(
        synonym=named.concept_synonym_name.argmin(named.concept_synonym_name.length())
    )
    joined = concept.left_join(by_concept, concept.concept_id == by_concept.s_concept)
    name = joined.concept_name.lower()
    code = joined.concept_code.lower()
    exact = code == needle
    if needle.isdigit():
        exact = exact | (joined.concept_id == int(needle))
    in_name = name.contains(needle)
    wanted = [exact | code.startswith(needle) | in_name | joined.synonym.notnull()]
    if domain_ids:
        wanted.append(joined.domain_id.isin(domain_ids))
    starts = name.startswith(needle) | joined.synonym.lower().startswith(needle).fill_null(False)
    ranked = joined.filter(wanted).mutate(
        _valid=ibis.ifelse(joined.invalid_reason.isnull(), 0, 1),
        _standard=ibis.cases(
            (joined.standard_concept == "S", 0), (joined.standard_concept == "C", 1), else_=2
        ),
        _match=ibis.cases((exact, 0), (code.startswith(needle), 1), (starts, 2), else_=3),
        _length=joined.concept_name.length(),
        synonym=ibis.ifelse(in_name, ibis.null("string"), joined.synonym),
    )
    ordered = ranked.order_by(["_valid", "_standard", "_match", "_length", "concept_id"])
    return ordered.limit(limit).select(*SEARCH_COLUMNS)
