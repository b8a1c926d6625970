"""Generate ``medlake.schema``'s OMOP CDM v5.4 modules from the official OHDSI field list.

The lake's OMOP tables are plain Python data (:class:`medlake.engine.TableSpec`), but
typing 432 columns by hand invites drift from the standard. This script reads OHDSI's
``OMOP_CDMv5.4_Field_Level.csv`` (the file the CDM's own DDL is generated from; a copy
lives in ``tests/schema/data/``) and writes, one ``ColumnSpec`` per line:

- ``src/medlake/schema/omop_clinical.py``   Clinical Data tables (person ... fact_relationship)
- ``src/medlake/schema/omop_system.py``     Health System, Health Economics and Metadata
- ``src/medlake/schema/omop_derived.py``    Derived Elements and Results (eras, episodes, cohorts)
- ``src/medlake/schema/omop_vocabulary.py`` Standardized Vocabularies
- ``src/medlake/schema/omop.py``            ``OMOP_TABLES``, all 39 tables in the CSV's order

From each CSV row it takes the table and field names (order kept), ``isRequired``,
``cdmDatatype`` (the one capitalised ``Integer`` normalised to ``integer``),
``isPrimaryKey`` and ``fkTableName``/``fkFieldName`` (lower-cased); note_nlp's
``"offset"`` loses the SQL quotes the CSV gives it (see :func:`field_name`). The long
``userGuidance``/``etlConventions`` texts are left out; each table gets a one-line
description from :data:`TABLES` below.

Usage (from the repository root)::

    .venv/bin/python scripts/generate_omop_schema.py           # rewrite the modules
    .venv/bin/python scripts/generate_omop_schema.py --check   # exit 1 if they are stale

``tests/schema/test_omop_matches_v54.py`` runs the check too, so a hand edit of a
generated module, or a change to this script without regenerating, fails the tests.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO / "tests" / "schema" / "data" / "OMOP_CDMv5.4_Field_Level.csv"
DEFAULT_OUT = REPO / "src" / "medlake" / "schema"
LINE_LENGTH = 100  # pyproject's ruff line-length

# Every table of the CDM: (module, group, one-line description). Order within a module
# follows the CSV. A table in the CSV that is missing here (or the reverse) is an error.
TABLES: dict[str, tuple[str, str, str]] = {
    "person": ("clinical", "cdm", "One row per person: demographics, pseudonymous person_id."),
    "observation_period": (
        "clinical",
        "cdm",
        "Spans of time in which the person's clinical events are expected to be recorded.",
    ),
    "visit_occurrence": ("clinical", "cdm", "Encounters with the health care system."),
    "visit_detail": ("clinical", "cdm", "Parts of a visit: transfers, wards, departments."),
    "condition_occurrence": ("clinical", "cdm", "Diagnoses, signs and symptoms."),
    "drug_exposure": ("clinical", "cdm", "Prescriptions, dispensings and administrations."),
    "procedure_occurrence": ("clinical", "cdm", "Procedures performed on the person."),
    "device_exposure": ("clinical", "cdm", "Devices implanted, used or supplied."),
    "measurement": ("clinical", "cdm", "Laboratory results and other measured values."),
    "observation": ("clinical", "cdm", "Clinical facts that fit no other domain."),
    "death": ("clinical", "cdm", "When and of what the person died; at most one row per person."),
    "note": ("clinical", "cdm", "Free-text clinical notes."),
    "note_nlp": ("clinical", "cdm", "Terms extracted from notes by NLP."),
    "specimen": ("clinical", "cdm", "Biological samples taken from the person."),
    "fact_relationship": ("clinical", "cdm", "Relationships between facts of any two tables."),
    "location": ("system", "cdm", "Physical addresses of persons and care sites."),
    "care_site": ("system", "cdm", "Departments and units where care is delivered."),
    "provider": ("system", "cdm", "Clinicians and other care providers."),
    "payer_plan_period": ("system", "cdm", "Spans of time a person is covered by a payer plan."),
    "cost": ("system", "cdm", "Costs and charges of clinical events."),
    "drug_era": ("derived", "cdm", "Spans of continuous exposure to one ingredient."),
    "dose_era": ("derived", "cdm", "Spans of continuous exposure at a constant dose."),
    "condition_era": ("derived", "cdm", "Spans of continuous presence of one condition."),
    "episode": ("derived", "cdm", "Disease phases and treatment episodes (e.g. oncology)."),
    "episode_event": ("derived", "cdm", "Links clinical events to the episode they belong to."),
    "metadata": ("system", "cdm", "Facts about this CDM instance, as name/value pairs."),
    "cdm_source": ("system", "cdm", "The source data and ETL this CDM instance came from."),
    "concept": ("vocabulary", "vocabulary", "Every concept of every vocabulary."),
    "vocabulary": ("vocabulary", "vocabulary", "The vocabularies concepts come from."),
    "domain": ("vocabulary", "vocabulary", "The domains concepts belong to."),
    "concept_class": ("vocabulary", "vocabulary", "The classes concepts belong to."),
    "concept_relationship": ("vocabulary", "vocabulary", "Direct relationships between concepts."),
    "relationship": ("vocabulary", "vocabulary", "The kinds of concept relationship."),
    "concept_synonym": ("vocabulary", "vocabulary", "Alternative names of concepts."),
    "concept_ancestor": (
        "vocabulary",
        "vocabulary",
        "Transitive hierarchy: every ancestor/descendant pair of concepts.",
    ),
    "source_to_concept_map": (
        "vocabulary",
        "vocabulary",
        "Local source codes mapped to standard concepts.",
    ),
    "drug_strength": ("vocabulary", "vocabulary", "Amount of each ingredient in drug products."),
    "cohort": ("derived", "results", "Persons in a cohort and the period they are in it."),
    "cohort_definition": ("derived", "results", "How each cohort is defined."),
}

# Module -> first line of its docstring.
MODULES: dict[str, str] = {
    "clinical": "OMOP CDM v5.4 Clinical Data tables: persons and the events recorded about them.",
    "system": "OMOP CDM v5.4 Health System, Health Economics and Metadata tables.",
    "derived": "OMOP CDM v5.4 Derived Elements (eras, episodes) and Results (cohorts) tables.",
    "vocabulary": "OMOP CDM v5.4 Standardized Vocabularies tables.",
}

HEADER = """\
Generated by scripts/generate_omop_schema.py from OHDSI's OMOP_CDMv5.4_Field_Level.csv
(copy in tests/schema/data/). Do not edit by hand: change the script and regenerate."""


@dataclass(frozen=True)
class Field:
    """One row of the field list, reduced to what a :class:`TableSpec` holds."""

    table: str
    name: str
    logical_type: str
    required: bool
    primary_key: bool
    foreign_key: tuple[str, str] | None


def _yes(value: str, where: str) -> bool:
    if value not in ("Yes", "No"):
        raise ValueError(f"{where}: expected Yes or No, got {value!r}")
    return value == "Yes"


def field_name(raw: str) -> str:
    """Column name from the CSV's ``cdmFieldName``.

    The field list writes note_nlp's ``offset`` as ``"offset"``, quoted because it is a
    reserved word in some SQL dialects; the column is named ``offset`` and quoting it is
    the engine's job.
    """
    return raw.strip('"')


def read_fields(csv_path: Path) -> list[Field]:
    """The CSV's fields in file order, with types and key names normalised."""
    fields: list[Field] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            where = f"{csv_path.name}:{line}"
            foreign_key = None
            if _yes(row["isForeignKey"], where):
                foreign_key = (row["fkTableName"].lower(), row["fkFieldName"].lower())
            logical_type = row["cdmDatatype"]
            if logical_type.lower() == "integer":
                logical_type = "integer"
            fields.append(
                Field(
                    table=row["cdmTableName"],
                    name=field_name(row["cdmFieldName"]),
                    logical_type=logical_type,
                    required=_yes(row["isRequired"], where),
                    primary_key=_yes(row["isPrimaryKey"], where),
                    foreign_key=foreign_key,
                )
            )
    return fields


