"""Extraction: a cohort's de-identified analysis dataset, with its manifest, audited.

``medlake extract FILE.json --features SPEC --out DIR`` composes the cohort (members),
the feature queries (:mod:`medlake.service.extract_features`, ``extract_omics``), the
privacy domain (pseudonyms, date shifts, generalization, k-anonymity) and the audit
trail. One row per person (the person's first era); the steps, in order:

1. features are computed on real ids and dates (windows are relative to the real index);
2. ``person_id`` becomes a keyed pseudonym, the index and end dates move by the person's
   date shift, ages and birth years go into bands, region codes are cut;
3. k-anonymity is enforced over the quasi-identifiers (suppression, then dropping);
4. rows are ordered by pseudonym (the order of person ids must not survive), written as
   ``dataset.parquet`` and ``dataset.csv``, and ``manifest.json`` records the definition,
   the feature spec, the medlake version, the row counts, the k achieved and the SHA-256
   of each file; the export is appended to the audit trail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import ibis
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from medlake import __version__
from medlake.access import Permission
from medlake.audit import append_event
from medlake.cohort import example_path
from medlake.cohort.model import CohortDefinition, ConceptSet
from medlake.config import PrivacySection, open_workspace
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.privacy import (
    age_band,
    birth_year_band,
    date_shifts,
    enforce_k_anonymity,
    pseudonymize,
    shift_date_column,
    truncate_code,
)
from medlake.service.cohort import load_definition, members_for_service
from medlake.service.extract_features import PERSON, clinical_features, first_eras
from medlake.service.extract_omics import gene_expression, genotype_dosages
from medlake.service.extract_spec import FeatureSpec, load_feature_spec
from medlake.service.policy import (
    acting_user_name,
    authorized,
    current_principal,
    current_project,
)
from medlake.service.workspace import open_lake, pseudonym_secret

DATASET = "dataset"
MANIFEST = "manifest.json"
_SEX = {8507: "M", 8532: "F"}


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction wrote, as its manifest records it."""

    out_dir: Path
    members: int
    persons: int
    rows: int
    k: int
    k_achieved: int | None
    quasi_identifiers: tuple[str, ...]
    suppressed_rows: int
    dropped_rows: int
    files: dict[str, str] = field(default_factory=dict)
    audit_event_id: int | None = None

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST

    def as_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "members": self.members,
            "persons": self.persons,
            "rows": self.rows,
            "k": self.k,
            "k_achieved": self.k_achieved,
            "quasi_identifiers": list(self.quasi_identifiers),
            "suppressed_rows": self.suppressed_rows,
            "dropped_rows": self.dropped_rows,
            "files": self.files,
            "audit_event_id": self.audit_event_id,
        }


@authorized(Permission.EXPORT)
def extract_cohort(
    workspace_dir: Path | None,
    definition: CohortDefinition,
    spec: FeatureSpec,
    out_dir: Path,
    *,
    actor: str | None = None,
) -> ExtractResult:
    """Extract ``definition``'s cohort with the features of ``spec`` into ``out_dir``."""
    members = members_for_service(workspace_dir, definition)
    return extract_members(
        workspace_dir,
        members,
        spec,
        out_dir,
        definition=definition.model_dump(mode="json"),
        definition_concept_sets=definition.concept_sets,
        actor=actor,
    )


