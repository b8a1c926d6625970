"""Concept sets resolved to concept ids ahead of the cohort query, in three small lookups.

The compiler filters events on a resolved set as a literal ``IN`` list, which the engine
applies while scanning (DuckDB: zone maps, no join). Resolving through the general
:meth:`medlake.cohort.events.EventBuilder.codeset_query` builds one Ibis graph per item
(a union of lookups, descendant joins and mappings) whose compilation alone took longer
than the lookups; here every set of the definition is resolved with at most three
fixed-shape queries, whatever the number of items:

1. :meth:`ConceptSetResolver.lookup_query` — the concepts the items name (by id, or by
   vocabulary and code);
2. :meth:`ConceptSetResolver.descendants_query` — ``concept_ancestor`` rows below those
   of items with ``include_descendants``;
3. :meth:`ConceptSetResolver.mapped_query` — ``Maps to`` rows into those of items with
   ``include_mapped`` (source concepts mapping to the concept or its descendants);

then :meth:`ConceptSetResolver.resolve` assembles each set as its included items'
concepts minus its excluded items' (expanded the same way), exactly as
``codeset_query`` defines it. The caller runs the queries (the cohort domain holds no
engine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import ibis.expr.types as ir

from medlake.cohort.model import ConceptSet, ConceptSetItem

#: A set of (ancestor or mapped-to, related) concept id pairs.
Pairs = Iterable[tuple[int, int]]


class ConceptSetResolver:
    """Resolves a definition's concept sets; run the queries in order and feed the rows."""

    def __init__(self, concept_sets: Iterable[ConceptSet]) -> None:
        self.concept_sets = list(concept_sets)
        self._items = [item for s in self.concept_sets for item in s.items]

    # ------------------------------------------------------------------ queries

    def lookup_query(self, concept: ir.Table) -> ir.Table | None:
        """``concept_id, vocabulary_id, concept_code`` of every concept an item names."""
        ids = sorted({i.concept_id for i in self._items if i.concept_id is not None})
        codes = {(i.vocabulary_id, i.concept_code) for i in self._items if i.concept_id is None}
        found: list[ir.BooleanValue] = []
        if ids:
            found.append(concept.concept_id.isin(ids))
        if codes:
            found.append(
                concept.vocabulary_id.isin(sorted({v for v, _ in codes}))
                & concept.concept_code.isin(sorted({c for _, c in codes}))
            )
        if not found:
            return None
        wanted = found[0] if len(found) == 1 else found[0] | found[1]
        return concept.filter(wanted).select("concept_id", "vocabulary_id", "concept_code")

    def named(self, rows: Iterable[Mapping[str, object]]) -> dict[int, set[int]]:
        """Per item (by position), the concept ids it names, from :meth:`lookup_query`'s rows."""
        by_id: set[int] = set()
        by_code: dict[tuple[str, str], set[int]] = {}
        for row in rows:
            concept_id = int(row["concept_id"])  # type: ignore[call-overload]
            by_id.add(concept_id)
            key = (str(row["vocabulary_id"]), str(row["concept_code"]))
            by_code.setdefault(key, set()).add(concept_id)
        named: dict[int, set[int]] = {}
        for n, item in enumerate(self._items):
            if item.concept_id is not None:
                named[n] = {item.concept_id} & by_id
            else:
                named[n] = set(by_code.get((str(item.vocabulary_id), str(item.concept_code)), ()))
        return named

    def descendants_query(
        self, ancestor: ir.Table, named: Mapping[int, set[int]]
    ) -> ir.Table | None:
        """``ancestor_concept_id, descendant_concept_id`` below items with descendants."""
        ids = self._ids(named, lambda item: item.include_descendants)
        if not ids:
            return None
        return ancestor.filter(ancestor.ancestor_concept_id.isin(ids)).select(
            "ancestor_concept_id", "descendant_concept_id"
        )

    def with_descendants(self, named: Mapping[int, set[int]], pairs: Pairs) -> dict[int, set[int]]:
        """Each item's concepts, with their descendants where the item asks for them."""
        below: dict[int, set[int]] = {}
        for ancestor_id, descendant_id in pairs:
            below.setdefault(int(ancestor_id), set()).add(int(descendant_id))
        found: dict[int, set[int]] = {}
        for n, item in enumerate(self._items):
            ids = set(named[n])
            if item.include_descendants:
                for concept_id in named[n]:
                    ids |= below.get(concept_id, set())
            found[n] = ids
        return found

    def mapped_query(
        self, relationship: ir.Table, found: Mapping[int, set[int]]
    ) -> ir.Table | None:
        """``concept_id_2, concept_id_1``: source concepts that map to items' concepts."""
        ids = self._ids(found, lambda item: item.include_mapped)
        if not ids:
            return None
        rows = relationship.filter(
            (relationship.relationship_id == "Maps to") & relationship.concept_id_2.isin(ids)
        )
        return rows.select("concept_id_2", "concept_id_1")

    def resolve(self, found: Mapping[int, set[int]], mapped: Pairs = ()) -> dict[int, list[int]]:
        """Each concept set's concept ids (sorted): included items minus excluded ones."""
        sources: dict[int, set[int]] = {}
        for target, source in mapped:
            sources.setdefault(int(target), set()).add(int(source))
        resolved: dict[int, list[int]] = {}
        n = 0
        for concept_set in self.concept_sets:
            included: set[int] = set()
            excluded: set[int] = set()
            for item in concept_set.items:
                ids = set(found[n])
                if item.include_mapped:
                    for concept_id in found[n]:
                        ids |= sources.get(concept_id, set())
                (excluded if item.excluded else included).update(ids)
                n += 1
            resolved[concept_set.id] = sorted(included - excluded)
        return resolved

    def _ids(
        self, per_item: Mapping[int, set[int]], wanted: Callable[[ConceptSetItem], bool]
    ) -> list[int]:
        ids: set[int] = set()
        for n, item in enumerate(self._items):
            if wanted(item):
                ids |= per_item[n]
        return sorted(ids)
