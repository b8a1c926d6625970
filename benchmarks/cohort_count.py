"""Benchmark: a 5-criterion cohort count with attrition vs one hand-written SQL statement.

Builds (once, reused) a workspace whose lake holds ``--persons`` persons with an
observation period each and about ``--events`` events per person (visits, conditions,
drugs, measurements in the ratio 2 : 2 : 3 : 5), coded with the demo vocabulary's
concepts; the rows are generated inside DuckDB from hashes of the row number, because
synthesizing and ingesting a million-patient hospital takes hours on 2 cores. Then times:

* ``medlake.service.cohort.count_cohort`` on the definition below, as a data steward
  (what ``medlake cohort count --exact`` and the API run: open the lake, resolve the
  concept sets, build and compile the definition, run it as one statement, close),
  twice per round: ``compiled`` with the statement cache emptied first (every call
  compiles, as the first count of a definition in a process does) and ``cached`` (the
  statement from the cache, as a definition counted again in the server or the UI);
  ``--repeat`` rounds alternating with the hand-written SQL, timing wall clock and the
  process's CPU;
* the same question written by hand as one SQL statement with the concept ids resolved
  beforehand, on the same DuckDB file and threads;
* with ``--postgres``, the same SQL on PostgreSQL 15 (Debian's package: a cluster is
  initialized in the work folder, started on a private socket, loaded by COPY, indexed on
  ``person_id``, analysed, and stopped again).

The definition: first type 2 diabetes diagnosis (E11 and below) with 365 days of prior
observation; rules: HbA1c > 7 % in the year before; metformin within 90 days after;
aged 18 or over; no insulin glargine ever before; at least 2 outpatient visits in the
year before. Prints medians, the ratios, and checks the three sets of counts agree.

Usage: ``python benchmarks/cohort_count.py --persons 1000000 --events 52`` (the issue's
size: 1M persons, 51M events), ``--workdir`` for where the lake lives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.service.cohort import count_cohort, parse_definition
from medlake.service.cohort_query import clear_cache
from medlake.service.workspace import init_workspace

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TABLES = ("person", "observation_period", "visit_occurrence", "condition_occurrence",
          "drug_exposure", "measurement")  # fmt: skip


def concept_ids(engine, vocabulary: str, codes: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    t = engine.table("concept")
    expr = t.filter((t.vocabulary_id == vocabulary) & t.concept_code.isin(codes)).concept_id
    return sorted(engine.execute(expr).column(0).to_pylist())


def leaf_ids(engine, vocabulary: str, pattern: str) -> list[int]:  # type: ignore[no-untyped-def]
    t = engine.table("concept")
    expr = t.filter((t.vocabulary_id == vocabulary) & t.concept_code.re_search(pattern)).concept_id
    return sorted(engine.execute(expr).column(0).to_pylist())


def build_lake(workdir: Path, persons: int, events: int) -> Path:
    """The benchmark workspace (made once per size)."""
    workspace = workdir / f"lake_{persons}_{events}"
    if (workspace / "medlake.toml").exists():
        return workspace
    shutil.rmtree(workspace, ignore_errors=True)
    init_workspace(workspace, name="cohort-bench")
    started = time.perf_counter()
    with open_workspace_engine(open_workspace(workspace)) as engine:
        conditions = leaf_ids(engine, "ICD10CM", r"^[A-DF-Z]\d\d\.\d")  # no E: diabetes
        drugs = leaf_ids(engine, "ATC", r"^[A-Z]\d\d[A-Z][A-Z]\d\d$")
        labs = leaf_ids(engine, "LOINC", r"^\d+-\d$")
        (e11_9,) = concept_ids(engine, "ICD10CM", ["E11.9"])
        (metformin,) = concept_ids(engine, "ATC", ["A10BA02"])
        (hba1c,) = concept_ids(engine, "LOINC", ["4548-4"])
        n_visit, n_cond, n_drug, n_meas = (max(1, round(events * k / 12)) for k in (2, 2, 3, 5))

        def pick(ids: list[int], salt: int) -> str:
            return f"list_element({ids}, (hash(i * {salt}) % {len(ids)})::INTEGER + 1)"

        def day(salt: int) -> str:  # a date inside the person's observation period
            return (f"DATE '2012-01-01' + ((hash(p * 13) % 900) "
                    f"+ (hash(i * {salt}) % (4500 - (hash(p * 13) % 900))))::INTEGER")  # fmt: skip

        def rows(n: int) -> str:
            return f"FROM (SELECT range AS i, range // {n} + 1 AS p FROM range({persons * n}))"

        statements = [
            f"""INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id,
                ethnicity_concept_id)
                SELECT range + 1, CASE WHEN hash(range) % 2 = 0 THEN 8507 ELSE 8532 END,
                1930 + (hash(range * 3) % 85)::INTEGER, 0, 0 FROM range({persons})""",
            f"""INSERT INTO observation_period
                SELECT range + 1, range + 1, DATE '2012-01-01' + (hash(range * 13) % 900)::INTEGER,
                DATE '2024-12-31', 32817 FROM range({persons})""",
            f"""INSERT INTO visit_occurrence (visit_occurrence_id, person_id, visit_concept_id,
                visit_start_date, visit_end_date, visit_type_concept_id)
                SELECT i, p,
                list_element([9202, 9202, 9202, 9201, 9203], (hash(i) % 5)::INTEGER + 1),
                {day(3)}, {day(3)}, 32817 {rows(n_visit)}""",
            f"""INSERT INTO condition_occurrence (condition_occurrence_id, person_id,
                condition_concept_id, condition_start_date, condition_type_concept_id)
                SELECT i, p,
                CASE WHEN hash(i * 5) % 30 = 0 THEN {e11_9} ELSE {pick(conditions, 7)} END,
                {day(11)}, 32817 {rows(n_cond)}""",
            f"""INSERT INTO drug_exposure (drug_exposure_id, person_id, drug_concept_id,
                drug_exposure_start_date, drug_exposure_end_date, drug_type_concept_id, days_supply)
                SELECT i, p,
                CASE WHEN hash(i * 5) % 4 = 0 THEN {metformin} ELSE {pick(drugs, 17)} END,
                {day(19)}, {day(19)} + 30, 32817, 30 {rows(n_drug)}""",
            f"""INSERT INTO measurement (measurement_id, person_id, measurement_concept_id,
                measurement_date, measurement_type_concept_id, value_as_number)
                SELECT i, p, CASE WHEN hash(i * 5) % 8 = 0 THEN {hba1c} ELSE {pick(labs, 23)} END,
                {day(29)}, 32856, 4 + (hash(i * 31) % 700) / 100.0 {rows(n_meas)}""",
        ]
        for statement in statements:
            engine.run_sql(statement)
        total = sum(engine.count(t) for t in TABLES[2:])
    print(f"built {persons:,} persons, {total:,} events in {time.perf_counter() - started:.1f} s")
    return workspace


DEFINITION = {
    "name": "benchmark: T2D, HbA1c, metformin, adult, no insulin, 2 visits",
    "concept_sets": [
        {"id": 1, "items": [{"vocabulary_id": "ICD10CM", "concept_code": "E11", "include_descendants": True}]},  # noqa: E501
        {"id": 2, "items": [{"vocabulary_id": "LOINC", "concept_code": "4548-4"}]},
        {"id": 3, "items": [{"vocabulary_id": "ATC", "concept_code": "A10BA02"}]},
        {"id": 4, "items": [{"vocabulary_id": "ATC", "concept_code": "A10AE04"}]},
        {"id": 5, "items": [{"concept_id": 9202}]},
    ],
    "primary_criteria": {
        "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}],
        "prior_observation_days": 365,
    },
    "inclusion_rules": [
        {"name": "HbA1c > 7 % in the year before", "expression": {"criteria": [{
            "criterion": {"domain": "measurement", "codeset_id": 2,
                          "value_as_number": {"op": "gt", "value": 7}},
            "start_window": {"start": -365, "end": 0}}]}},
        {"name": "metformin within 90 days after", "expression": {"criteria": [{
            "criterion": {"domain": "drug_exposure", "codeset_id": 3},
            "start_window": {"start": 0, "end": 90}}]}},
        {"name": "aged 18 or over", "expression": {"demographics": [
            {"age": {"op": "gte", "value": 18}}]}},
        {"name": "no insulin glargine before", "expression": {"criteria": [{
            "criterion": {"domain": "drug_exposure", "codeset_id": 4},
            "start_window": {"end": -1}, "occurrence": {"type": "exactly", "count": 0}}]}},
        {"name": "2 outpatient visits in the year before", "expression": {"criteria": [{
            "criterion": {"domain": "visit_occurrence", "codeset_id": 5},
            "start_window": {"start": -365, "end": -1},
            "occurrence": {"type": "at_least", "count": 2}}]}},
    ],
}  # fmt: skip


def hand_sql(t2d: list[int], hba1c: int, metformin: int, insulin: int) -> str:
    """The definition as one statement a person would write (concept ids resolved)."""
    codes = ", ".join(map(str, t2d))
    return f"""