def _fk_constant(target: tuple[str, str]) -> str:
    return "_" + target[0].upper()


def _column_line(field: Field) -> list[str]:
    args = [f'"{field.name}"', f'"{field.logical_type}"']
    if field.required:
        args.append("required=True")
    if field.primary_key:
        args.append("primary_key=True")
    if field.foreign_key is not None:
        args.append(f"foreign_key={_fk_constant(field.foreign_key)}")
    one_line = f"        ColumnSpec({', '.join(args)}),"
    if len(one_line) <= LINE_LENGTH:
        return [one_line]
    return ["        ColumnSpec(", *(f"            {arg}," for arg in args), "        ),"]


def _string_literal(text: str, indent: int) -> list[str]:
    line = f'{" " * indent}description="{text}",'
    if len(line) <= LINE_LENGTH:
        return [line]
    pad = " " * indent
    return [f"{pad}description=(", f'{pad}    "{text}"', f"{pad}),"]


def render_module(module: str, tables: dict[str, list[Field]]) -> str:
    """Source of one ``omop_<module>.py`` holding ``tables`` (name -> fields, in order)."""
    targets = sorted({f.foreign_key for fields in tables.values() for f in fields if f.foreign_key})
    if len({_fk_constant(t) for t in targets}) != len(targets):
        raise ValueError(f"foreign-key targets in {module} share a table name: {targets}")
    lines = [f'"""{MODULES[module]}', "", HEADER, '"""', ""]
    lines += ["from __future__ import annotations", ""]
    lines += ["from medlake.engine import ColumnSpec, TableSpec", ""]
    if targets:
        lines.append("# Foreign-key targets: (table, column), named after the table.")
        lines += [f'{_fk_constant(t)} = ("{t[0]}", "{t[1]}")' for t in targets]
        lines.append("")
    for name, fields in tables.items():
        _, group, description = TABLES[name]
        lines += ["", f"{name.upper()} = TableSpec(", f'    name="{name}",']
        lines.append(f'    group="{group}",')
        lines += _string_literal(description, 4)
        lines.append("    columns=(")
        for field in fields:
            lines += _column_line(field)
        lines += ["    ),", ")", ""]
    lines.append("")
    names = ", ".join(f'"{name.upper()}"' for name in sorted(n.upper() for n in tables))
    all_line = f"__all__ = [{names}]"
    if len(all_line) <= LINE_LENGTH:
        lines.append(all_line)
    else:
        lines.append("__all__ = [")
        lines += [f'    "{name}",' for name in sorted(n.upper() for n in tables)]
        lines.append("]")
    return "\n".join(lines) + "\n"


