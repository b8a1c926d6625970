"""FHIR NDJSON fast path: the common resources mapped in SQL (DuckDB's JSON reader).

The Python reader (:mod:`medlake.ingest.fhir`, mappers in
:mod:`medlake.ingest.fhir_resources`) parses every line with ``orjson`` and maps it in
Python: about 14 µs of one core per resource. Here a chunk of lines is handed to the
backend's local SQL (:mod:`medlake.engine.arrow_sql`; DuckDB parses JSON in native,
multi-threaded code) as one Arrow string column, and one query per resource type
extracts the staged columns of every line it can map **exactly as the Python mapper
would**. A line qualifies only when every element the mapper reads has the plain,
expected shape (strings where strings belong, ``Type/id`` references, a known code
system on the first coding, ``YYYY-MM-DD[Thh:mm:ss[zone]]`` dates, simple numbers...);
every other line — another resource type, a Bundle, a malformed or unusual record,
``entered-in-error``, anything a quarantine entry may come of — goes through the Python
path unchanged. The chunk's rows of both paths are put back in line order, so the
writer sees the same chunk either way; ``tests/ingest/test_fhir_sql.py`` checks that
the lake is identical.

What the SQL cannot see, and so sends to Python: JSON that DuckDB accepts and
``orjson`` does not (trailing commas, ``NaN``; lines holding ``\\u`` escapes), and
top-level keys given twice. A key repeated *inside* an element is read first-wins here
and last-wins by ``orjson``; such input is malformed FHIR and left at that.

Mapped here: Observation (measurements: laboratory and vital-signs categories, with
components), MedicationRequest, Encounter, Condition, Procedure, Specimen — by count
over 95 % of a hospital's bulk export. Record hashes (BLAKE2b of the line as received)
are made in Python, as the Python path makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from hashlib import blake2b

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medlake.ingest import fhir_values as v
from medlake.ingest.fhir_resources import EHR, LAB, VISIT_CLASSES
from medlake.ingest.fhir_sql_paths import Paths as _Paths
from medlake.ingest.fhir_sql_paths import sql_case as _case
from medlake.ingest.fhir_sql_paths import sql_literal as _lit
from medlake.ingest.staging import RECORD_HASH

#: ``SourceContext.options`` key under which the service hands readers a local SQL runner.
ARROW_SQL = "arrow_sql"
RunSQL = Callable[[str, Mapping[str, pa.Table]], pa.Table]
LINE = "__line"  # staged rows carry their line number and part until the chunk is built
PART = "__part"

_MAX_COMPONENTS = 3


def _query(rtype: str, paths: _Paths, ok: str, selects: list[tuple[str, str]],
           default_version: int, extra_keys: str = "") -> str:
    """The SQL of one resource type: ``selects`` are (``WHERE`` of the part, its columns)."""
    version_ok = (f"({paths.missing('$.meta')} OR ({paths.is_str('$.meta.versionId')} AND "
                  f"regexp_full_match({paths.s('$.meta.versionId')}, '[0-9]{{1,17}}')))")
    base_ok = f"{paths.nonempty('$.id')} AND {version_ok} AND {ok}"
    prefix = _lit(f'{{"resourceType":"{rtype}",')
    # JSON DuckDB reads and orjson refuses (trailing commas, NaN), escapes, very long
    # numbers, entered-in-error (its rows are flagged): the Python path's.
    sane = (
        "json_valid(line) AND NOT contains(line, 'entered-in-error') "
        "AND NOT contains(line, chr(92)) AND NOT contains(line, 'NaN') "
        r"AND NOT contains(line, 'Infinity') AND NOT regexp_matches(line, ',\s*[\]}]')"
    )
    version = (f"coalesce(CAST({paths.s('$.meta.versionId')} AS BIGINT), "
               f"CAST({default_version} AS BIGINT))")
    parts = []
    for where, columns in selects:
        parts.append(f"SELECT n AS {LINE}, {columns} FROM p WHERE ok AND {where}")
    ok = f"coalesce(len(keys) = len(list_distinct(keys)) AND {base_ok}{extra_keys}, false)"
    body, fragments, structure, typed = paths.resolve(
        f"{ok} AS ok, {version} AS version\n  FROM frags\n)\n" + " UNION ALL ".join(parts)
    )
    types = f"json_type(line, [{', '.join(_lit(p) for p in typed)}])" if typed else "[]"
    return f"""