WITH first_t2d AS (
  SELECT person_id, MIN(condition_start_date) AS start_date FROM condition_occurrence
  WHERE condition_concept_id IN ({codes}) GROUP BY person_id),
idx AS (
  SELECT f.person_id, f.start_date, o.observation_period_start_date AS op_start,
         o.observation_period_end_date AS op_end
  FROM first_t2d f JOIN observation_period o ON o.person_id = f.person_id
   AND f.start_date >= o.observation_period_start_date + 365
   AND f.start_date <= o.observation_period_end_date),
r1 AS (SELECT DISTINCT i.person_id FROM idx i JOIN measurement m ON m.person_id = i.person_id
  WHERE m.measurement_concept_id = {hba1c} AND m.value_as_number > 7
    AND m.measurement_date BETWEEN i.start_date - 365 AND i.start_date
    AND m.measurement_date BETWEEN i.op_start AND i.op_end),
r2 AS (SELECT DISTINCT i.person_id FROM idx i JOIN drug_exposure d ON d.person_id = i.person_id
  WHERE d.drug_concept_id = {metformin}
    AND d.drug_exposure_start_date BETWEEN i.start_date AND i.start_date + 90
    AND d.drug_exposure_start_date BETWEEN i.op_start AND i.op_end),
r3 AS (SELECT i.person_id FROM idx i JOIN person p ON p.person_id = i.person_id
  WHERE EXTRACT(YEAR FROM i.start_date) - p.year_of_birth >= 18),