@authorized(Permission.EXPORT)
def extract_members(
    workspace_dir: Path | None,
    members: pa.Table,
    spec: FeatureSpec,
    out_dir: Path,
    *,
    definition: dict[str, object] | None = None,
    definition_concept_sets: list[ConceptSet] | tuple[ConceptSet, ...] = (),
    actor: str | None = None,
) -> ExtractResult:
    """Extract the persons of ``members`` (``person_id, cohort_start_date,
    cohort_end_date``) with the features of ``spec`` into ``out_dir`` (see module)."""
    workspace = open_workspace(workspace_dir)
    from medlake.service.mirror import refuse_if_frozen

    refuse_if_frozen(workspace)  # the extract's files are writes (the lake's: the engine refuses)
    privacy = workspace.settings.privacy
    out_dir = _fresh_out_dir(Path(out_dir))
    key = pseudonym_secret(workspace)
    k = spec.k or privacy.k
    qis = spec.quasi_identifier_columns()
    persons = first_eras(members)
    concept_sets = _concept_sets(spec, definition_concept_sets)

    with open_lake(workspace) as engine:
        features = clinical_features(engine, persons, spec, concept_sets)
        ids = features.column(PERSON)
        omics: dict[str, pa.Array] = {}
        if spec.genotypes:
            omics |= genotype_dosages(engine, workspace.omics_dir, ids, spec.genotypes)
        if spec.expression:
            omics |= gene_expression(engine, workspace.omics_dir, ids, spec.expression)
        demographics = _demographics(engine, persons)
        dataset = _deidentify(features, demographics, omics, spec, key, privacy)
        protected = enforce_k_anonymity(dataset, qis, k)
        released = protected.table.sort_by("person_pseudonym")
        kept_ids = [int(p) for p in released.column("__person_id").to_pylist()]
        files = _write(out_dir, released.drop_columns(["__person_id"]))
        result = ExtractResult(
            out_dir=out_dir,
            members=members.num_rows,
            persons=persons.num_rows,
            rows=released.num_rows,
            k=k,
            k_achieved=protected.k_achieved,
            quasi_identifiers=tuple(qis),
            suppressed_rows=protected.suppressed_rows,
            dropped_rows=protected.dropped_rows,
            files=files,
        )
        manifest = _manifest(result, definition, spec, privacy)
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        event = append_event(
            engine,
            actor=actor or acting_user_name(),
            role=principal.role.value if (principal := current_principal()) else None,
            project_id=current_project(),
            action="export",
            object_type="cohort",
            object_id=str((definition or {}).get("name", "members"))[:255],
            detail={
                "out_dir": str(out_dir),
                "files": files | {MANIFEST: sha256_of(out_dir / MANIFEST)},
                "rows": result.rows,
                "k": k,
                "k_achieved": result.k_achieved,
                "person_ids": kept_ids,
            },
        )
    return ExtractResult(**{**result.__dict__, "audit_event_id": event})


def _fresh_out_dir(out_dir: Path) -> Path:
    """Exports are never overwritten: the folder must be new or empty."""
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"{out_dir} exists and is not an empty folder; extracts never overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _concept_sets(
    spec: FeatureSpec, from_definition: list[ConceptSet] | tuple[ConceptSet, ...]
) -> list[ConceptSet]:
    """The spec's concept sets, then the definition's under ids the spec does not use."""
    own = {c.id for c in spec.concept_sets}
    return [*spec.concept_sets, *(c for c in from_definition if c.id not in own)]


def _demographics(engine: Engine, persons: pa.Table) -> pa.Table:
    """``person_id, gender_concept_id, year_of_birth, region`` (location's zip) per member."""
    members = ibis.memtable(persons.select([PERSON]))
    person = engine.table("person")
    location = engine.table("location")
    joined = person.join(members, person.person_id == members.person_id).left_join(
        location, person.location_id == location.location_id
    )
    query = joined.select(
        person_id=joined.person_id.cast("int64"),
        gender_concept_id=joined.gender_concept_id.cast("int64"),
        year_of_birth=joined.year_of_birth.cast("int64"),
        region=joined.zip.cast("string"),
    )
    return engine.execute(query)


