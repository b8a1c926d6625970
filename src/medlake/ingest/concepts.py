"""Concept mapping: source codes to OMOP concept ids, vectorised, with a per-run cache.

For each :data:`~medlake.ingest.staging.CONCEPT_SLOTS` slot of a staged table that has a
code and a vocabulary id, the code's own concept is the concept with that
(vocabulary_id, concept_code) — the ``*_source_concept_id`` — and the standard concept
(``*_concept_id``) is its ``Maps to`` target, else the concept itself when it is standard
(``standard_concept = 'S'``), else 0, OMOP's "no matching concept". A concept id the
reader already set is kept. Rows whose code could not be mapped are counted per
(table, vocabulary) for the ingest summary. The table's own code (the first slot) is
mapped even without a vocabulary (to 0, counted under "(none)"); the other slots (unit,
route, value, status) only when the reader names a vocabulary, so a numeric result in
``value_source_value`` does not pass for an unmapped code.

Lookups are one engine query per table (all its slots together) for the distinct
(vocabulary, code) pairs not seen before in this run; the answers are spread over the
rows with Arrow's ``index_in``/``take`` from the cache kept as Arrow arrays.
"""

from __future__ import annotations

from collections import Counter

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.ingest.lake_tables import lake_table
from medlake.ingest.staging import BATCH_ID, CONCEPT_SLOTS, ConceptSlot

_SEPARATOR = "\x1f"
NO_VOCABULARY = "(none)"  # how codes without a vocabulary id are counted