r4 AS (SELECT i.person_id FROM idx i WHERE NOT EXISTS (
  SELECT 1 FROM drug_exposure d WHERE d.person_id = i.person_id AND d.drug_concept_id = {insulin}
    AND d.drug_exposure_start_date <= i.start_date - 1
    AND d.drug_exposure_start_date BETWEEN i.op_start AND i.op_end)),
r5 AS (SELECT i.person_id FROM idx i JOIN visit_occurrence v ON v.person_id = i.person_id
  WHERE v.visit_concept_id = 9202
    AND v.visit_start_date BETWEEN i.start_date - 365 AND i.start_date - 1
    AND v.visit_start_date BETWEEN i.op_start AND i.op_end
  GROUP BY i.person_id HAVING COUNT(*) >= 2),
flags AS (
  SELECT i.person_id, r1.person_id IS NOT NULL AS f1, r2.person_id IS NOT NULL AS f2,
         r3.person_id IS NOT NULL AS f3, r4.person_id IS NOT NULL AS f4,
         r5.person_id IS NOT NULL AS f5
  FROM idx i LEFT JOIN r1 ON r1.person_id = i.person_id LEFT JOIN r2 ON r2.person_id = i.person_id
  LEFT JOIN r3 ON r3.person_id = i.person_id LEFT JOIN r4 ON r4.person_id = i.person_id
  LEFT JOIN r5 ON r5.person_id = i.person_id)
SELECT COUNT(*) AS initial,
  SUM(CASE WHEN f1 THEN 1 ELSE 0 END) AS after_1,
  SUM(CASE WHEN f1 AND f2 THEN 1 ELSE 0 END) AS after_2,
  SUM(CASE WHEN f1 AND f2 AND f3 THEN 1 ELSE 0 END) AS after_3,
  SUM(CASE WHEN f1 AND f2 AND f3 AND f4 THEN 1 ELSE 0 END) AS after_4,
  SUM(CASE WHEN f1 AND f2 AND f3 AND f4 AND f5 THEN 1 ELSE 0 END) AS after_5
