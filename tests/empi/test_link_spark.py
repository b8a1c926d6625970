"""Linking on a Spark-engine workspace gives the persons linking on DuckDB gives.

The shared 400-patient ``hospital_lake`` is linked twice from the same records: on its
DuckDB lake, and on a Spark lake (real PySpark in local mode, the test session's one
Spark session) into which the identifiers and a few clinical tables were copied. Both
runs score with the same stored model, trained once on DuckDB (the stored model is one
JSON for every engine; training on Spark is measured in ``benchmarks/empi_spark.py``),
so Splink's SQL on Spark — the model's conditions rewritten into Spark SQL, Splink's
similarity UDFs from its bundled jar — must give exactly DuckDB's clusters and person
ids; a first link of all but one source system, then an incremental link of that system,
must give the same persons on both engines too, as must a merge and its unmerge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from medlake.config import open_workspace, write_settings
from medlake.empi import store
from medlake.engine import Engine
from medlake.service import empi
from medlake.service.workspace import open_lake, upgrade_schema_on

pytestmark = [pytest.mark.slow, pytest.mark.spark]

# The tables a link reads or moves rows of; the Spark lake gets these rows (the others
# exist, empty; fewer keep the copy into Spark short). ``source_record`` is the
# provenance by which an unmerge sends each visit back to its own source patient.
COPIED = ("person", "source_patient", "pii_person", "visit_occurrence", "source_record")
WITHHELD = "lis"  # the source system linked incrementally


def _rows(workspace: Path, table: str, *, withheld: bool) -> object:
    """``table``'s rows in a DuckDB workspace: without, or only, the withheld system's."""
    with open_lake(open_workspace(workspace)) as engine:
        t = engine.table(table)
        if "source_system" in t.columns:
            is_withheld = t.source_system == WITHHELD
        else:  # person-keyed rows: withheld when every source patient of theirs is
            patients = engine.table("source_patient")
            kept = patients.filter(patients.source_system != WITHHELD).person_id
            is_withheld = ~t.person_id.isin(kept)
        return engine.execute(t.filter(is_withheld if withheld else ~is_withheld))


def _withhold(workspace: Path) -> None:
    """Delete the withheld system's source patients from a DuckDB workspace."""
    parts = {table: _rows(workspace, table, withheld=True) for table in COPIED}
    with open_lake(open_workspace(workspace)) as engine:
        for table, rows in parts.items():
            if rows.num_rows:
                key = "person_id" if "source_system" not in rows.column_names else None
                t = engine.table(table)
                if key:
                    engine.delete_where(table, t.person_id.isin(rows.column(key).to_pylist()))
                else:
                    engine.delete_where(table, t.source_system == WITHHELD)


def _load(target: Path, source: Path, *, withheld: bool) -> None:
    """Load the (withheld or other) rows of the copied tables of ``source`` into ``target``."""
    parts = {table: _rows(source, table, withheld=withheld) for table in COPIED}
    with open_lake(open_workspace(target)) as engine:
        for table, rows in parts.items():
            if rows.num_rows:
                engine.load_arrow(table, rows)


