"""The catalogue: check types over the CDM specs, thresholds from editable files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from medlake.errors import ConfigError
from medlake.quality import CHECK_TYPES, build_catalogue, load_thresholds
from medlake.quality.catalogue import plausible_values
from medlake.schema import tables_in_group

CDM = tables_in_group("cdm")


def test_over_200_checks_of_every_type_and_category() -> None:
    checks = build_catalogue(CDM)
    assert len(checks) >= 200
    assert {c.check_type for c in checks} == set(CHECK_TYPES)
    assert {c.type.category for c in checks} == {"conformance", "completeness", "plausibility"}
    assert {c.type.level for c in checks} == {"table", "field", "concept"}
    assert len({c.check_id for c in checks}) == len(checks)


def test_checks_follow_the_table_specs() -> None:
    checks = {c.check_id for c in build_catalogue(CDM)}
    for table in CDM:
        assert f"cdm_table.{table.name}" in checks
        for column in table.columns:
            assert f"cdm_field.{table.name}.{column.name}" in checks
            required = f"is_required.{table.name}.{column.name}" in checks
            assert required == column.required
            if column.foreign_key and column.foreign_key[0] == "concept":
                assert f"fk_concept.{table.name}.{column.name}" in checks
        if len(table.primary_key) == 1:
            assert f"is_primary_key.{table.name}.{table.primary_key[0]}" in checks


def test_every_plausible_value_row_becomes_a_range_and_a_unit_check() -> None:
    kinds = Counter(c.check_type for c in build_catalogue(CDM))
    assert kinds["plausible_value_range"] == len(plausible_values())
    assert kinds["plausible_unit_concept_ids"] == len(plausible_values())


def test_thresholds_type_then_pattern_then_exact_and_workspace_overrides(tmp_path: Path) -> None:
    checks = {c.check_id: c for c in load_thresholds().apply(build_catalogue(CDM))}
    shipped = "standard_concept_record_completeness.measurement.measurement_concept_id"
    assert checks[shipped].threshold_pct == 1  # exact id, over the type's 5
    assert (
        checks[
            "standard_concept_record_completeness.visit_occurrence.visit_concept_id"
        ].threshold_pct
        == 5
    )
    assert (
        checks["plausible_value_range.measurement.value_as_number.LOINC:718-7"].threshold_pct == 0
    )

    override = tmp_path / "thresholds.toml"
    override.write_text(
        f'[types]\nis_required = 2.5\n[checks]\n"plausible_value_range.*" = 3\n"{shipped}" = 7\n',
        encoding="utf-8",
    )
    thresholds = load_thresholds(override)
    checks = {c.check_id: c for c in thresholds.apply(build_catalogue(CDM))}
    assert checks["is_required.person.person_id"].threshold_pct == 2.5
    assert (
        checks["plausible_value_range.measurement.value_as_number.LOINC:718-7"].threshold_pct == 3
    )
    assert checks[shipped].threshold_pct == 7
    assert thresholds.sha256 != load_thresholds().sha256


@pytest.mark.parametrize(
    "text",
    ["[types]\nis_required = 120\n", "[types]\nno_such_type = 1\n", "[oops]\n", "[types\n"],
)
def test_bad_threshold_files_are_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"thresholds\.toml"):
        load_thresholds(path)


def test_on_an_empty_lake_every_check_runs_and_the_run_is_kept() -> None:
    import datetime as dt

    from medlake.engine.backends.duckdb import DuckDBEngine
    from medlake.quality import run_checks, save_run
    from medlake.schema import ALL_TABLES

    checks = load_thresholds().apply(build_catalogue(CDM))
    with DuckDBEngine() as engine:
        engine.create_schema(ALL_TABLES)
        results = run_checks(engine, checks)
        assert {r.status for r in results} == {"pass", "n/a"}
        # nothing to count in an empty table: no rows checked, so not applicable
        assert all(r.rows_total == 0 for r in results if r.status == "n/a")
        run_id = save_run(engine, results, started=dt.datetime(2026, 1, 1), trigger="test")
        assert engine.count("qc_result") == len(checks)
        assert engine.execute(engine.table("qc_run")).to_pylist()[0]["run_id"] == run_id