FROM flags"""


def _as_steward() -> contextlib.AbstractContextManager[object]:
    """Run the counts as a data steward (exact counts), as the API calls the service."""
    try:
        from medlake.access import Principal, Role
        from medlake.service.policy import acting_as
    except ImportError:  # a tree from before the access policy was inside the services
        return contextlib.nullcontext()
    return acting_as(Principal("benchmark", Role.STEWARD))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def run_postgres(workspace: Path, sql: str, repeat: int) -> tuple[float, list[int], float]:
    """Load the lake's tables into a fresh PostgreSQL 15 cluster and time ``sql`` there."""
    root = Path(tempfile.mkdtemp(prefix="pg-bench-"))
    os.chown(root, *_postgres_ids())
    data, socket = root / "data", root
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-k {socket} -c listen_addresses='' -c max_parallel_workers_per_gather=2"
    # The server keeps its output files open: give it a log file, not our pipes.
    log = root / "server.log"
    start = [*as_pg, PG_BIN / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start"]
    subprocess.run(start, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    psql = [*as_pg, "psql", "-h", str(socket), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]
    try:
        started = time.perf_counter()
        with open_workspace_engine(open_workspace(workspace)) as engine:
            for table in TABLES:
                csv = root / f"{table}.csv"
                engine.run_sql(f"COPY {table} TO '{csv}' (HEADER false)")
                os.chown(csv, *_postgres_ids())
                columns = engine.table(table).schema()
                ddl = ", ".join(f"{name} {_pg_type(str(t))}" for name, t in columns.items())
                subprocess.run([*psql, "-c", f"CREATE TABLE {table} ({ddl})"], check=True)
                subprocess.run([*psql, "-c", f"COPY {table} FROM '{csv}' (FORMAT csv)"], check=True)
                subprocess.run([*psql, "-c", f"CREATE INDEX ON {table} (person_id)"], check=True)
                csv.unlink()
        subprocess.run([*psql, "-c", "VACUUM ANALYZE"], check=True)
        load = time.perf_counter() - started

        def query() -> list[int]:
            out = subprocess.run(
                [*psql, "-F", ",", "-c", sql], check=True, capture_output=True, text=True
            )
            return [int(x) for x in out.stdout.strip().split(",")]

        median, counts = timed(query, repeat)
        return median, counts, load
    finally:
        subprocess.run(
            [*as_pg, PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _pg_type(ibis_type: str) -> str:
    base = ibis_type.lstrip("!")
    return {"int64": "bigint", "int32": "integer", "float64": "double precision",
            "date": "date", "timestamp": "timestamp", "string": "text"}.get(base, "text")  # fmt: skip  # noqa: E501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=50, help="events per person")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"))
    parser.add_argument("--postgres", action="store_true", help="also time PostgreSQL 15")
    args = parser.parse_args()
    workspace = build_lake(args.workdir, args.persons, args.events)
    definition = parse_definition(DEFINITION)
    with open_workspace_engine(open_workspace(workspace)) as engine:
        t2d = sorted(
            engine.execute(
                engine.table("concept_ancestor")
                .filter(lambda t: t.ancestor_concept_id.isin(concept_ids(engine, "ICD10CM", ["E11"])))  # noqa: E501
                .descendant_concept_id
            ).column(0).to_pylist()
        )  # fmt: skip
        (hba1c,) = concept_ids(engine, "LOINC", ["4548-4"])
        (metformin,) = concept_ids(engine, "ATC", ["A10BA02"])
        (insulin,) = concept_ids(engine, "ATC", ["A10AE04"])
    sql = hand_sql(t2d, hba1c, metformin, insulin)
    # Alternate the two, so that other jobs on the shared cores weigh on both alike; time
    # wall clock and this process's CPU (DuckDB's threads included).
    names = ("compiled", "cached", "hand")
    walls: dict[str, list[float]] = {k: [] for k in names}
    cpus: dict[str, list[float]] = {k: [] for k in names}
    results: dict[str, list[int]] = {}
    load = []
    with open_workspace_engine(open_workspace(workspace)) as engine, _as_steward():
        count_cohort(workspace, definition, exact=True)  # imports and first-use set-up
        for _ in range(args.repeat):
            for name in names:
                if name == "compiled":
                    clear_cache()
                wall, cpu = time.perf_counter(), _cpu()
                if name == "hand":
                    rows = engine.run_sql(sql)
                    assert rows is not None
                    results[name] = [int(x) for x in rows.to_pylist()[0].values()]
                else:
                    result = count_cohort(workspace, definition, exact=True)
                    results[name] = [result.initial, *(r.remaining for r in result.rules)]
                walls[name].append(time.perf_counter() - wall)
                cpus[name].append(_cpu() - cpu)
            load.append(os.getloadavg()[0])
    wall_s = {k: statistics.median(v) for k, v in walls.items()}
    cpu_s = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"persons {args.persons:,}, ~{args.events} events/person, {os.cpu_count()} cores, "
          f"median of {args.repeat}, load average {min(load):.1f}-{max(load):.1f}")  # fmt: skip
    print(f"counts (initial, after each rule): {results}")
    assert results["compiled"] == results["cached"] == results["hand"], "the counts disagree"
    labels = {
        "compiled": "medlake count_cohort, compiled (open, compile, run, close)",
        "cached": "medlake count_cohort, cached statement (open, run, close)",
        "hand": "hand-written SQL on DuckDB (one statement)",
    }
    for name in names:
        ratio = "" if name == "hand" else (
            f"  ratio to hand SQL {wall_s[name] / wall_s['hand']:.2f} wall, "
            f"{cpu_s[name] / cpu_s['hand']:.2f} CPU"
        )  # fmt: skip
        print(f"{labels[name]:62s} {wall_s[name]:.3f} s wall, {cpu_s[name]:.3f} s CPU{ratio}")
    ours = results["compiled"]
    medlake_s, hand_s = wall_s["compiled"], wall_s["hand"]
    if args.postgres:
        pg_s, pg_counts, load_s = run_postgres(workspace, sql, args.repeat)
        assert pg_counts == ours, f"PostgreSQL counts {pg_counts} differ"
        print(
            f"hand-written SQL on PostgreSQL 15: {pg_s:.3f} s (load + index + analyse {load_s:.0f} s)"  # noqa: E501
        )
        print(f"ratio PostgreSQL / DuckDB hand SQL: {pg_s / hand_s:.2f}; medlake / PostgreSQL: "
              f"{medlake_s / pg_s:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