def _deidentify(
    features: pa.Table,
    demographics: pa.Table,
    omics: dict[str, pa.Array],
    spec: FeatureSpec,
    key: bytes,
    privacy: PrivacySection,
) -> pa.Table:
    """The released columns, in order; ``__person_id`` is kept for the audit only."""
    ids = features.column(PERSON)
    by_person = {row[PERSON]: row for row in demographics.to_pylist()}
    person_rows = [by_person.get(p, {}) for p in ids.to_pylist()]
    shifts = date_shifts(key, ids.to_pylist(), privacy.date_shift_max_days)
    columns: dict[str, pa.Array] = {
        "person_pseudonym": pseudonymize(key, ids, spec.pseudonym_context),
    }
    shown = spec.demographics
    if shown.index_date:
        for name, source in (("index_date", "cohort_start_date"), ("end_date", "cohort_end_date")):
            if source in features.column_names:
                columns[name] = shift_date_column(features.column(source), ids, shifts)
    if shown.sex:
        columns["sex"] = pa.array(
            [_SEX.get(r.get("gender_concept_id")) for r in person_rows], type=pa.string()
        )
    years = pa.array([r.get("year_of_birth") for r in person_rows], type=pa.int64())
    if shown.age_band:
        # Age at index as OHDSI computes it (year of index minus year of birth), so that
        # an extract agrees with the cohort's age criteria.
        index_years = pc.year(features.column("cohort_start_date"))
        ages = pc.subtract(index_years, years)
        columns["age_band"] = age_band(ages, privacy.age_band_width, privacy.top_age)
    if shown.birth_year:
        columns["birth_year"] = pc.cast(
            birth_year_band(years, privacy.birth_year_band), pa.string()
        )
    if shown.region:
        regions = pa.array([r.get("region") for r in person_rows], type=pa.string())
        columns["region"] = truncate_code(regions, privacy.region_digits)
    for name in spec.feature_columns():
        if name in omics:
            columns[name] = omics[name]
        else:
            columns[name] = features.column(name)
    columns["__person_id"] = ids
    return pa.table(columns)


def sha256_of(path: Path) -> str:
    """The file's SHA-256 in hex, as the manifest records it."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write(out_dir: Path, dataset: pa.Table) -> dict[str, str]:
    parquet = out_dir / f"{DATASET}.parquet"
    csv = out_dir / f"{DATASET}.csv"
    pq.write_table(dataset, parquet)
    pacsv.write_csv(dataset, csv)
    return {parquet.name: sha256_of(parquet), csv.name: sha256_of(csv)}


def _manifest(
    result: ExtractResult,
    definition: dict[str, object] | None,
    spec: FeatureSpec,
    privacy: PrivacySection,
) -> dict[str, object]:
    return {
        "medlake_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "definition": definition,
        "feature_spec": spec.model_dump(mode="json"),
        "rows": {
            "cohort_members": result.members,
            "persons": result.persons,
            "written": result.rows,
            "quasi_identifiers_suppressed": result.suppressed_rows,
            "dropped_for_k_anonymity": result.dropped_rows,
        },
        "k_anonymity": {
            "k": result.k,
            "k_achieved": result.k_achieved,
            "quasi_identifiers": list(result.quasi_identifiers),
        },
        "deidentification": {
            "pseudonyms": "HMAC-SHA-256 with the workspace secret, 128 bits, hex",
            "pseudonym_context": spec.pseudonym_context,
            "date_shift_max_days": privacy.date_shift_max_days,
            "age_band_width": privacy.age_band_width,
            "top_age": privacy.top_age,
            "birth_year_band": privacy.birth_year_band,
            "region_digits": privacy.region_digits,
        },
        "files": {
            name: {"sha256": sha, "bytes": (result.out_dir / name).stat().st_size}
            for name, sha in result.files.items()
        },
    }


def example_features_path(name: str = "t2d_hba1c_metformin") -> Path:
    """Path of a bundled example feature spec (``extract_examples/<name>.features.json``)."""
    return Path(
        str(resources.files("medlake.service") / "extract_examples" / f"{name}.features.json")
    )


@authorized(Permission.EXPORT)
def extract_demo_cohort(workspace_dir: Path | None, out_dir: Path) -> ExtractResult:
    """The demo's extraction: the bundled type 2 diabetes / HbA1c / metformin cohort with
    its example feature spec (concept sets 1 and 3 come from the definition)."""
    definition = load_definition(example_path("t2d_hba1c_metformin"))
    spec = load_feature_spec(example_features_path())
    return extract_cohort(workspace_dir, definition, spec, out_dir)
