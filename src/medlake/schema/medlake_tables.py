"""medlake's own tables: ingest bookkeeping, provenance, identities, omics, audit.

The OMOP tables say what happened to a person; these say where each row came from and
who did what with it, so the lake can keep the promises of the design:

- **Landing and ingest** (``ingest_batch``): every landed file is one batch, known by
  its SHA-256; re-ingesting it finds the same batch again.
- **Provenance** (``source_record``): one row per version of every source record loaded
  into a CDM table. Its natural key (cdm table, source system, source record id,
  source version) makes re-ingesting a batch a no-op, and ``source_version`` orders
  versions so a newer one replaces the older (``is_current``), keeping the CDM row id.
- **Quarantine** (``quarantine``): what could not be parsed or mapped, with the reason
  and the raw payload; nothing is dropped silently.
- **Identities** (``source_patient``, restricted ``pii_person``): each patient as a
  source system knows it, linked to a ``person_id`` by the EMPI. Direct identifiers
  live only in ``pii_person`` (group ``restricted``); CDM tables hold pseudonymous ids.
- **Omics** (``omics_sample``): genotype and expression files stay in their own
  formats; this registry links each sample to its file and its person.
- **Audit** (``audit_event``): a hash chain, each event carrying the previous event's
  hash, so an altered or removed event breaks the chain.
- **Schema** (``schema_version``): which migrations the lake has had.

Conventions: source systems are short names (``his``, ``lis``, ``emr``) in
``varchar(50)``; source ids are strings as the source writes them; ``batch_id`` is an
opaque string chosen by ingest (a ULID, say), so parallel or mirrored ingesters never
share a counter; times are UTC ``datetime``; hashes are lower-case SHA-256 hex.
``source_patient_id`` and ``raw_payload`` are identifiers as the hospital holds them:
the access layer should show ``source_patient``, ``quarantine`` and ``omics_sample`` only
to operator and steward roles, even though only ``pii_person`` is ``restricted``.
"""

from __future__ import annotations

from medlake.engine import ColumnSpec, TableSpec

# Shared column types, so the same thing has the same type in every table.
SOURCE_SYSTEM = "varchar(50)"
SOURCE_ID = "varchar(255)"
BATCH_ID = "varchar(64)"
SHA256_HEX = "varchar(64)"

# Foreign-key targets: (table, column).
_BATCH = ("ingest_batch", "batch_id")
_PERSON = ("person", "person_id")
_SPECIMEN = ("specimen", "specimen_id")

INGEST_BATCH = TableSpec(
    name="ingest_batch",
    group="medlake",
    description="One landed file or message bundle and what ingesting it did.",
    unique=(("source_system", "landed_sha256"),),
    columns=(
        ColumnSpec("batch_id", BATCH_ID, required=True, primary_key=True),
        ColumnSpec("source_system", SOURCE_SYSTEM, required=True),
        ColumnSpec(
            "format", "varchar(20)", required=True, description="fhir, hl7v2, csv, vcf, plink..."
        ),
        ColumnSpec("landed_sha256", SHA256_HEX, required=True, description="landed content"),
        ColumnSpec(
            "landed_path", "varchar(MAX)", required=True, description="relative to landing/"
        ),
        ColumnSpec("original_name", "varchar(255)", description="file name as received"),
        ColumnSpec("size_bytes", "bigint", required=True),
        ColumnSpec("received_at", "datetime", required=True, description="landed, UTC"),
        ColumnSpec("started_at", "datetime", description="ingest began"),
        ColumnSpec("finished_at", "datetime", description="ingest ended, either way"),
        ColumnSpec(
            "status", "varchar(20)", required=True, description="received, running, loaded, failed"
        ),
        ColumnSpec("rows_loaded", "bigint"),
        ColumnSpec("rows_quarantined", "bigint"),
        ColumnSpec("message", "varchar(MAX)", description="error or summary, one paragraph"),
    ),
)

