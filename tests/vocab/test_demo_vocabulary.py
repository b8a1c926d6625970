"""The bundled demo vocabulary, read straight from its files (no engine, no loader).

The contract with the synthetic hospital is docs/synthetic-hospital-codes.md: every code
there must be in CONCEPT.csv with that vocabulary and name. The files are read with the
standard library's csv module, independently of the loader under test elsewhere.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from medlake.vocab import demo_vocabulary_dir

REPO = Path(__file__).resolve().parents[2]
CODES_DOC = REPO / "docs" / "synthetic-hospital-codes.md"
DATA = demo_vocabulary_dir()
CHINESE = 4182948
LOCAL_MIN, INT32_MAX = 2_000_000_000, 2**31 - 1


def read_tsv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def contract_codes() -> list[tuple[str, str, str, str | None]]:
    """(vocabulary_id, code, name, OMOP concept_id or None) for every code in the doc."""
    sections: dict[str, list[str]] = defaultdict(list)
    heading = ""
    for line in CODES_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line
        elif line.strip() and not line.startswith(("#", "Hierarchy:")):
            sections[heading].append(line)
    out: list[tuple[str, str, str, str | None]] = []
    for heading, lines in sections.items():
        if "ICD-10-CM" in heading or "ICD-9-CM" in heading:
            vocabulary = "ICD10CM" if "ICD-10-CM" in heading else "ICD9Proc"
            for line in lines:
                code, name, _chinese = re.fullmatch(r"(\S+) (.+) \(([^()]*)\)", line).groups()
                out.append((vocabulary, code, name, None))
        elif "LOINC" in heading:
            for line in lines:
                if line.startswith("Qualitative answers"):
                    for code, name in re.findall(r"(LA\d+-\d) ([^,.]+)", line):
                        out.append(("LOINC", code, name, None))
                    continue
                code, name, _unit = re.fullmatch(r"(\S+) (.+) \(([^()]*)\)", line).groups()
                out.append(("LOINC", code, name, None))
        elif "ATC" in heading:
            for line in lines:
                pattern = r"([A-Z]\d\d[A-Z]{2}\d\d) ([^()]+?) \(([^()]+)\)"
                for code, name, _chinese in re.findall(pattern, line):
                    out.append(("ATC", code, name, None))
        elif "OMOP standard concepts" in heading:
            for line in lines:
                if line.startswith("Specimen"):
                    continue
                label, rest = line.split(":", 1)
                vocabulary = {"Gender": "Gender", "Visit": "Visit", "Type concept": "Type Concept"}[
                    label
                ]
                for concept_id, name in re.findall(
                    r"(\d{4,}) ([A-Za-z][A-Za-z ]*?)(?=,|\s\(|$)", rest
                ):
                    out.append((vocabulary, "", name, concept_id))
    return out


def contract_units() -> set[str]:
    """The UCUM units the doc's LOINC lines use (the first word of each alternative)."""
    units: set[str] = set()
    in_loinc = False
    for line in CODES_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_loinc = "LOINC" in line
            continue
        match = re.fullmatch(r"\S+ .+ \(([^()]*)\)", line) if in_loinc else None
        if match is None or match.group(1).startswith(("qualitative", "panel")):
            continue
        units |= {part.split()[0] for part in match.group(1).split(";")}
    return units


CONCEPTS = read_tsv("CONCEPT.csv")
BY_ID = {int(row["concept_id"]): row for row in CONCEPTS}
BY_CODE = {(row["vocabulary_id"], row["concept_code"]): int(row["concept_id"]) for row in CONCEPTS}


def ancestors_of(concept_id: int) -> dict[int, int]:
    """{ancestor_concept_id: min_levels_of_separation} of one concept, from CONCEPT_ANCESTOR."""
    return {
        int(r["ancestor_concept_id"]): int(r["min_levels_of_separation"])
        for r in read_tsv("CONCEPT_ANCESTOR.csv")
        if int(r["descendant_concept_id"]) == concept_id
    }