WITH src AS (
  SELECT n, line FROM {{lines}} WHERE starts_with(line, {prefix})
), checked AS (
  SELECT n, line FROM src WHERE {sane}
), parsed AS (
  SELECT n, json_transform(line, {_lit(structure)}) AS j, {types} AS ct,
         json_keys(line) AS keys
  FROM checked
), frags AS (
  SELECT n, keys, ct, {fragments} FROM parsed
), p AS MATERIALIZED (
  SELECT *, {body}
"""


def _head(paths: _Paths, rtype: str, rid: str | None = None, visit: str | None = "$.encounter"
          ) -> str:
    rid = rid or f"{_lit(rtype + '/')} || {paths.s('$.id')}"
    cols = [f"{rid} AS _source_record_id", "version AS _source_version",
            "NULL::VARCHAR AS _record_hash",
            f"{paths.reference('$.subject', 'Patient')} AS _source_patient_id"]
    if visit is not None:
        cols.append(f"{paths.optional_reference(visit, 'Encounter')} AS _source_visit_id")
    return ", ".join(cols)


def _subject_ok(paths: _Paths, visit: str | None = "$.encounter") -> str:
    ok = paths.reference_ok("$.subject", "Patient")
    if visit is not None:
        ok += f" AND {paths.optional_reference_ok(visit, 'Encounter')}"
    return ok


def observation_sql(default_version: int) -> str:
    p = _Paths()
    categories = "('laboratory', 'vital-signs')"
    category_code = p.s("$.category[0].coding[0].code")
    category_ok = (
        f"(({p.missing('$.category')} AND {p.t('$.valueQuantity')} = 'OBJECT') OR "
        f"({p.t('$.category')} = 'ARRAY' AND {p.missing('$.category[1]')} AND "
        f"{p.t('$.category[0].coding')} = 'ARRAY' AND {p.missing('$.category[0].coding[1]')} "
        f"AND {p.is_str('$.category[0].coding[0].code')} AND {category_code} IN {categories}))"
    )
    kind = f"(CASE WHEN {category_code} = 'laboratory' THEN {LAB} ELSE {EHR} END)"
    value_keys = "list_filter(keys, lambda k: starts_with(k, 'value'))"
    values_ok = (
        f"(len({value_keys}) = 0 OR (len({value_keys}) = 1 AND ("
        f"{p.quantity_ok('$.valueQuantity')} OR "
        f"({p.code_ok('$.valueCodeableConcept', v.CODE_SYSTEMS)} AND "
        f"{p.t('$.valueCodeableConcept.coding')} = 'ARRAY') OR "
        f"{p.is_str('$.valueString')})))"
    )
    components_ok = (f"({p.missing('$.component')} OR ({p.t('$.component')} = 'ARRAY' AND "
                     f"{p.missing(f'$.component[{_MAX_COMPONENTS}]')}))")
    for i in range(_MAX_COMPONENTS):
        c = f"$.component[{i}]"
        components_ok += (f" AND ({p.missing(c)} OR ({p.code_ok(c + '.code', v.CODE_SYSTEMS)} "
                          f"AND {p.quantity_ok(c + '.valueQuantity')} AND "
                          f"{p.range_kind(c + '.referenceRange')} IS NOT NULL))")
    ok = (f"{_subject_ok(p)} AND {p.code_ok('$.code', v.CODE_SYSTEMS)} AND "
          f"{p.date_ok('$.effectiveDateTime')} AND {category_ok} AND {values_ok} AND "
          f"{components_ok} AND {p.range_kind('$.referenceRange')} IS NOT NULL")
    when = (f"{p.date('$.effectiveDateTime')} AS measurement_date, "
            f"{p.datetime('$.effectiveDateTime')} AS measurement_datetime, "
            f"{kind} AS measurement_type_concept_id")
    amount, unit, unit_voc, operator = p.quantity("$.valueQuantity")
    has_q = f"({p.t('$.valueQuantity')} IS NOT NULL)"
    has_cc = f"({p.t('$.valueCodeableConcept')} IS NOT NULL)"
    low, high = p.range_values("$.referenceRange", p.range_kind("$.referenceRange"))
    top = (
        f"-1 AS {PART}, {_head(p, 'Observation')}, {when}, "
        f"CASE WHEN {has_q} THEN {operator} END AS operator_concept_id, "
        f"CASE WHEN {has_q} THEN {amount} END AS value_as_number, "
        f"{low} AS range_low, {high} AS range_high, "
        f"{p.code('$.code')} AS measurement_source_value, "
        f"{p.vocabulary('$.code', v.CODE_SYSTEMS)} AS _measurement_vocabulary, "
        f"CASE WHEN {has_q} THEN {unit} END AS unit_source_value, "
        f"CASE WHEN {has_q} THEN {unit_voc} END AS _unit_vocabulary, "
        f"CASE WHEN {has_q} THEN NULL WHEN {has_cc} THEN {p.code('$.valueCodeableConcept')} "
        f"ELSE nullif({p.s('$.valueString')}, '') END AS value_source_value, "
        f"CASE WHEN NOT {has_q} AND {has_cc} "
        f"THEN {p.vocabulary('$.valueCodeableConcept', v.CODE_SYSTEMS)} END AS _value_vocabulary"
    )
    selects = [(f"({p.t('$.component[0]')} IS NULL OR len({value_keys}) > 0)", top)]
    for i in range(_MAX_COMPONENTS):
        c = f"$.component[{i}]"
        amount, unit, unit_voc, operator = p.quantity(c + ".valueQuantity")
        low, high = p.range_values(c + ".referenceRange", p.range_kind(c + ".referenceRange"))
        rid = f"{_lit('Observation/')} || {p.s('$.id')} || {_lit(f'#component[{i}]')}"
        selects.append((
            f"{p.t(c)} IS NOT NULL",
            f"{i} AS {PART}, {_head(p, 'Observation', rid)}, {when}, "
            f"{operator} AS operator_concept_id, {amount} AS value_as_number, "
            f"{low} AS range_low, {high} AS range_high, "
            f"{p.code(c + '.code')} AS measurement_source_value, "
            f"{p.vocabulary(c + '.code', v.CODE_SYSTEMS)} AS _measurement_vocabulary, "
            f"{unit} AS unit_source_value, {unit_voc} AS _unit_vocabulary, "
            f"NULL::VARCHAR AS value_source_value, NULL::VARCHAR AS _value_vocabulary",
        ))
    return _query("Observation", p, ok, selects, default_version)


def _days_ok(p: _Paths, path: str) -> str:
    units = ("d", "day", "days", "wk", "week", "mo", "month", "a")
    unit = f"coalesce(nullif({p.s(path + '.code')}, ''), nullif({p.s(path + '.unit')}, ''), 'd')"
    return (f"({p.missing(path)} OR ({p.quantity_ok(path)} AND "
            f"({p.missing(path + '.value')} OR (regexp_full_match({p.s(path + '.value')}, "
            f"'[0-9]{{1,5}}') AND {unit} IN ({', '.join(_lit(u) for u in units)}) AND "
            f"CAST({p.s(path + '.value')} AS BIGINT) * {_case(unit, v.DAYS_PER_UNIT)}::BIGINT "
            f"< 100000))))")


def _days(p: _Paths, path: str) -> str:
    unit = f"coalesce(nullif({p.s(path + '.code')}, ''), nullif({p.s(path + '.unit')}, ''), 'd')"
    return f"CAST({p.s(path + '.value')} AS BIGINT) * {_case(unit, v.DAYS_PER_UNIT)}::BIGINT"


def medication_request_sql(default_version: int) -> str:
    p = _Paths()
    med = "$.medicationCodeableConcept"
    dose = "$.dosageInstruction[0]"
    dispense = "$.dispenseRequest"
    supply = f"{dispense}.expectedSupplyDuration"
    dosage_ok = (
        f"({p.missing('$.dosageInstruction')} OR ({p.t('$.dosageInstruction')} = 'ARRAY' AND "
        f"({p.missing(dose)} OR ({p.t(dose)} = 'OBJECT' AND {p.str_or_missing(dose + '.text')} "
        f"AND {p.optional_code_ok(dose + '.route')} AND "
        f"({p.missing(dose + '.doseAndRate')} OR ({p.t(dose + '.doseAndRate')} = 'ARRAY' AND "
        f"{p.t(dose + '.doseAndRate[0]')} = 'OBJECT' AND "
        f"({p.missing(dose + '.doseAndRate[0].doseQuantity')} OR "
        f"{p.quantity_ok(dose + '.doseAndRate[0].doseQuantity')})))))))"
    )
    dispense_ok = (
        f"({p.missing(dispense)} OR ({p.t(dispense)} = 'OBJECT' AND {_days_ok(p, supply)} AND "
        f"({p.missing(dispense + '.numberOfRepeatsAllowed')} OR "
        f"({p.t(dispense + '.numberOfRepeatsAllowed')} = 'UBIGINT' AND "
        f"regexp_full_match({p.s(dispense + '.numberOfRepeatsAllowed')}, '[0-9]{{1,9}}'))) AND "
        f"({p.missing(dispense + '.quantity')} OR ({p.t(dispense + '.quantity')} = 'OBJECT' AND "
        f"{p.number_or_missing(dispense + '.quantity.value')}))))"
    )
    ok = (f"{_subject_ok(p)} AND {p.code_ok(med, v.CODE_SYSTEMS)} AND "
          f"{p.date_ok('$.authoredOn')} AND {dosage_ok} AND {dispense_ok}")
    days = f"(CASE WHEN {p.t(supply + '.value')} IS NOT NULL THEN {_days(p, supply)} END)"
    route, route_voc = p.optional_code(dose + ".route")
    _, unit, _, _ = p.quantity(dose + ".doseAndRate[0].doseQuantity")
    start = p.date("$.authoredOn")
    columns = (
        f"-1 AS {PART}, {_head(p, 'MedicationRequest')}, {start} AS drug_exposure_start_date, "
        f"{p.datetime('$.authoredOn')} AS drug_exposure_start_datetime, "
        f"(CASE WHEN coalesce({days}, 0) > 0 THEN {start} + CAST({days} - 1 AS INTEGER) "
        f"ELSE {start} END) AS drug_exposure_end_date, "
        f"NULL::TIMESTAMP AS drug_exposure_end_datetime, {EHR} AS drug_type_concept_id, "
        f"CAST({p.s(dispense + '.numberOfRepeatsAllowed')} AS BIGINT) AS refills, "
        f"CAST({p.s(dispense + '.quantity.value')} AS DOUBLE) AS quantity, "
        f"{days} AS days_supply, nullif({p.s(dose + '.text')}, '') AS sig, "
        f"NULL::VARCHAR AS lot_number, {p.code(med)} AS drug_source_value, "
        f"{p.vocabulary(med, v.CODE_SYSTEMS)} AS _drug_vocabulary, "
        f"{route} AS route_source_value, {route_voc} AS _route_vocabulary, "
        f"{unit} AS dose_unit_source_value"
    )
    return _query("MedicationRequest", p, ok, [("true", columns)], default_version)


def encounter_sql(default_version: int) -> str:
    p = _Paths()
    end_ok = f"({p.missing('$.period.end')} OR {p.date_ok('$.period.end')})"
    klass_ok = f"({p.missing('$.class')} OR {p.t('$.class')} = 'OBJECT')"
    ok = (f"{_subject_ok(p, None)} AND {p.t('$.period')} = 'OBJECT' AND "
          f"{p.date_ok('$.period.start')} AND {end_ok} AND {klass_ok}")
    code = (f"(CASE WHEN {p.t('$.class.code')} = 'VARCHAR' "
            f"THEN nullif({p.s('$.class.code')}, '') END)")
    has_end = f"({p.t('$.period.end')} IS NOT NULL)"
    columns = (
        f"-1 AS {PART}, {_head(p, 'Encounter', p.s('$.id'), None)}, "
        f"coalesce(CAST({_case(code, VISIT_CLASSES)} AS BIGINT), 0) AS visit_concept_id, "
        f"{p.date('$.period.start')} AS visit_start_date, "
        f"{p.datetime('$.period.start')} AS visit_start_datetime, "
        f"CASE WHEN {has_end} THEN {p.date('$.period.end')} ELSE {p.date('$.period.start')} "
        f"END AS visit_end_date, "
        f"CASE WHEN {has_end} THEN {p.datetime('$.period.end')} END AS visit_end_datetime, "
        f"{EHR} AS visit_type_concept_id, {code} AS visit_source_value"
    )
    return _query("Encounter", p, ok, [("true", columns)], default_version)


def _event_sql(rtype: str, table_prefix: str, start: str, end: str, period: str,
               systems: Mapping[str, str], default_version: int,
               fallback: str | None = None) -> str:
    """Condition and Procedure: a code, a start date (first present), an optional end."""
    p = _Paths()
    start_ok = p.date_ok(start)
    if fallback is not None:  # Condition: onset, else (no onset at all) recordedDate
        start_ok = (f"({start_ok} OR ({p.missing(start)} AND {p.missing(period)} AND "
                    f"{p.date_ok(fallback)}))")
    else:
        start_ok = f"({start_ok} AND {p.missing(period)})"
    end_ok = f"({p.missing(end)} OR {p.date_ok(end)})"
    ok = f"{_subject_ok(p)} AND {p.code_ok('$.code', systems)} AND {start_ok} AND {end_ok}"
    date = (p.date(start) if fallback is None
            else f"CASE WHEN {p.t(start)} IS NOT NULL THEN {p.date(start)} "
                 f"ELSE {p.date(fallback)} END")
    stamp = (p.datetime(start) if fallback is None
             else f"CASE WHEN {p.t(start)} IS NOT NULL THEN {p.datetime(start)} "
                  f"ELSE {p.datetime(fallback)} END")
    has_end = f"({p.t(end)} IS NOT NULL)"
    names = {"condition": ("condition_start_date", "condition_start_datetime",
                           "condition_end_date", "condition_end_datetime"),
             "procedure": ("procedure_date", "procedure_datetime", "procedure_end_date",
                           "procedure_end_datetime")}[table_prefix]
    columns = (
        f"-1 AS {PART}, {_head(p, rtype)}, {date} AS {names[0]}, {stamp} AS {names[1]}, "
        f"CASE WHEN {has_end} THEN {p.date(end)} END AS {names[2]}, "
        f"CASE WHEN {has_end} THEN {p.datetime(end)} END AS {names[3]}, "
        f"{EHR} AS {table_prefix}_type_concept_id, {p.code('$.code')} AS "
        f"{table_prefix}_source_value, {p.vocabulary('$.code', systems)} AS "
        f"_{table_prefix}_vocabulary"
    )
    return _query(rtype, p, ok, [("true", columns)], default_version)


def condition_sql(default_version: int) -> str:
    return _event_sql("Condition", "condition", "$.onsetDateTime", "$.abatementDateTime",
                      "$.onsetPeriod", v.CODE_SYSTEMS, default_version, "$.recordedDate")


def procedure_sql(default_version: int) -> str:
    return _event_sql("Procedure", "procedure", "$.performedDateTime",
                      "$.performedPeriod.end", "$.performedPeriod", v.PROCEDURE_VOCABULARIES,
                      default_version)


def specimen_sql(default_version: int) -> str:
    p = _Paths()
    collection = "$.collection"
    taken_ok = (f"({p.date_ok(collection + '.collectedDateTime')} OR "
                f"({p.missing(collection + '.collectedDateTime')} AND "
                f"{p.date_ok('$.receivedTime')}))")
    ok = (
        f"{_subject_ok(p, None)} AND {p.code_ok('$.type', v.CODE_SYSTEMS)} AND "
        f"({p.missing(collection)} OR ({p.t(collection)} = 'OBJECT' AND "
        f"{p.missing(collection + '.quantity')} AND {p.missing(collection + '.bodySite')})) AND "
        f"{taken_ok} AND ({p.missing('$.accessionIdentifier')} OR "
        f"({p.t('$.accessionIdentifier')} = 'OBJECT' AND "
        f"{p.str_or_missing('$.accessionIdentifier.value')}))"
    )
    code = p.code("$.type")
    vocabulary = _case(p.vocabulary("$.type", v.CODE_SYSTEMS), v.CODE_SYSTEMS)
    local = f"{vocabulary} = 'HL7 0487' AND {code} IN ({', '.join(map(_lit, v.SPECIMEN_TYPES))})"
    collected = collection + ".collectedDateTime"
    has = f"({p.t(collected)} IS NOT NULL)"
    columns = (
        f"-1 AS {PART}, {_head(p, 'Specimen', visit=None)}, "
        f"{EHR} AS specimen_type_concept_id, "
        f"CASE WHEN {has} THEN {p.date(collected)} ELSE {p.date('$.receivedTime')} END "
        f"AS specimen_date, CASE WHEN {has} THEN {p.datetime(collected)} "
        f"ELSE {p.datetime('$.receivedTime')} END AS specimen_datetime, "
        f"NULL::DOUBLE AS quantity, nullif({p.s('$.accessionIdentifier.value')}, '') "
        f"AS specimen_source_id, "
        f"CASE WHEN {local} THEN {_case(code, v.SPECIMEN_TYPES)} ELSE {code} END "
        f"AS specimen_source_value, CASE WHEN {local} THEN 'medlake' ELSE {vocabulary} END "
        f"AS _specimen_vocabulary, NULL::VARCHAR AS unit_source_value, "
        f"NULL::VARCHAR AS _unit_vocabulary, NULL::VARCHAR AS anatomic_site_source_value, "
        f"NULL::VARCHAR AS _anatomic_site_vocabulary"
    )
    return _query("Specimen", p, ok, [("true", columns)], default_version)


#: resource type -> (staged table, SQL builder taking the default version).
QUERIES: dict[str, tuple[str, Callable[[int], str]]] = {
    "Observation": ("measurement", observation_sql),
    "MedicationRequest": ("drug_exposure", medication_request_sql),
    "Encounter": ("visit_occurrence", encounter_sql),
    "Condition": ("condition_occurrence", condition_sql),
    "Procedure": ("procedure_occurrence", procedure_sql),
    "Specimen": ("specimen", specimen_sql),
}
PREFIXES: dict[str, bytes] = {rtype: f'{{"resourceType":"{rtype}",'.encode() for rtype in QUERIES}


class SqlMapper:
    """Maps the lines of one chunk in SQL; says which lines it did not take."""

    def __init__(self, run: RunSQL, default_version: int) -> None:
        self.run = run
        self._sql: dict[str, str] = {}
        self.default_version = default_version

    def map(self, lines: pa.Array, numbers: np.ndarray, data: memoryview | bytes,
            starts: np.ndarray, ends: np.ndarray) -> tuple[dict[str, pa.Table], np.ndarray]:
        """Rows per staged table (with LINE and PART) and the mask of lines taken.

        ``lines``: the chunk's lines as strings (newline included); ``data[starts[i]:
        ends[i]]`` their bytes, for the record hash; ``numbers`` their line numbers.
        """
        table = pa.table({"n": pa.array(np.arange(len(lines), dtype=np.int64)), "line": lines})
        taken = np.zeros(len(lines), dtype=bool)
        out: dict[str, pa.Table] = {}
        raw = bytes(data) if not isinstance(data, bytes) else data
        for rtype, (staged, build) in QUERIES.items():
            if PREFIXES[rtype] not in raw:
                continue
            sql = self._sql.get(rtype)
            if sql is None:
                sql = self._sql[rtype] = build(self.default_version)
            rows = self.run(sql, {"lines": table})
            if rows.num_rows == 0:
                continue
            index = rows.column(LINE).to_numpy()
            taken[index] = True
            hashes = [blake2b(raw[starts[i]:ends[i]], digest_size=16).hexdigest()
                      for i in index.tolist()]
            rows = rows.set_column(rows.column_names.index(RECORD_HASH), RECORD_HASH,
                                   pa.array(hashes, pa.string()))
            rows = rows.set_column(0, LINE, pa.array(numbers[index]))
            out[staged] = _vocabularies(staged, rows)
        return out, taken


_LOOKUPS = {
    systems_id: (pa.array(list(systems)), pa.array(list(systems.values())))
    for systems_id, systems in ((0, v.CODE_SYSTEMS), (1, v.PROCEDURE_VOCABULARIES))
}


def _vocabularies(table: str, rows: pa.Table) -> pa.Table:
    """Code system URIs -> vocabulary ids in the ``_*_vocabulary`` columns (not Specimen's,
    mapped in its SQL); an unknown system is NULL, as in the Python path."""
    if table == "specimen":
        return rows
    for i, name in enumerate(rows.column_names):
        if name.startswith("_") and name.endswith("_vocabulary"):
            uris, vocabularies = _LOOKUPS[int(name == "_procedure_vocabulary")]
            found = pc.index_in(rows.column(i), value_set=uris)
            rows = rows.set_column(i, name, vocabularies.take(found))
    return rows


def in_line_order(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Rows of both paths, sorted by line and part, in ``schema`` (LINE, PART dropped)."""
    rows = pa.concat_tables(tables, promote_options="permissive")
    rows = rows.take(pc.sort_indices(rows, sort_keys=[(LINE, "ascending"), (PART, "ascending")]))
    names = [f.name for f in schema] + [n for n in rows.column_names
                                        if n not in schema.names and n not in (LINE, PART)]
    rows = rows.select(names)
    fields = list(schema) + [rows.schema.field(n) for n in names[len(schema):]]
    return rows.cast(pa.schema(fields))
