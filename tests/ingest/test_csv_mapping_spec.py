"""The mapping file is checked before any row is read; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlake.errors import InputError
from medlake.ingest.csv_mapping import find_entry
from medlake.ingest.mapping_spec import PATIENTS, load_mapping

SHIPPED = Path(__file__).resolve().parents[2] / "src/medlake/synth/data/his_mapping.toml"

VALID = """
[defaults]
encoding = "gb18030"
[[file]]
match = "visits.csv"
target = "visit_occurrence"
record_id = "JZH"
patient_id = "BRID"
[file.columns]
visit_start_date = "JZRQ"
visit_type_concept_id = 32817
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "his.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_his_mapping_is_valid() -> None:
    spec = load_mapping(SHIPPED)
    assert [entry.target for entry in spec.file] == [
        PATIENTS,
        "visit_occurrence",
        "condition_occurrence",
        "drug_exposure",
    ]
    assert spec.file[3].encoding == "gb18030"
    assert spec.file[1].date_formats["JZRQ"] == "%Y-%m-%d %H:%M:%S"  # from [defaults]


def test_defaults_apply_to_every_file(tmp_path: Path) -> None:
    spec = load_mapping(write(tmp_path, VALID))
    assert spec.file[0].encoding == "gb18030"
    assert find_entry(spec, "exports/2024/visits.csv") is spec.file[0]
    assert find_entry(spec, "visits.txt") is None


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("visit_start_date", "visit_start_dat"), "file[0]", "did you mean visit_start_date"),
        (('"visit_occurrence"', '"visits"'), "file[0].target", "unknown target"),
        (('encoding = "gb18030"', 'encoding = "latin-1"'), "file[0].encoding", "utf-8"),
        (("visit_type_concept_id = 32817", "visit_type_concept_id = { map = {} }"),
         "file[0].columns.visit_type_concept_id", "exactly one of column"),
        (('visit_start_date = "JZRQ"', 'visit_start_date = { column = "JZRQ", vocabulary = "X" }'),
         "file[0]", "vocabulary is only for code columns"),
        (('record_id = "JZH"\n', ""), "file[0]", "record_id is required"),
        (('patient_id = "BRID"\n', ""), "file[0].patient_id", "required"),
        (('record_id = "JZH"', 'record_id = "{JZH"'), "file[0]", "bad template"),
        (("[[file]]", "[[files]]"), "files", "Extra inputs"),
    ],
)  # fmt: skip
def test_a_bad_mapping_names_the_file_and_the_key(
    tmp_path: Path, change: tuple[str, str], key: str, words: str
) -> None:
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(InputError) as raised:
        load_mapping(path)
    message = raised.value.message
    assert message.startswith(f"mapping {path}: ")
    assert f" {key}: " in message or f" {key}." in message, message
    assert words in message


def test_broken_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "\n[[file]\n")
    with pytest.raises(InputError, match=r"his\.toml: not valid TOML .*line 13"):
        load_mapping(path)
