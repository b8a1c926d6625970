"""Build the bundled demo vocabulary (Athena-format TSV files) from its TOML definition.

The demo vocabulary lets a new lake be explored before the hospital loads the real
OHDSI Athena download. It is written in Athena's own file format (tab-separated, header
row, Athena's column names, dates as YYYYMMDD) so that one loader,
:func:`medlake.vocab.load_athena_vocabulary`, loads both.

Input: ``src/medlake/vocab/data/demo_vocabulary.toml`` (codes, parents, English and
Chinese names). Output: CONCEPT.csv, CONCEPT_RELATIONSHIP.csv, CONCEPT_ANCESTOR.csv,
CONCEPT_SYNONYM.csv, VOCABULARY.csv, DOMAIN.csv, CONCEPT_CLASS.csv and RELATIONSHIP.csv
next to it. The output is deterministic: rows are sorted and local concept_ids are a
hash of (vocabulary_id, code), so adding a concept never renumbers the others.

Local concept_ids (every concept the definition gives no OMOP id for)::

    2_000_000_000 + int.from_bytes(sha256(f"{vocabulary_id}\\t{key}")[:8], "big") % 100_000_000

where ``key`` is the concept_code, or for metadata concepts (one per vocabulary,
domain, concept class and relationship) the id they describe. 2,000,000,000 and above
is OMOP's range for site-local concepts; a collision stops the build.

Usage::

    python scripts/build_demo_vocabulary.py            # regenerate the files
    python scripts/build_demo_vocabulary.py --check    # exit 1 if the files are stale
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tomllib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "medlake" / "vocab" / "data"
DEFINITION = DATA_DIR / "demo_vocabulary.toml"

LOCAL_ID_BASE = 2_000_000_000
LOCAL_ID_SPAN = 100_000_000
CHINESE_LANGUAGE_CONCEPT_ID = 4182948

# Athena's files and their columns, in Athena's order.
COLUMNS: dict[str, tuple[str, ...]] = {
    "CONCEPT.csv": (
        "concept_id",
        "concept_name",
        "domain_id",
        "vocabulary_id",
        "concept_class_id",
        "standard_concept",
        "concept_code",
        "valid_start_date",
        "valid_end_date",
        "invalid_reason",
    ),
    "CONCEPT_RELATIONSHIP.csv": (
        "concept_id_1",
        "concept_id_2",
        "relationship_id",
        "valid_start_date",
        "valid_end_date",
        "invalid_reason",
    ),
    "CONCEPT_ANCESTOR.csv": (
        "ancestor_concept_id",
        "descendant_concept_id",
        "min_levels_of_separation",
        "max_levels_of_separation",
    ),
    "CONCEPT_SYNONYM.csv": ("concept_id", "concept_synonym_name", "language_concept_id"),
    "VOCABULARY.csv": (
        "vocabulary_id",
        "vocabulary_name",
        "vocabulary_reference",
        "vocabulary_version",
        "vocabulary_concept_id",
    ),
    "DOMAIN.csv": ("domain_id", "domain_name", "domain_concept_id"),
    "CONCEPT_CLASS.csv": ("concept_class_id", "concept_class_name", "concept_class_concept_id"),
    "RELATIONSHIP.csv": (
        "relationship_id",
        "relationship_name",
        "is_hierarchical",
        "defines_ancestry",
        "reverse_relationship_id",
        "relationship_concept_id",
    ),
}

# relationship_id: (name, is_hierarchical, defines_ancestry, reverse)
RELATIONSHIPS: dict[str, tuple[str, str, str, str]] = {
    "Is a": ("Is a", "1", "1", "Subsumes"),
    "Subsumes": ("Subsumes", "1", "1", "Is a"),
    "Maps to": ("Non-standard to Standard map (OMOP)", "0", "0", "Mapped from"),
    "Mapped from": ("Standard to Non-standard map (OMOP)", "0", "0", "Maps to"),
    "Panel contains": ("Panel contains (LOINC)", "0", "0", "Contained in panel"),
    "Contained in panel": ("Contained in panel (LOINC)", "0", "0", "Panel contains"),
}

DOMAIN_NAMES: dict[str, str] = {
    "Condition": "Condition",
    "Condition Status": "Condition Status",
    "Drug": "Drug",
    "Gender": "Gender",
    "Language": "Language",
    "Meas Value": "Measurement Value",
    "Measurement": "Measurement",
    "Metadata": "Metadata",
    "Note": "Note",
    "Procedure": "Procedure",
    "Route": "Route",
    "Specimen": "Specimen",
    "Type Concept": "Type Concept",
    "Unit": "Unit",
    "Visit": "Visit",
}

METADATA_VOCABULARIES: dict[str, str] = {
    "Vocabulary": "OMOP Vocabulary",
    "Domain": "OMOP Domain",
    "Concept Class": "OMOP Concept Class",
    "Relationship": "OMOP Relationship",
}

ATC_CLASSES = {1: "ATC 1st", 3: "ATC 2nd", 4: "ATC 3rd", 5: "ATC 4th", 7: "ATC 5th"}


@dataclass
class Concept:
    concept_id: int
    name: str
    domain_id: str
    vocabulary_id: str
    concept_class_id: str
    standard_concept: str  # "S", "C" or "" (non-standard)
    code: str


def local_concept_id(vocabulary_id: str, key: str) -> int:
    """The deterministic local concept_id of (vocabulary_id, key); see the module docstring."""
    digest = hashlib.sha256(f"{vocabulary_id}\t{key}".encode()).digest()
    return LOCAL_ID_BASE + int.from_bytes(digest[:8], "big") % LOCAL_ID_SPAN


def _classify(vocabulary_id: str, code: str, is_leaf: bool, row: list) -> tuple[str, str, str]:
    """(domain_id, concept_class_id, standard_concept) of one authored concept."""
    digits = len(code.replace(".", ""))
    if vocabulary_id == "ICD10CM":
        if "-" in code:
            concept_class = "ICD10CM Block" if row[1] else "ICD10CM Chapter"
        else:
            concept_class = f"{digits}-char {'billing' if is_leaf else 'nonbill'} code"
        return "Condition", concept_class, "S" if is_leaf else "C"
    if vocabulary_id == "ATC":
        return "Drug", ATC_CLASSES[len(code)], "S" if len(code) == 7 else "C"
    if vocabulary_id == "ICD9Proc":
        concept_class = f"{digits}-dig {'billing' if is_leaf else 'nonbill'} code"
        return "Procedure", concept_class, "S" if is_leaf else "C"
    concept_class = row[4]
    if vocabulary_id == "LOINC":
        domain = {"Answer": "Meas Value", "Document Ontology": "Note"}.get(concept_class)
        return domain or "Measurement", concept_class, "S"
    if vocabulary_id == "SNOMED":  # the row names the domain (routes)
        return concept_class, "Qualifier Value", "S"
    if vocabulary_id == "UCUM":
        return "Unit", concept_class, "S"
    # OMOP's own vocabularies and the local one: the class names the domain.
    return concept_class, concept_class, "S"


def build(definition: dict) -> dict[str, list[tuple[str, ...]]]:
    """Every output file's rows (header excluded), sorted, as strings."""
    start, end = definition["valid_start_date"], definition["valid_end_date"]
    concepts: dict[int, Concept] = {}
    by_code: dict[tuple[str, str], int] = {}
    synonyms: set[tuple[str, ...]] = set()
    is_a: list[tuple[int, int]] = []  # (child, parent)
    panel: list[tuple[int, int]] = []  # (member, panel)
    units_used: set[str] = set()

    def add(concept: Concept) -> None:
        if concept.concept_id in concepts:
            other = concepts[concept.concept_id]
            raise SystemExit(
                f"concept_id {concept.concept_id} given to both {other.vocabulary_id} "
                f"{other.code!r} and {concept.vocabulary_id} {concept.code!r}"
            )
        concepts[concept.concept_id] = concept

    for vocabulary_id, vocabulary in definition["vocabularies"].items():
        rows = vocabulary["concepts"]
        parents = {row[1] for row in rows if row[1]}
        for row in rows:
            code, parent, name, chinese = row[:4]
            given_id = row[6] if len(row) > 6 else 0
            concept_id = given_id or local_concept_id(vocabulary_id, code)
            is_leaf = code not in parents
            domain, concept_class, standard = _classify(vocabulary_id, code, is_leaf, row)
            if (vocabulary_id, code) in by_code:
                raise SystemExit(f"{vocabulary_id} {code!r} defined twice")
            add(Concept(concept_id, name, domain, vocabulary_id, concept_class, standard, code))
            by_code[(vocabulary_id, code)] = concept_id
            if chinese:
                synonyms.add((str(concept_id), chinese, str(CHINESE_LANGUAGE_CONCEPT_ID)))
            if len(row) > 5 and row[5]:
                units_used.add(row[5])
        for row in rows:
            code, parent = row[0], row[1]
            if not parent:
                continue
            if (vocabulary_id, parent) not in by_code:
                raise SystemExit(f"{vocabulary_id} {code!r}: parent {parent!r} is not defined")
            pair = (by_code[(vocabulary_id, code)], by_code[(vocabulary_id, parent)])
            (panel if vocabulary_id == "LOINC" else is_a).append(pair)

    missing_units = sorted(unit for unit in units_used if ("UCUM", unit) not in by_code)
    if missing_units:
        raise SystemExit(f"units used by LOINC rows but not defined in UCUM: {missing_units}")

    # Metadata concepts, one per vocabulary, domain, concept class and relationship.
    vocabulary_meta = {
        **{
            vid: (v["name"], v["reference"], v["version"])
            for vid, v in definition["vocabularies"].items()
        },
        **{vid: (name, "OMOP generated", "") for vid, name in METADATA_VOCABULARIES.items()},
    }
    classes = {c.concept_class_id for c in concepts.values()} | set(METADATA_VOCABULARIES)
    domains = {c.domain_id for c in concepts.values()} | {"Metadata"}
    meta_ids: dict[tuple[str, str], int] = {}
    for kind, ids, names in (
        ("Vocabulary", vocabulary_meta, {k: v[0] for k, v in vocabulary_meta.items()}),
        ("Domain", domains, DOMAIN_NAMES),
        ("Concept Class", classes, {c: c for c in classes}),
        ("Relationship", RELATIONSHIPS, {k: v[0] for k, v in RELATIONSHIPS.items()}),
    ):
        for item in sorted(ids):
            concept_id = local_concept_id(kind, item)
            add(Concept(concept_id, names[item], "Metadata", kind, kind, "", "OMOP generated"))
            meta_ids[(kind, item)] = concept_id

    relationships: set[tuple[int, int, str]] = set()
    for child, parent in is_a:
        relationships |= {(child, parent, "Is a"), (parent, child, "Subsumes")}
    for member, panel_id in panel:
        relationships |= {
            (panel_id, member, "Panel contains"),
            (member, panel_id, "Contained in panel"),
        }
    for concept in concepts.values():
        if concept.standard_concept == "S":
            relationships |= {
                (concept.concept_id, concept.concept_id, "Maps to"),
                (concept.concept_id, concept.concept_id, "Mapped from"),
            }

    ancestors = _ancestor_rows(
        is_a, [c.concept_id for c in concepts.values() if c.standard_concept in ("S", "C")]
    )

    return {
        "CONCEPT.csv": [
            (
                str(c.concept_id),
                c.name,
                c.domain_id,
                c.vocabulary_id,
                c.concept_class_id,
                c.standard_concept,
                c.code,
                start,
                end,
                "",
            )
            for c in sorted(concepts.values(), key=lambda c: c.concept_id)
        ],
        "CONCEPT_RELATIONSHIP.csv": [
            (str(a), str(b), rel, start, end, "") for a, b, rel in sorted(relationships)
        ],
        "CONCEPT_ANCESTOR.csv": [tuple(str(v) for v in row) for row in ancestors],
        "CONCEPT_SYNONYM.csv": sorted(synonyms, key=lambda r: (int(r[0]), r[1])),
        "VOCABULARY.csv": [
            (vid, name, ref, version, str(meta_ids[("Vocabulary", vid)]))
            for vid, (name, ref, version) in sorted(vocabulary_meta.items())
        ],
        "DOMAIN.csv": [(d, DOMAIN_NAMES[d], str(meta_ids[("Domain", d)])) for d in sorted(domains)],
        "CONCEPT_CLASS.csv": [(c, c, str(meta_ids[("Concept Class", c)])) for c in sorted(classes)],
        "RELATIONSHIP.csv": [
            (rid, name, hier, anc, reverse, str(meta_ids[("Relationship", rid)]))
            for rid, (name, hier, anc, reverse) in sorted(RELATIONSHIPS.items())
        ],
    }


