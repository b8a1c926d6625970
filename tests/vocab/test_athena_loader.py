"""The Athena loader: the demo vocabulary and hand-written Athena folders into a real engine."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from medlake.engine import Engine
from medlake.errors import InputError
from medlake.schema import table_spec
from medlake.vocab import (
    ATHENA_FILES,
    concept_lookup_query,
    demo_vocabulary_dir,
    descendants_query,
    load_athena_vocabulary,
    load_demo_vocabulary,
    read_athena_file,
)

CONCEPT_HEADER = (
    "concept_id\tconcept_name\tdomain_id\tvocabulary_id\tconcept_class_id\t"
    "standard_concept\tconcept_code\tvalid_start_date\tvalid_end_date\tinvalid_reason"
)


def data_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)) - 1


def write(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_athena(directory: Path) -> Path:
    """A minimal Athena download: quotes in a name, upper-case headers, no CONCEPT_SYNONYM."""
    directory.mkdir(parents=True, exist_ok=True)
    write(
        directory,
        "CONCEPT.csv",
        [
            CONCEPT_HEADER.upper(),
            "\t".join(
                [
                    "1",
                    'The "quoted" disorder',
                    "Condition",
                    "ICD10CM",
                    "3-char nonbill code",
                    "C",
                    "X01",
                    "20200101",
                    "20991231",
                    "",
                ]
            ),
            "\t".join(
                [
                    "2",
                    'Child of "quoted',
                    "Condition",
                    "ICD10CM",
                    "4-char billing code",
                    "S",
                    "X01.1",
                    "20200101",
                    "20991231",
                    "",
                ]
            ),
            "\t".join(
                [
                    "3",
                    "Old code",
                    "Condition",
                    "ICD10CM",
                    "4-char billing code",
                    "",
                    "X01.9",
                    "19700101",
                    "20191231",
                    "D",
                ]
            ),
        ],
    )
    write(
        directory,
        "CONCEPT_ANCESTOR.csv",
        [
            "ancestor_concept_id\tdescendant_concept_id\tmin_levels_of_separation\tmax_levels_of_separation",
            "1\t1\t0\t0",
            "1\t2\t1\t1",
            "2\t2\t0\t0",
        ],
    )
    write(
        directory,
        "VOCABULARY.csv",
        [
            "vocabulary_id\tvocabulary_name\tvocabulary_reference\tvocabulary_version\tvocabulary_concept_id",
            "ICD10CM\tICD-10-CM\t\t\t0",
        ],
    )
    write(directory, "CONCEPT_CPT4.csv", ["concept_id\tconcept_name"])  # not a CDM table
    return directory


# ------------------------------------------------------------------ the demo vocabulary


def test_loading_the_demo_vocabulary_gives_the_row_counts_of_its_files(backend: Engine) -> None:
    summary = load_demo_vocabulary(backend)
    expected = {
        table: data_rows(demo_vocabulary_dir() / name)
        for name, table in ATHENA_FILES.items()
        if (demo_vocabulary_dir() / name).exists()
    }
    assert len(expected) == 8
    assert summary.rows == expected
    assert {table: backend.count(table) for table in expected} == expected
    assert summary.missing_files == ("DRUG_STRENGTH.csv",)
    assert backend.count("drug_strength") == 0


def test_loading_the_demo_vocabulary_again_replaces_rather_than_appends(backend: Engine) -> None:
    load_demo_vocabulary(backend)
    first = backend.count("concept")
    load_demo_vocabulary(backend)
    assert backend.count("concept") == first


def test_descendants_of_e11_are_the_type_2_codes_and_not_type_1(backend: Engine) -> None:
    load_demo_vocabulary(backend)
    e11 = backend.execute(concept_lookup_query(backend, "ICD10CM", ["E11"]))
    assert e11["concept_name"].to_pylist() == ["Type 2 diabetes mellitus"]
    codes = set(
        backend.execute(descendants_query(backend, e11["concept_id"].to_pylist()))[
            "concept_code"
        ].to_pylist()
    )
    assert {"E11", "E11.9", "E11.65", "E11.22"} <= codes
    assert "E10.9" not in codes
    assert all(code.startswith("E11") for code in codes)
    below = descendants_query(backend, e11["concept_id"].to_pylist(), include_self=False)
    assert "E11" not in backend.execute(below)["concept_code"].to_pylist()


def test_concept_lookup_takes_the_vocabulary_into_account(backend: Engine) -> None:
    load_demo_vocabulary(backend)
    found = backend.execute(concept_lookup_query(backend, "LOINC", ["4548-4", "E11.9", "nope"]))
    assert found["concept_code"].to_pylist() == ["4548-4"]
    gender = backend.execute(concept_lookup_query(backend, "Gender", ["F"]))
    assert gender["concept_id"].to_pylist() == [8532]


# ------------------------------------------------------------------ hand-written folders


def test_a_small_athena_folder_loads_with_quotes_dates_and_a_missing_file(
    backend: Engine, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    summary = load_athena_vocabulary(
        backend,
        tiny_athena(tmp_path / "athena"),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert summary.rows == {"concept": 3, "concept_ancestor": 3, "vocabulary": 1}
    assert "CONCEPT_SYNONYM.csv" in summary.missing_files
    assert summary.ignored_files == ("CONCEPT_CPT4.csv",)
    assert seen
    assert seen[-1][0] == seen[-1][1]

    concept = backend.table("concept")
    rows = backend.execute(concept.order_by(concept.concept_id)).to_pylist()
    assert [r["concept_name"] for r in rows] == [
        'The "quoted" disorder',
        'Child of "quoted',
        "Old code",
    ]
    assert rows[0]["valid_start_date"] == dt.date(2020, 1, 1)
    assert rows[2]["valid_end_date"] == dt.date(2019, 12, 31)
    assert [r["standard_concept"] for r in rows] == ["C", "S", None]
    assert [r["invalid_reason"] for r in rows] == [None, None, "D"]
    vocabulary = backend.execute(backend.table("vocabulary")).to_pylist()
    assert vocabulary[0]["vocabulary_reference"] is None


def test_loading_without_replace_appends(backend: Engine, tmp_path: Path) -> None:
    folder = tiny_athena(tmp_path / "athena")
    load_athena_vocabulary(backend, folder)
    load_athena_vocabulary(backend, folder, replace=False)
    assert backend.count("concept") == 6


def test_replace_empties_tables_whose_file_is_missing(backend: Engine, tmp_path: Path) -> None:
    load_demo_vocabulary(backend)
    assert backend.count("concept_synonym") > 0
    load_athena_vocabulary(backend, tiny_athena(tmp_path / "athena"))
    assert backend.count("concept_synonym") == 0
    assert backend.count("concept") == 3


def test_a_folder_without_concept_file_is_refused(backend: Engine, tmp_path: Path) -> None:
    folder = tiny_athena(tmp_path / "athena")
    (folder / "CONCEPT.csv").unlink()
    with pytest.raises(InputError, match=r"no CONCEPT\.csv"):
        load_athena_vocabulary(backend, folder)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (
            "4\tToo few fields\tCondition",
            r"CONCEPT\.csv: line 4: expected 10 tab-separated fields, found 3",
        ),
        (
            "4\tBad date\tCondition\tICD10CM\tc\tS\tX02\t2020-01-01\t20991231\t",
            r"CONCEPT\.csv: line 4: valid_start_date is '2020-01-01', expected a YYYYMMDD date",
        ),
        (
            "4x\tBad id\tCondition\tICD10CM\tc\tS\tX02\t20200101\t20991231\t",
            r"CONCEPT\.csv: line 4: concept_id is '4x'",
        ),
        (
            "\tNo id\tCondition\tICD10CM\tc\tS\tX02\t20200101\t20991231\t",
            r"CONCEPT\.csv: line 4: concept_id is empty but required",
        ),
    ],
)
def test_a_malformed_line_is_reported_with_file_and_line(
    backend: Engine, tmp_path: Path, bad_line: str, message: str
) -> None:
    folder = tiny_athena(tmp_path / "athena")
    lines = (folder / "CONCEPT.csv").read_text(encoding="utf-8").splitlines()
    write(folder, "CONCEPT.csv", [*lines[:3], bad_line, *lines[3:]])
    with pytest.raises(InputError, match=message):
        load_athena_vocabulary(backend, folder)


def test_a_header_without_tabs_is_refused_before_the_lake_is_touched(
    backend: Engine, tmp_path: Path
) -> None:
    load_demo_vocabulary(backend)
    before = backend.count("concept")
    folder = tiny_athena(tmp_path / "athena")
    write(folder, "CONCEPT.csv", [CONCEPT_HEADER.replace("\t", ","), "1,a,b,c,d,e,f,g,h,i"])
    with pytest.raises(InputError, match=r"CONCEPT\.csv: line 1: missing column"):
        load_athena_vocabulary(backend, folder)
    assert backend.count("concept") == before


# ------------------------------------------------------------------ streaming, no engine


def test_line_numbers_stay_right_across_streamed_batches(tmp_path: Path) -> None:
    good = "{i}\tname {i}\tCondition\tICD10CM\tc\tS\tX{i}\t20200101\t20991231\t"
    lines = [CONCEPT_HEADER] + [good.format(i=i) for i in range(1, 5001)]
    lines[4000] = lines[4000].replace("20200101", "20201301")  # month 13, on line 4001
    path = write(tmp_path, "CONCEPT.csv", lines)
    batches = read_athena_file(path, table_spec("concept"), block_size=4096)
    with pytest.raises(
        InputError, match=r"CONCEPT\.csv: line 4001: valid_start_date is '20201301'"
    ):
        for _ in batches:
            pass


def test_a_file_streams_in_typed_batches(tmp_path: Path) -> None:
    good = "{i}\tname {i}\tCondition\tICD10CM\tc\tS\tX{i}\t20200101\t20991231\t"
    path = write(
        tmp_path, "CONCEPT.csv", [CONCEPT_HEADER] + [good.format(i=i) for i in range(1, 3001)]
    )
    batches = list(read_athena_file(path, table_spec("concept"), block_size=4096))
    assert len(batches) > 1
    assert sum(b.num_rows for b in batches) == 3000
    assert str(batches[0].schema.field("valid_start_date").type) == "date32[day]"
    assert str(batches[0].schema.field("concept_id").type) == "int64"