def _persons(workspace: Path) -> dict[str, int]:
    with open_lake(open_workspace(workspace)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    return {f"{r['source_system']}:{r['source_patient_id']}": r["person_id"] for r in rows}


def _copy_model(source: Path, target: Path) -> None:
    with open_lake(open_workspace(source)) as engine:
        model = store.active_model(engine)
    assert model is not None
    with open_lake(open_workspace(target)) as engine:
        store.save_model(engine, model.settings, records=model.records, actor="test")


@pytest.fixture(scope="module")
def workspaces(
    hospital_lake, spark_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """(a DuckDB workspace, a Spark workspace) with the hospital minus the LIS patients,
    and the same trained model in both; the Spark lake is the test session's warehouse,
    emptied of this module's tables afterwards."""
    from medlake.access import Principal, Role
    from medlake.access.context import acting_as

    root = tmp_path_factory.mktemp("empi-spark")
    duck = hospital_lake.copy(root / "duck")
    spark = hospital_lake.copy(root / "spark")
    settings = open_workspace(spark).settings
    settings.engine.kind = "spark"
    settings.engine.spark_warehouse = str(spark_engine.warehouse_dir)  # type: ignore[attr-defined]
    write_settings(spark / "medlake.toml", settings)
    before = set(spark_engine.list_tables())
    upgrade_schema_on(spark_engine)
    with acting_as(Principal("test-steward", Role.STEWARD)):
        # The model, trained on all the records (DuckDB), then the lake without the LIS.
        empi.train_workspace(duck)
        _copy_model(duck, spark)
        _withhold(duck)
        _load(spark, hospital_lake.workspace, withheld=False)
    with open_lake(open_workspace(hospital_lake.workspace)) as engine:
        users = engine.execute(engine.table("access_user"))  # the login, its admin
    with open_lake(open_workspace(spark)) as engine:
        engine.load_arrow("access_user", users)
    yield duck, spark
    for name in set(spark_engine.list_tables()) - before:
        spark_engine.drop_table(name)


def test_spark_link_gives_duckdbs_persons_then_incrementally_too(
    workspaces: tuple[Path, Path], hospital_lake, tmp_path: Path
) -> None:
    duck, spark = workspaces
    first = {}
    for name, workspace in (("duckdb", duck), ("spark", spark)):
        outcome = empi.link_workspace(workspace)
        assert outcome.mode == "full"
        assert not outcome.trained
        first[name] = (outcome.links, outcome.review_queue, _persons(workspace))
    assert first["spark"] == first["duckdb"]
    assert first["spark"][0] > 200  # pairs linked: the comparison is not vacuous
    persons_before = first["spark"][2]
    assert len(set(persons_before.values())) < len(persons_before)

    # The LIS arrives: linked incrementally against the persons already there.
    _load(duck, hospital_lake.workspace, withheld=True)
    _load(spark, hospital_lake.workspace, withheld=True)
    second = {}
    for name, workspace in (("duckdb", duck), ("spark", spark)):
        outcome = empi.link_workspace(workspace)
        assert outcome.mode == "incremental"
        assert 0 < outcome.new_records < outcome.records
        second[name] = _persons(workspace)
    assert second["spark"] == second["duckdb"]
    score = empi.score_against_truth(spark, hospital_lake.hospital)
    assert score.precision >= 0.995
    assert score.recall_with_identifiers >= 0.995


def test_merge_and_unmerge_on_spark(workspaces: tuple[Path, Path]) -> None:
    _, spark = workspaces
    persons = _persons(spark)
    if len(set(persons.values())) == len(persons):  # run alone: link first
        empi.link_workspace(spark)
        persons = _persons(spark)
    groups: dict[int, set[str]] = {}
    for key, person in persons.items():
        groups.setdefault(person, set()).add(key)
    (keep, a), (other, b) = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:2]
    with open_lake(open_workspace(spark)) as engine:
        visits_before = _visits(engine)
    report = empi.merge_persons(spark, keep, other, actor="test-steward")
    merged = _persons(spark)
    assert {merged[k] for k in a | b} == {keep}
    with open_lake(open_workspace(spark)) as engine:
        moved = _visits(engine)
    assert other not in moved.values()
    assert {v for v, p in visits_before.items() if p == other} <= {
        v for v, p in moved.items() if p == keep
    }
    empi.unmerge_operation(spark, report.operation_id, actor="test-steward")
    assert _persons(spark) == persons
    with open_lake(open_workspace(spark)) as engine:
        assert _visits(engine) == visits_before


def _visits(engine: Engine) -> dict[int, int]:
    rows = engine.execute(
        engine.table("visit_occurrence").select("visit_occurrence_id", "person_id")
    )
    return dict(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))


@pytest.mark.acting_as(None)  # the CLI resolves its user itself ($MEDLAKE_USER)
def test_a_spark_workspace_is_linked_from_the_cli(workspaces: tuple[Path, Path]) -> None:
    """``medlake empi link`` on the Spark workspace, as a steward."""
    from typer.testing import CliRunner

    from medlake.cli.main import app
    from medlake.service import access

    _, spark = workspaces
    access.add_user(spark, "spark-steward", "steward", as_user=access.login_name())
    result = CliRunner().invoke(
        app, ["empi", "link", "--json", "-w", str(spark)], env={"MEDLAKE_USER": "spark-steward"}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mode"] in ("nothing", "full")  # "full": run alone
