"""Feature specs: refused with the file and field named, columns named predictably."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medlake.errors import InputError, UsageError
from medlake.service.extract import extract_members
from medlake.service.extract_spec import load_feature_spec, parse_feature_spec


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return path


def test_unknown_fields_are_refused_with_their_path(tmp_path: Path) -> None:
    path = _write(tmp_path, {"conditions": [{"name": "x", "codeset_id": 1, "windw": {}}]})
    with pytest.raises(InputError, match=r"spec\.json: conditions\.0\.windw"):
        load_feature_spec(path)


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(InputError, match="window start 10 is after its end 0"):
        parse_feature_spec({"drugs": [{"name": "d", "codeset_id": 1, "window": {"start": 10}}]})


def test_two_features_may_not_write_the_same_column() -> None:
    spec = {
        "drugs": [{"name": "statin", "codeset_id": 1}],
        "conditions": [{"name": "statin_count", "codeset_id": 2}],
    }
    with pytest.raises(InputError, match="'statin_count' is defined twice"):
        parse_feature_spec(spec)


def test_column_names_of_each_feature_kind() -> None:
    spec = parse_feature_spec(
        {
            "conditions": [{"name": "ckd", "codeset_id": 1}],
            "drugs": [{"name": "statin", "codeset_id": 2}],
            "measurements": [{"name": "hba1c", "codeset_id": 3, "stats": ["latest", "count"]}],
            "genotypes": [{"variant": "1:25271:T:C", "allele": "C"}],
            "expression": [{"gene": "ENSG1", "measure": "cpm"}],
        }
    )
    assert spec.feature_columns() == [
        "ckd",
        "statin_exposed",
        "statin_count",
        "statin_first_day",
        "hba1c_latest",
        "hba1c_count",
        "v_1_25271_T_C_C",
        "ENSG1_cpm",
    ]


def test_quasi_identifiers_must_be_released_columns() -> None:
    spec = parse_feature_spec(
        {"demographics": {"region": False}, "quasi_identifiers": ["age_band", "region"]}
    )
    with pytest.raises(UsageError, match="region"):
        spec.quasi_identifier_columns()
    default = parse_feature_spec({"demographics": {"birth_year": False}})
    assert default.quasi_identifier_columns() == ["age_band", "sex", "region"]


def test_an_unknown_concept_set_is_named(hospital_lake, tmp_path: Path) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    members = pa.table(
        {"person_id": pa.array([], pa.int64()), "cohort_start_date": pa.array([], pa.date32()),
         "cohort_end_date": pa.array([], pa.date32())}
    )  # fmt: skip
    spec = parse_feature_spec({"conditions": [{"name": "x", "codeset_id": 42}]})
    with pytest.raises(UsageError, match="no concept set with id 42"):
        extract_members(workspace, members, spec, tmp_path / "out")


def test_an_empty_cohort_gives_an_empty_dataset(hospital_lake, tmp_path: Path) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    members = pa.table(
        {"person_id": pa.array([], pa.int64()), "cohort_start_date": pa.array([], pa.date32()),
         "cohort_end_date": pa.array([], pa.date32())}
    )  # fmt: skip
    spec = parse_feature_spec(
        {
            "concept_sets": [
                {"id": 1, "items": [{"vocabulary_id": "ICD10CM", "concept_code": "I10"}]}
            ],
            "conditions": [{"name": "htn", "codeset_id": 1}],
            "measurements": [{"name": "lab", "codeset_id": 1}],
        }
    )
    result = extract_members(workspace, members, spec, tmp_path / "out")
    assert result.rows == 0
    assert result.k_achieved is None
    table = pq.read_table(tmp_path / "out" / "dataset.parquet")
    assert table.num_rows == 0
    assert "htn" in table.column_names