class ConceptMapper:
    """Fills concept-id columns of staged tables from the lake's vocabulary."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # "vocabulary\x1fcode" -> (source concept id, standard concept id)
        self._cache: dict[str, tuple[int, int]] = {}
        # The cache as Arrow arrays (keys, source ids, standard ids) for index_in/take,
        # rebuilt only when the cache grew, not for every slot and chunk.
        self._arrays: tuple[pa.Array, pa.Array, pa.Array] | None = None
        self.unmapped: Counter[tuple[str, str]] = Counter()
        # Set by the group writer: unmapped counts also per BATCH_ID of the rows.
        self.unmapped_by_batch: dict[str, Counter[tuple[str, str]]] | None = None

    def map_table(self, table: str, rows: pa.Table) -> pa.Table:
        """``rows`` with the concept columns of every slot filled (0 where unmapped)."""
        slots = [s for s in CONCEPT_SLOTS.get(table, ()) if s.code_column in rows.column_names]
        # The codes of every slot looked up together: one query per table, not per slot.
        if slots:
            keys = pa.chunked_array([pc.cast(_keys(rows, slot), pa.string()) for slot in slots])
            self._look_up(pc.unique(keys).drop_null().to_pylist())
        for index, slot in enumerate(CONCEPT_SLOTS.get(table, ())):
            if slot.code_column in rows.column_names:
                rows = self._map_slot(table, slot, rows, primary=index == 0)
        return rows

    def _map_slot(
        self, table: str, slot: ConceptSlot, rows: pa.Table, *, primary: bool
    ) -> pa.Table:
        codes = rows.column(slot.code_column).combine_chunks()
        vocabularies = _vocabularies(rows, slot, len(codes))
        keys = _keys(rows, slot)  # null if the code or the vocabulary is
        value_set, known_source, known_standard = self._cache_arrays()
        positions = pc.index_in(keys, value_set=value_set)
        source_ids = pc.take(known_source, positions)
        standard_ids = pc.take(known_standard, positions)
        # The table's own code (condition, drug, measurement...) maps to 0 when it has no
        # vocabulary or the vocabulary lacks it. Secondary slots (unit, route, value,
        # status) are codes only when the reader names their vocabulary: a numeric result
        # in value_source_value or a route as written stays without a concept.
        has_code = pc.is_valid(codes) if primary else pc.is_valid(keys)
        source_ids = pc.if_else(has_code, pc.fill_null(source_ids, 0), pa.scalar(None, pa.int64()))
        standard_ids = pc.if_else(
            has_code, pc.fill_null(standard_ids, 0), pa.scalar(None, pa.int64())
        )

        preset = _column_or_nulls(rows, slot.concept_column)
        filled = pc.coalesce(preset, standard_ids)
        unmapped = pc.and_(pc.is_null(preset), pc.equal(pc.fill_null(standard_ids, -1), 0))
        self._count_unmapped(table, vocabularies, unmapped)
        if self.unmapped_by_batch is not None and BATCH_ID in rows.column_names:
            batches = rows.column(BATCH_ID).combine_chunks()
            for batch in pc.unique(pc.filter(batches, unmapped)).to_pylist():
                mine = pc.and_(unmapped, pc.equal(batches, batch))
                saved, self.unmapped = (
                    self.unmapped,
                    self.unmapped_by_batch.setdefault(batch, Counter()),
                )
                self._count_unmapped(table, vocabularies, mine)
                self.unmapped = saved
        rows = _set_column(rows, slot.concept_column, filled)
        if slot.source_concept_column is not None:
            preset_source = _column_or_nulls(rows, slot.source_concept_column)
            rows = _set_column(
                rows, slot.source_concept_column, pc.coalesce(preset_source, source_ids)
            )
        return rows

    def _count_unmapped(self, table: str, vocabularies: pa.Array, unmapped: pa.Array) -> None:
        if not pc.any(unmapped).as_py():
            return
        names = pc.fill_null(pc.filter(vocabularies, unmapped), NO_VOCABULARY)
        counts = pc.value_counts(names)
        for entry in counts.to_pylist():
            self.unmapped[(table, entry["values"])] += entry["counts"]

    def _cache_arrays(self) -> tuple[pa.Array, pa.Array, pa.Array]:
        if self._arrays is None:
            known = list(self._cache)
            self._arrays = (
                pa.array(known, pa.string()),
                pa.array([self._cache[k][0] for k in known], pa.int64()),
                pa.array([self._cache[k][1] for k in known], pa.int64()),
            )
        return self._arrays

    def _look_up(self, keys: list[str]) -> None:
        """Fill the cache for the (vocabulary, code) keys not in it."""
        missing = [key for key in keys if key not in self._cache]
        if not missing:
            return
        self._arrays = None
        pairs = [key.split(_SEPARATOR, 1) for key in missing]
        wanted = ibis.memtable(
            pa.table(
                {
                    "vocabulary_id": pa.array([p[0] for p in pairs], pa.string()),
                    "concept_code": pa.array([p[1] for p in pairs], pa.string()),
                }
            )
        )
        concept = lake_table(self._engine, "concept")
        relationship = lake_table(self._engine, "concept_relationship")
        found = concept.join(
            wanted,
            [
                concept.vocabulary_id == wanted.vocabulary_id,
                concept.concept_code == wanted.concept_code,
            ],
        ).select(
            concept.vocabulary_id,
            concept.concept_code,
            concept.concept_id,
            concept.standard_concept,
        )
        maps_to = relationship.filter(
            (relationship.relationship_id == "Maps to") & relationship.invalid_reason.isnull()
        ).select(
            source_concept_id=relationship.concept_id_1, target_concept_id=relationship.concept_id_2
        )
        # One target per code (a code that maps to several takes the smallest id, stably).
        targets = maps_to.group_by("source_concept_id").aggregate(
            target_concept_id=maps_to.target_concept_id.min()
        )
        query = found.left_join(targets, found.concept_id == targets.source_concept_id).select(
            "vocabulary_id", "concept_code", "concept_id", "standard_concept", "target_concept_id"
        )
        result = self._engine.execute(query).to_pylist()
        answered: dict[str, tuple[int, int]] = {}
        for row in result:
            key = f"{row['vocabulary_id']}{_SEPARATOR}{row['concept_code']}"
            standard = row["target_concept_id"]
            if standard is None:
                standard = row["concept_id"] if row["standard_concept"] == "S" else 0
            # Two concepts with one code in one vocabulary: keep the smallest, stably.
            previous = answered.get(key)
            if previous is None or row["concept_id"] < previous[0]:
                answered[key] = (int(row["concept_id"]), int(standard))
        for key in missing:
            self._cache[key] = answered.get(key, (0, 0))


def _vocabularies(rows: pa.Table, slot: ConceptSlot, length: int) -> pa.Array:
    if slot.vocabulary_column in rows.column_names:
        return rows.column(slot.vocabulary_column).combine_chunks()
    return pa.nulls(length, pa.string())


def _keys(rows: pa.Table, slot: ConceptSlot) -> pa.Array:
    """``vocabulary\x1fcode`` of a slot's rows; null where either is."""
    codes = rows.column(slot.code_column).combine_chunks()
    vocabularies = _vocabularies(rows, slot, len(codes))
    return pc.binary_join_element_wise(vocabularies, codes, _SEPARATOR)


def _column_or_nulls(rows: pa.Table, name: str) -> pa.Array:
    if name in rows.column_names:
        return pc.cast(rows.column(name).combine_chunks(), pa.int64())
    return pa.nulls(rows.num_rows, pa.int64())


def _set_column(rows: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in rows.column_names:
        return rows.set_column(rows.column_names.index(name), name, values)
    return rows.append_column(name, values)