SOURCE_RECORD = TableSpec(
    name="source_record",
    group="medlake",
    description=(
        "Provenance: one row per version of each source record loaded into a CDM table. "
        "All versions of a record share its cdm_row_id; the current one is is_current. "
        "No primary key (it is the lake's largest table); the natural key is unique."
    ),
    unique=(("cdm_table", "source_system", "source_record_id", "source_version"),),
    columns=(
        ColumnSpec("cdm_table", "varchar(50)", required=True),
        ColumnSpec(
            "cdm_row_id",
            "integer",
            required=True,
            description="the CDM row's primary-key value (person_id for death)",
        ),
        ColumnSpec("source_system", SOURCE_SYSTEM, required=True),
        ColumnSpec(
            "source_record_id",
            SOURCE_ID,
            required=True,
            description="down to the part that made this row, e.g. MSG123/OBX/3",
        ),
        ColumnSpec("batch_id", BATCH_ID, required=True, foreign_key=_BATCH),
        ColumnSpec(
            "source_version",
            "bigint",
            required=True,
            description=(
                "orders versions, higher replaces lower: FHIR versionId, HL7 MSH-7 or a "
                "source update time as epoch ms; else the batch's received_at in epoch ms"
            ),
        ),
        ColumnSpec("is_current", "boolean", required=True),
        ColumnSpec("loaded_at", "datetime", required=True),
        ColumnSpec(
            "record_sha256",
            SHA256_HEX,
            required=True,
            description="normalised record content: same version, same hash, nothing to do",
        ),
        ColumnSpec("superseded_at", "datetime", description="when a newer version replaced it"),
        ColumnSpec(
            "source_patient_id",
            SOURCE_ID,
            description=(
                "the source patient the row is about (same source system), so the EMPI "
                "can move exactly that patient's rows when it splits a person"
            ),
        ),
        ColumnSpec(
            "person_id",
            "integer",
            description=(
                "the person of the CDM row (the surviving person for a merge record), kept "
                "by ingest and the EMPI, so one person's provenance is read without a scan"
            ),
        ),
    ),
)

SOURCE_PATIENT = TableSpec(
    name="source_patient",
    group="medlake",
    description="One row per patient identity as a source system knows it.",
    columns=(
        ColumnSpec("source_system", SOURCE_SYSTEM, required=True, primary_key=True),
        ColumnSpec("source_patient_id", SOURCE_ID, required=True, primary_key=True),
        ColumnSpec(
            "person_id", "integer", foreign_key=_PERSON, description="null until EMPI links it"
        ),
        ColumnSpec(
            "batch_id",
            BATCH_ID,
            required=True,
            foreign_key=_BATCH,
            description="latest batch that mentioned this identity",
        ),
        ColumnSpec("first_seen", "datetime", required=True),
        ColumnSpec("last_seen", "datetime", required=True),
    ),
)

QUARANTINE = TableSpec(
    name="quarantine",
    group="medlake",
    description="Records that could not be parsed or mapped, with why and the raw payload.",
    columns=(
        ColumnSpec(
            "quarantine_id",
            "varchar(64)",
            required=True,
            primary_key=True,
            description=(
                "SHA-256 hex of batch_id, location, field and reason, so re-ingesting a "
                "batch finds the same rows again"
            ),
        ),
        ColumnSpec("batch_id", BATCH_ID, required=True, foreign_key=_BATCH),
        ColumnSpec("source_system", SOURCE_SYSTEM, required=True),
        ColumnSpec(
            "location",
            "varchar(255)",
            required=True,
            description="file:line or message index, e.g. labs.csv:42 or msg 17",
        ),
        ColumnSpec("reason", "varchar(1000)", required=True),
        ColumnSpec("field", "varchar(255)", description="the field at fault, if one"),
        ColumnSpec("raw_payload", "varchar(MAX)", description="the record as received"),
        ColumnSpec("quarantined_at", "datetime", required=True),
        ColumnSpec("resolved_at", "datetime"),
    ),
)

PII_PERSON = TableSpec(
    name="pii_person",
    group="restricted",
    restricted=True,
    description=(
        "Direct identifiers, one row per version of a source patient record. "
        "Readable only by roles allowed to see identifiers (EMPI, stewards)."
    ),
    columns=(
        ColumnSpec("source_system", SOURCE_SYSTEM, required=True, primary_key=True),
        ColumnSpec("source_patient_id", SOURCE_ID, required=True, primary_key=True),
        ColumnSpec("person_id", "integer", foreign_key=_PERSON),
        ColumnSpec("name_hanzi", "varchar(100)", description="name in Chinese characters"),
        ColumnSpec("name_pinyin", "varchar(255)"),
        ColumnSpec("family_name", "varchar(100)"),
        ColumnSpec("given_name", "varchar(100)"),
        ColumnSpec("name_latin", "varchar(255)", description="as in a passport"),
        ColumnSpec("resident_id", "varchar(20)", description="居民身份证号, 18 characters"),
        ColumnSpec("birth_date", "date"),
        ColumnSpec("sex", "varchar(20)", description="as the source writes it"),
        ColumnSpec("phone", "varchar(50)"),
        ColumnSpec("address", "varchar(1000)"),
        ColumnSpec("postcode", "varchar(20)"),
        ColumnSpec("email", "varchar(255)"),
        ColumnSpec("batch_id", BATCH_ID, required=True, foreign_key=_BATCH),
        ColumnSpec(
            "source_version",
            "bigint",
            required=True,
            primary_key=True,
            description="as in source_record: higher replaces lower",
        ),
        ColumnSpec("recorded_at", "datetime", required=True),
        ColumnSpec(
            "mrn",
            "varchar(50)",
            description="medical record number (病案号) the source system gave the patient",
        ),
    ),
)