def _ancestor_rows(
    is_a: list[tuple[int, int]], selves: list[int]
) -> list[tuple[int, int, int, int]]:
    """Transitive closure of ``is_a`` (child, parent) with min/max levels, plus self rows."""
    parents: dict[int, list[int]] = defaultdict(list)
    for child, parent in is_a:
        parents[child].append(parent)
    levels: dict[tuple[int, int], tuple[int, int]] = {(c, c): (0, 0) for c in selves}
    for start in {child for child, _ in is_a}:
        queue = deque([(start, 0)])
        while queue:
            node, depth = queue.popleft()
            for parent in parents.get(node, ()):
                key = (parent, start)
                low, high = levels.get(key, (depth + 1, depth + 1))
                levels[key] = (min(low, depth + 1), max(high, depth + 1))
                queue.append((parent, depth + 1))
    return sorted((a, d, low, high) for (a, d), (low, high) in levels.items())


def render(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Athena's format: tab-separated, header row, no quoting, newline-terminated lines."""
    lines = ["\t".join(columns)]
    for row in rows:
        if any(("\t" in value or "\n" in value) for value in row):
            raise SystemExit(f"a value contains a tab or newline: {row}")
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definition", type=Path, default=DEFINITION)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    with args.definition.open("rb") as handle:
        tables = build(tomllib.load(handle))
    stale = []
    for file_name, rows in tables.items():
        text = render(COLUMNS[file_name], rows)
        path = args.out / file_name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(file_name)
            continue
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"{path}: {len(rows)} rows")
    if stale:
        print(f"stale: {', '.join(stale)}; run scripts/build_demo_vocabulary.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
