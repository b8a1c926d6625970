"""The contract between format readers and the lake writer.

A reader yields :class:`ParsedChunk` s. Each CDM table's rows arrive as an Arrow table
holding (a) the CDM columns the reader knows, by their OMOP names, and (b) the
provenance columns below, whose names start with ``_``. The reader never computes
row ids, person ids or visit ids and never looks up concepts: the writer derives them
from the provenance columns, the same way for every format, so references between
files and systems agree and re-ingesting gives the same ids.

Rules for readers:
- Leave out the table's primary-key column, ``person_id`` and ``visit_occurrence_id``;
  give ``_source_record_id``, ``_source_patient_id`` and (when the record belongs to a
  visit) ``_source_visit_id`` instead.
- A visit row's ``_source_record_id`` is the id other records give as their
  ``_source_visit_id``.
- Codes go in the ``*_source_value`` column of their :data:`CONCEPT_SLOTS` entry with
  the vocabulary id (``ICD10CM``, ``LOINC``, ``ATC``, ``ICD9Proc``, ``UCUM``...) in the
  slot's ``_..._vocabulary`` column; the writer fills the concept ids (0 when unmapped,
  counted). A reader that knows a standard concept id for sure (gender, visit type, type
  concepts) may set the concept-id column directly; the writer keeps it.
- ``_source_version`` orders versions of the same record (higher replaces lower):
  FHIR ``meta.versionId`` or ``meta.lastUpdated`` in epoch ms, HL7 MSH-7 in epoch ms, a
  CSV update-time column; else the batch's receive time in epoch ms.
- The writer fills, when left empty: a required ``*_type_concept_id`` with 32817 (EHR),
  ``visit_end_date`` with ``visit_start_date``, person race/ethnicity with 0, and
  ``gender_concept_id`` from ``sex`` (男/M/male 8507, 女/F/female 8532, else 8551).
- Optional ``_source_location`` ("file:line") names the record in quarantine entries the
  writer makes (a row still missing a required field after all that).
- ``_record_hash`` is a hex digest of the record as received (e.g. the NDJSON line, the
  HL7 segment group): same version and same hash means nothing to do.
- A record the reader cannot parse or map goes to ``quarantine`` with its location
  (``file:line`` or ``file:message N``), the reason, the field and the raw payload; one
  bad record never aborts the file. A file that is not of the format at all raises
  :class:`~medlake.errors.InputError` naming the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import pyarrow as pa

from medlake.schema import table_spec

# Provenance columns every staged CDM row carries.
SOURCE_RECORD_ID = "_source_record_id"  # str, required
SOURCE_VERSION = "_source_version"  # int64, required
RECORD_HASH = "_record_hash"  # str, required
SOURCE_PATIENT_ID = "_source_patient_id"  # str, required where the table has person_id
SOURCE_VISIT_ID = "_source_visit_id"  # str, optional
# When the visit belongs to another source system (an LIS order placed in a HIS visit).
SOURCE_VISIT_SYSTEM = "_source_visit_system"  # str, optional
# Where the record sits ("Observation.ndjson:108"), for quarantine entries the writer makes
# (a row missing a required field); without it they say "file:table/source record id".
SOURCE_LOCATION = "_source_location"  # str, optional
# Set by the writer, never by readers: which batch a row of a group of batches came from
# (see medlake.ingest.group_writer); without it every row is the one batch's.
BATCH_ID = "_batch_id"  # str, optional
# True: the source withdrew the record (FHIR ``entered-in-error``). As a newer version it
# removes the record's CDM row; its provenance (source_record) is kept, current.
RETRACTED = "_retracted"  # bool, optional

PROVENANCE_TYPES: dict[str, pa.DataType] = {
    SOURCE_RECORD_ID: pa.string(),
    SOURCE_VERSION: pa.int64(),
    RECORD_HASH: pa.string(),
    SOURCE_PATIENT_ID: pa.string(),
    SOURCE_VISIT_ID: pa.string(),
    SOURCE_VISIT_SYSTEM: pa.string(),
    SOURCE_LOCATION: pa.string(),
    RETRACTED: pa.bool_(),
}


@dataclass(frozen=True)
class ConceptSlot:
    """Where a code sits in a staged row and which concept-id columns it fills."""

    code_column: str  # the CDM *_source_value column holding the code as received
    vocabulary_column: str  # staging-only column holding the vocabulary id
    concept_column: str  # standard concept id (0 when unmapped)
    source_concept_column: str | None = None  # the code's own concept id, if the CDM has one


def _slot(prefix: str, *, source_concept: bool = True) -> ConceptSlot:
    return ConceptSlot(
        code_column=f"{prefix}_source_value",
        vocabulary_column=f"_{prefix}_vocabulary",
        concept_column=f"{prefix}_concept_id",
        source_concept_column=f"{prefix}_source_concept_id" if source_concept else None,
    )


_UNIT = _slot("unit")
CONCEPT_SLOTS: dict[str, tuple[ConceptSlot, ...]] = {
    "person": (_slot("gender"), _slot("race"), _slot("ethnicity")),
    "visit_occurrence": (
        _slot("visit"),
        _slot("admitted_from", source_concept=False),
        _slot("discharged_to", source_concept=False),
    ),
    "condition_occurrence": (_slot("condition"), _slot("condition_status", source_concept=False)),
    "drug_exposure": (_slot("drug"), _slot("route", source_concept=False)),
    "procedure_occurrence": (_slot("procedure"),),
    "device_exposure": (_slot("device"), _UNIT),
    "measurement": (
        _slot("measurement"),
        _UNIT,
        ConceptSlot("value_source_value", "_value_vocabulary", "value_as_concept_id"),
    ),
    "observation": (
        _slot("observation"),
        _slot("unit", source_concept=False),
        ConceptSlot("value_source_value", "_value_vocabulary", "value_as_concept_id"),
    ),
    "specimen": (
        ConceptSlot("specimen_source_value", "_specimen_vocabulary", "specimen_concept_id"),
        _slot("unit", source_concept=False),
        _slot("anatomic_site", source_concept=False),
    ),
    "death": (_slot("cause"),),
    # A document's type code (LOINC document ontology) is its note class.
    "note": (ConceptSlot("note_source_value", "_note_vocabulary", "note_class_concept_id"),),
}

# Tables a reader may stage rows for, with the column the writer derives as row id.
STAGEABLE_TABLES: dict[str, str] = {
    "visit_occurrence": "visit_occurrence_id",
    "condition_occurrence": "condition_occurrence_id",
    "drug_exposure": "drug_exposure_id",
    "procedure_occurrence": "procedure_occurrence_id",
    "device_exposure": "device_exposure_id",
    "measurement": "measurement_id",
    "observation": "observation_id",
    "specimen": "specimen_id",
    "note": "note_id",
    "death": "person_id",
}

# Patient identities: one row per version of a source patient record. The writer puts
# the direct identifiers in pii_person and only pseudonymous demographics in person.
PATIENT_COLUMNS: dict[str, pa.DataType] = {
    SOURCE_PATIENT_ID: pa.string(),
    SOURCE_VERSION: pa.int64(),
    RECORD_HASH: pa.string(),
    "name_hanzi": pa.string(),
    "name_pinyin": pa.string(),
    "family_name": pa.string(),
    "given_name": pa.string(),
    "name_latin": pa.string(),
    "resident_id": pa.string(),
    "birth_date": pa.date32(),
    "sex": pa.string(),  # as the source writes it (男/女, M/F, male/female)
    "gender_concept_id": pa.int64(),  # 8507 male, 8532 female, 8551 unknown
    "phone": pa.string(),
    "address": pa.string(),
    "postcode": pa.string(),
    "email": pa.string(),
    "death_date": pa.date32(),
    "mrn": pa.string(),  # medical record number, as the source issues it
}


# Omics samples a reader registers: the writer adds person_id (from source_patient),
# registered_at and batch_id, and upserts by (sample_id, assay).
OMICS_SAMPLE_COLUMNS: dict[str, pa.DataType] = {
    "sample_id": pa.string(),
    "assay": pa.string(),  # genotype, rnaseq
    "file_uri": pa.string(),  # relative to the workspace's omics/ folder
    "file_format": pa.string(),  # bed, pgen, parquet, h5ad
    "sha256": pa.string(),  # of the stored file
    "source_system": pa.string(),  # whose patient id this is (may differ from the batch's)
    "source_patient_id": pa.string(),
    "collected_date": pa.date32(),
}


def staging_schema(table: str, columns: Iterable[str]) -> pa.Schema:
    """Arrow schema for staged rows of ``table`` with the given columns, in that order.

    CDM columns take the lake's types (nullable: the writer checks required fields and
    quarantines rows missing one); provenance and ``_*_vocabulary`` columns are strings
    except ``_source_version``.
    """
    spec = table_spec(table)
    lake_types = {c.name: c.ibis_type.copy(nullable=True).to_pyarrow() for c in spec.columns}
    fields = []
    for name in columns:
        if name in lake_types:
            fields.append(pa.field(name, lake_types[name]))
        elif name in PROVENANCE_TYPES:
            fields.append(pa.field(name, PROVENANCE_TYPES[name]))
        elif name.startswith("_") and name.endswith("_vocabulary"):
            fields.append(pa.field(name, pa.string()))
        else:
            raise KeyError(f"{name!r} is neither a column of {table} nor a staging column")
    return pa.schema(fields)


class TableBuffer:
    """Rows of one staged table gathered column by column, for readers that parse in Python.

    ``append(**values)`` takes a row as keyword arguments; unknown names raise at once,
    absent ones are null. ``to_arrow()`` builds the typed table.
    """

    def __init__(self, table: str, columns: Sequence[str]) -> None:
        self.table = table
        self.schema = (
            pa.schema([pa.field(n, PATIENT_COLUMNS[n]) for n in columns])
            if table == "patient"
            else staging_schema(table, columns)
        )
        self._columns: dict[str, list[object]] = {name: [] for name in columns}
        self._rows = 0

    def append(self, **values: object) -> None:
        for name, column in self._columns.items():
            column.append(values.pop(name, None))
        if values:
            raise KeyError(f"{self.table}: unknown staging columns {sorted(values)}")
        self._rows += 1

    def __len__(self) -> int:
        return self._rows

    def to_arrow(self) -> pa.Table:
        return pa.table(
            {
                name: pa.array(values, type=self.schema.field(name).type)
                for name, values in self._columns.items()
            },
            schema=self.schema,
        )


@dataclass(frozen=True)
class QuarantineEntry:
    """A record that could not be parsed or mapped, with why and the raw payload."""

    location: str  # "Observation.ndjson:108" or "20210314.hl7:message 17"
    reason: str
    raw_payload: str
    field: str | None = None


@dataclass(frozen=True)
class PatientMerge:
    """The source says ``merged_id`` is the same patient as ``surviving_id`` (A40, Patient.link)."""

    surviving_id: str
    merged_id: str
    source_version: int


@dataclass
class ParsedChunk:
    """One piece of a parsed file, in the writer's terms."""

    tables: dict[str, list[pa.Table]] = field(default_factory=dict)  # CDM table -> staged rows
    patients: list[pa.Table] = field(default_factory=list)  # PATIENT_COLUMNS
    merges: list[PatientMerge] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    omics_samples: list[pa.Table] = field(default_factory=list)  # OMICS_SAMPLE_COLUMNS
    skipped: Counter[str] = field(default_factory=Counter)  # e.g. {"Practitioner": 12}
    records_read: int = 0

    def add_rows(self, table: str, rows: pa.Table) -> None:
        if table not in STAGEABLE_TABLES:
            raise KeyError(f"readers may not stage rows for {table!r}")
        if rows.num_rows:
            self.tables.setdefault(table, []).append(rows)

    @staticmethod
    def joined(parts: list[ParsedChunk]) -> ParsedChunk:
        """One chunk of consecutive pieces of a file, in order (as if read as one)."""
        if len(parts) == 1:
            return parts[0]
        whole = ParsedChunk()
        for part in parts:
            for table, rows in part.tables.items():
                whole.tables.setdefault(table, []).extend(rows)
            whole.patients.extend(part.patients)
            whole.merges.extend(part.merges)
            whole.quarantine.extend(part.quarantine)
            whole.omics_samples.extend(part.omics_samples)
            whole.skipped.update(part.skipped)
            whole.records_read += part.records_read
        return whole