def render_index(tables_in_order: list[str]) -> str:
    """Source of ``omop.py``: ``OMOP_TABLES`` in the CSV's order."""
    lines = [
        '"""The 39 tables of the OMOP Common Data Model v5.4, in the official field list\'s order.',
        "",
        "Table and column names, column order, required flags, logical types and keys are",
        "exactly those of OHDSI's v5.4 field list, so OHDSI tools and people who know OMOP feel",
        "at home in the lake; tests/schema/test_omop_matches_v54.py checks it field by field.",
        "",
        HEADER,
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from medlake.engine import TableSpec",
    ]
    for module in sorted(MODULES):
        members = sorted(n.upper() for n in tables_in_order if TABLES[n][0] == module)
        import_line = f"from medlake.schema.omop_{module} import {', '.join(members)}"
        if len(import_line) <= LINE_LENGTH:
            lines.append(import_line)
        else:
            lines.append(f"from medlake.schema.omop_{module} import (")
            lines += [f"    {member}," for member in members]
            lines.append(")")
    lines += ["", "OMOP_TABLES: tuple[TableSpec, ...] = ("]
    lines += [f"    {name.upper()}," for name in tables_in_order]
    lines += [")", "", '__all__ = ["OMOP_TABLES"]', ""]
    return "\n".join(lines)


def render_all(csv_path: Path) -> dict[str, str]:
    """File name (under ``src/medlake/schema``) -> generated source."""
    fields = read_fields(csv_path)
    by_table: dict[str, list[Field]] = {}
    for field in fields:
        by_table.setdefault(field.table, []).append(field)
    if set(by_table) != set(TABLES):
        raise ValueError(
            f"tables differ from the script's list: only in CSV {set(by_table) - set(TABLES)}, "
            f"only in script {set(TABLES) - set(by_table)}"
        )
    sources = {"omop.py": render_index(list(by_table))}
    for module in MODULES:
        tables = {name: fs for name, fs in by_table.items() if TABLES[name][0] == module}
        sources[f"omop_{module}.py"] = render_module(module, tables)
    return sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="OHDSI field list")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="schema package dir")
    parser.add_argument("--check", action="store_true", help="fail if modules are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, source in render_all(args.csv).items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == source:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(source, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"stale generated modules: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