OMICS_SAMPLE = TableSpec(
    name="omics_sample",
    group="medlake",
    description="Registry of omics samples: the file that holds each, and its person.",
    columns=(
        ColumnSpec(
            "sample_id", "varchar(100)", required=True, primary_key=True, description="as in file"
        ),
        ColumnSpec(
            "assay",
            "varchar(20)",
            required=True,
            primary_key=True,
            description="genotype, rnaseq, ...",
        ),
        ColumnSpec(
            "file_uri", "varchar(MAX)", required=True, description="relative to omics/, or a URI"
        ),
        ColumnSpec(
            "file_format", "varchar(20)", required=True, description="bed, pgen, vcf, h5ad, ..."
        ),
        ColumnSpec("sha256", SHA256_HEX, required=True, description="of the file"),
        ColumnSpec("source_system", SOURCE_SYSTEM, required=True),
        ColumnSpec("source_patient_id", SOURCE_ID),
        ColumnSpec("person_id", "integer", foreign_key=_PERSON, description="null until linked"),
        ColumnSpec("specimen_id", "integer", foreign_key=_SPECIMEN),
        ColumnSpec("collected_date", "date"),
        ColumnSpec("registered_at", "datetime", required=True),
        ColumnSpec("batch_id", BATCH_ID, required=True, foreign_key=_BATCH),
    ),
)

AUDIT_EVENT = TableSpec(
    name="audit_event",
    group="medlake",
    description=(
        "Tamper-evident trail of reads, exports and changes: each event's hash covers "
        "its fields and the previous event's hash."
    ),
    columns=(
        ColumnSpec(
            "event_id", "bigint", required=True, primary_key=True, description="1, 2, 3, ..."
        ),
        ColumnSpec("occurred_at", "datetime", required=True),
        ColumnSpec("actor", "varchar(255)", required=True, description="user, or system:<job>"),
        ColumnSpec("role", "varchar(50)"),
        ColumnSpec("action", "varchar(50)", required=True, description="read, export, merge..."),
        ColumnSpec("object_type", "varchar(50)"),
        ColumnSpec("object_id", "varchar(255)"),
        ColumnSpec("project_id", "varchar(64)"),
        ColumnSpec("detail", "json"),
        ColumnSpec(
            "outcome", "varchar(20)", description="ok, denied, failed (null on older events)"
        ),
        ColumnSpec(
            "origin", "varchar(255)", description="where from: host and program, or an address"
        ),
        ColumnSpec(
            "prev_hash", SHA256_HEX, required=True, description="64 zeros for the first event"
        ),
        ColumnSpec("event_hash", SHA256_HEX, required=True),
    ),
)

SCHEMA_VERSION_TABLE = TableSpec(
    name="schema_version",
    group="medlake",
    description="One row per migration applied to this lake.",
    columns=(
        ColumnSpec("version", "integer", required=True, primary_key=True),
        ColumnSpec("applied_at", "datetime", required=True),
        ColumnSpec("description", "varchar(255)", required=True),
        ColumnSpec("medlake_version", "varchar(50)", required=True, description="that applied it"),
    ),
)

MEDLAKE_TABLES: tuple[TableSpec, ...] = (
    INGEST_BATCH,
    SOURCE_RECORD,
    SOURCE_PATIENT,
    QUARANTINE,
    PII_PERSON,
    OMICS_SAMPLE,
    AUDIT_EVENT,
    SCHEMA_VERSION_TABLE,
)

__all__ = [
    "AUDIT_EVENT",
    "BATCH_ID",
    "INGEST_BATCH",
    "MEDLAKE_TABLES",
    "OMICS_SAMPLE",
    "PII_PERSON",
    "QUARANTINE",
    "SCHEMA_VERSION_TABLE",
    "SHA256_HEX",
    "SOURCE_ID",
    "SOURCE_PATIENT",
    "SOURCE_RECORD",
    "SOURCE_SYSTEM",
]