@dataclass(frozen=True)
class SourceContext:
    """What a reader knows about the file it reads."""

    source_system: str  # short name: his, lis, emr, biobank...
    batch_id: str
    path: Path  # the landed file (read from here, never from the original)
    original_name: str  # for locations in messages and quarantine
    received_at: dt.datetime  # UTC
    # Files that travel with this one (a PLINK fileset's .bim/.fam, a sample manifest),
    # landed too, by role: {"bim": path, "fam": path, "manifest": path}.
    companions: dict[str, Path] = field(default_factory=dict)
    omics_dir: Path | None = None  # where omics readers store converted files
    options: dict[str, object] = field(default_factory=dict)  # e.g. {"mapping": Path}

    @property
    def default_version(self) -> int:
        """The receive time in epoch milliseconds, for sources without versions."""
        return int(self.received_at.replace(tzinfo=dt.UTC).timestamp() * 1000)


class Reader(Protocol):
    """A format reader. Implementations are registered in ``medlake.ingest.formats``."""

    format: ClassVar[str]  # "fhir", "hl7v2", "csv", "plink", "vcf", "counts"

    def sniff(self, path: Path, head: bytes) -> bool:
        """True when ``head`` (the first KiB) looks like this format."""
        ...

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        """Parse the landed file into chunks of bounded size (say 50,000 records)."""
        ...


def record_hash(payload: bytes | str) -> str:
    """Hex digest used as ``_record_hash`` (BLAKE2b-128: fast, and plenty against accidents)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def epoch_ms(moment: dt.datetime) -> int:
    """Epoch milliseconds of ``moment`` (naive values are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)