def test_the_contract_doc_parses_to_every_code_it_lists() -> None:
    codes = contract_codes()
    by_vocabulary = defaultdict(int)
    for vocabulary, *_ in codes:
        by_vocabulary[vocabulary] += 1
    assert by_vocabulary == {
        "ICD10CM": 30, "LOINC": 33, "ATC": 28, "ICD9Proc": 12,
        "Gender": 3, "Visit": 3, "Type Concept": 2,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("vocabulary", "code", "name", "concept_id"),
    contract_codes(),
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_every_contract_code_is_in_the_demo_concept_file(
    vocabulary: str, code: str, name: str, concept_id: str | None
) -> None:
    if concept_id is not None:  # OMOP's own concepts: the doc gives the real id
        row = BY_ID[int(concept_id)]
        assert (row["vocabulary_id"], row["concept_name"]) == (vocabulary, name)
        return
    row = BY_ID[BY_CODE[(vocabulary, code)]]
    assert row["concept_name"] == name
    assert row["standard_concept"] == "S"
    assert row["invalid_reason"] == ""


def test_every_unit_the_contract_uses_is_a_ucum_concept() -> None:
    units = contract_units()
    assert {"%", "mmol/L", "g/L", "g/dL", "10*9/L", "mm[Hg]", "/min"} <= units
    missing = sorted(unit for unit in units if ("UCUM", unit) not in BY_CODE)
    assert missing == []


def test_concept_ids_are_unique_and_real_only_where_the_contract_gives_them() -> None:
    ids = [int(row["concept_id"]) for row in CONCEPTS]
    assert len(ids) == len(set(ids))
    real = {8507, 8532, 8551, 9201, 9202, 9203, 32817, 32856, CHINESE,
            32882, 32902, 32908, 4132161, 4171047, 4142048, 4292110, 4180186, 32678}  # fmt: skip
    assert {i for i in ids if i < LOCAL_MIN} == real
    assert all(i <= INT32_MAX for i in ids)


def test_codes_are_unique_within_each_vocabulary() -> None:
    keys = [
        (row["vocabulary_id"], row["concept_code"])
        for row in CONCEPTS
        if row["domain_id"] != "Metadata"
    ]
    assert len(keys) == len(set(keys))


def test_e11_9_sits_under_e11_the_diabetes_block_and_the_endocrine_chapter() -> None:
    ancestors = ancestors_of(BY_CODE[("ICD10CM", "E11.9")])
    expected = {"E11.9": 0, "E11": 1, "E08-E13": 2, "E00-E89": 3}
    assert {BY_ID[a]["concept_code"]: level for a, level in ancestors.items()} == expected
    assert BY_ID[BY_CODE[("ICD10CM", "E08-E13")]]["concept_name"] == "Diabetes mellitus"


def test_metformin_has_its_four_atc_levels_as_ancestors() -> None:
    ancestors = ancestors_of(BY_CODE[("ATC", "A10BA02")])
    codes = {BY_ID[a]["concept_code"]: level for a, level in ancestors.items()}
    assert codes == {"A10BA02": 0, "A10BA": 1, "A10B": 2, "A10": 3, "A": 4}
    classes = {BY_ID[a]["concept_class_id"] for a in ancestors}
    assert classes == {"ATC 1st", "ATC 2nd", "ATC 3rd", "ATC 4th", "ATC 5th"}


def test_standard_and_classification_concepts_follow_the_documented_demo_rules() -> None:
    rules = {
        ("ICD10CM", "E11.9"): ("Condition", "S"),
        ("ICD10CM", "E11"): ("Condition", "C"),
        ("ICD10CM", "E00-E89"): ("Condition", "C"),
        ("ATC", "A10BA02"): ("Drug", "S"),
        ("ATC", "A10BA"): ("Drug", "C"),
        ("ICD9Proc", "36.07"): ("Procedure", "S"),
        ("ICD9Proc", "36"): ("Procedure", "C"),
        ("LOINC", "4548-4"): ("Measurement", "S"),
        ("LOINC", "LA6576-8"): ("Meas Value", "S"),
        ("UCUM", "mmol/L"): ("Unit", "S"),
    }
    for key, expected in rules.items():
        row = BY_ID[BY_CODE[key]]
        assert (row["domain_id"], row["standard_concept"]) == expected, key


def test_concept_ancestor_is_the_transitive_closure_of_is_a() -> None:
    parents: dict[int, set[int]] = defaultdict(set)
    subsumes: set[tuple[int, int]] = set()
    for row in read_tsv("CONCEPT_RELATIONSHIP.csv"):
        a, b = int(row["concept_id_1"]), int(row["concept_id_2"])
        if row["relationship_id"] == "Is a":
            parents[a].add(b)
        elif row["relationship_id"] == "Subsumes":
            subsumes.add((b, a))
    is_a = {(child, parent) for child, ps in parents.items() for parent in ps}
    assert is_a
    assert is_a == subsumes

    def closure(concept_id: int) -> dict[int, int]:
        levels, frontier, depth = {}, {concept_id}, 0
        while frontier:
            depth += 1
            frontier = {p for c in frontier for p in parents.get(c, ())}
            for p in frontier:
                levels.setdefault(p, depth)
        return levels

    expected = {
        (ancestor, concept_id, level)
        for concept_id in BY_ID
        for ancestor, level in closure(concept_id).items()
    }
    expected |= {(c, c, 0) for c, row in BY_ID.items() if row["standard_concept"] in ("S", "C")}
    rows = read_tsv("CONCEPT_ANCESTOR.csv")
    actual = {
        (
            int(r["ancestor_concept_id"]),
            int(r["descendant_concept_id"]),
            int(r["min_levels_of_separation"]),
        )
        for r in rows
    }
    assert actual == expected
    assert len(rows) == len(actual)  # no duplicate pairs
    assert all(r["min_levels_of_separation"] == r["max_levels_of_separation"] for r in rows)


def test_the_blood_pressure_panel_contains_systolic_and_diastolic() -> None:
    panel = BY_CODE[("LOINC", "85354-9")]
    members = {
        BY_ID[int(r["concept_id_2"])]["concept_code"]
        for r in read_tsv("CONCEPT_RELATIONSHIP.csv")
        if int(r["concept_id_1"]) == panel and r["relationship_id"] == "Panel contains"
    }
    assert members == {"8480-6", "8462-4"}


def test_chinese_names_are_synonyms_in_chinese() -> None:
    synonyms = read_tsv("CONCEPT_SYNONYM.csv")
    assert {int(r["language_concept_id"]) for r in synonyms} == {CHINESE}
    names = {(int(r["concept_id"]), r["concept_synonym_name"]) for r in synonyms}
    assert (BY_CODE[("ICD10CM", "E11.9")], "2型糖尿病不伴有并发症") in names
    assert (BY_CODE[("ATC", "A10BA02")], "二甲双胍") in names
    assert (BY_CODE[("ICD9Proc", "36.07")], "冠状动脉药物洗脱支架置入") in names
    assert BY_ID[CHINESE]["concept_name"] == "Chinese language"


def test_every_reference_between_the_files_resolves() -> None:
    vocabularies = {r["vocabulary_id"]: r for r in read_tsv("VOCABULARY.csv")}
    domains = {r["domain_id"]: r for r in read_tsv("DOMAIN.csv")}
    classes = {r["concept_class_id"]: r for r in read_tsv("CONCEPT_CLASS.csv")}
    relationships = {r["relationship_id"]: r for r in read_tsv("RELATIONSHIP.csv")}
    for row in CONCEPTS:
        assert row["vocabulary_id"] in vocabularies
        assert row["domain_id"] in domains
        assert row["concept_class_id"] in classes
    for table, column in (
        (vocabularies, "vocabulary_concept_id"),
        (domains, "domain_concept_id"),
        (classes, "concept_class_concept_id"),
        (relationships, "relationship_concept_id"),
    ):
        assert all(int(r[column]) in BY_ID for r in table.values()), column
    for r in relationships.values():
        assert (
            relationships[r["reverse_relationship_id"]]["reverse_relationship_id"]
            == (r["relationship_id"])
        )
    for r in read_tsv("CONCEPT_RELATIONSHIP.csv"):
        assert int(r["concept_id_1"]) in BY_ID
        assert int(r["concept_id_2"]) in BY_ID
        assert r["relationship_id"] in relationships
    for r in read_tsv("CONCEPT_SYNONYM.csv"):
        assert int(r["concept_id"]) in BY_ID


def test_files_use_athena_dates_and_no_quoting() -> None:
    for row in CONCEPTS:
        assert re.fullmatch(r"\d{8}", row["valid_start_date"])
        assert row["valid_end_date"] == "20991231"
    text = (DATA / "CONCEPT.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0].split("\t")[:2] == ["concept_id", "concept_name"]
    assert '"' not in text  # Athena does not quote; none of the demo names needs it


def test_generated_files_are_up_to_date_with_the_definition(tmp_path: Path) -> None:
    script = REPO / "scripts" / "build_demo_vocabulary.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    # and building twice gives byte-identical files
    subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for path in sorted(tmp_path.glob("*.csv")):
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name
