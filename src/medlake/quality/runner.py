"""Running checks on the engine: schema checks from the lake's schema, the rest grouped.

Checks sharing a base (:func:`medlake.quality.queries.base_key`) run as one aggregate
query; if that query fails, its checks run one by one so the failure is pinned on the
check that caused it (status ``error``, with the message) and the others still count.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import ibis.expr.types as ir

from medlake.engine import Engine, ibis_type
from medlake.errors import MedlakeError
from medlake.log import get_logger
from medlake.quality.checks import ERROR, NOT_APPLICABLE, Check, CheckResult, status_for
from medlake.quality.queries import (
    SCHEMA_TYPES,
    Compiled,
    base_key,
    base_table,
    compile_check,
    joins_needed,
    quarantine_query,
)

logger = get_logger(__name__)

Progress = Callable[[int, int], None]


def run_checks(
    engine: Engine,
    checks: Sequence[Check],
    *,
    progress: Progress | None = None,
) -> list[CheckResult]:
    """Run ``checks`` on ``engine``; one result per check, in the order given."""
    existing = set(engine.list_tables())
    schemas: dict[str, dict[str, object]] = {}

    def schema(table: str) -> dict[str, object]:
        if table not in schemas:
            schemas[table] = dict(tables(table).schema().items())
        return schemas[table]

    opened: dict[str, ir.Table] = {}

    def tables(name: str) -> ir.Table:
        # Opening a table reads its schema from the backend: once per run is enough.
        if name not in existing:
            raise _MissingTableError(name)
        if name not in opened:
            opened[name] = engine.table(name)
        return opened[name]

    resolve = _concept_resolver(engine, checks, existing)
    results: dict[str, CheckResult] = {}
    groups: dict[str, list[Check]] = defaultdict(list)
    for check in checks:
        if check.check_type in SCHEMA_TYPES:
            results[check.check_id] = _schema_result(check, existing, schema)
        elif check.check_type == "quarantined_records":
            results[check.check_id] = _quarantine_result(engine, check, tables)
        else:
            groups[base_key(check)].append(check)
    done = len(results)
    total = len(checks)
    if progress:
        progress(done, total)
    for key, members in groups.items():
        for result in _run_group(engine, key, members, tables, resolve):
            results[result.check.check_id] = result
        done += len(members)
        if progress:
            progress(done, total)
    return [results[check.check_id] for check in checks]


class _MissingTableError(MedlakeError):
    def __init__(self, table: str) -> None:
        super().__init__(f"table {table} is not in the lake")
        self.table = table


def _schema_result(
    check: Check, existing: set[str], schema: Callable[[str], dict[str, object]]
) -> CheckResult:
    if check.check_type == "cdm_table":
        missing = check.table not in existing
        return _result(check, int(missing), 1, None if not missing else "table missing")
    if check.table not in existing:
        return CheckResult(check, None, None, NOT_APPLICABLE, "table missing")
    columns = schema(check.table)
    assert check.field is not None
    if check.check_type == "cdm_field":
        missing = check.field not in columns
        return _result(check, int(missing), 1, "field missing" if missing else None)
    actual = columns.get(check.field)
    if actual is None:
        return CheckResult(check, None, None, NOT_APPLICABLE, "field missing")
    expected = ibis_type(check.param("type"), nullable=True)
    # Same kind of type (a timestamp's precision is the backend's business).
    wrong = type(actual) is not type(expected)
    return _result(check, int(wrong), 1, f"is {actual}, expected {expected}" if wrong else None)


def _quarantine_result(
    engine: Engine, check: Check, tables: Callable[[str], ir.Table]
) -> CheckResult:
    started = time.perf_counter()
    try:
        matching, open_, loaded = quarantine_query(tables, check.param("reason_class"))
        v = int(engine.scalar(matching))
        n = int(engine.scalar(open_)) + int(engine.scalar(loaded))
    except MedlakeError as error:
        return CheckResult(check, None, None, ERROR, error.message)
    return _result(check, v, n, None, started)


def _concept_resolver(
    engine: Engine, checks: Sequence[Check], existing: set[str]
) -> Callable[[str], list[int]]:
    """``"VOCAB:code"`` to concept ids, for every code the checks name, in one query."""
    wanted = {c.concept for c in checks if c.concept}
    wanted |= {f"UCUM:{u}" for c in checks for u in (c.param("units") or ())}
    found: dict[str, list[int]] = defaultdict(list)
    if wanted and "concept" in existing:
        concept = engine.table("concept")
        key = concept.vocabulary_id.concat(":", concept.concept_code)
        rows = engine.execute(
            concept.filter(key.isin(sorted(wanted))).select(key=key, concept_id=concept.concept_id)
        ).to_pylist()
        for row in rows:
            found[row["key"]].append(int(row["concept_id"]))
    return lambda code: found.get(code, [])


def _run_group(
    engine: Engine,
    key: str,
    checks: list[Check],
    tables: Callable[[str], ir.Table],
    resolve: Callable[[str], list[int]],
) -> Iterable[CheckResult]:
    started = time.perf_counter()
    joins = frozenset().union(*(joins_needed(check) for check in checks))
    try:
        base = base_table(key, tables, joins)
    except _MissingTableError as missing:
        return [CheckResult(c, None, None, NOT_APPLICABLE, missing.message) for c in checks]
    compiled: list[tuple[Check, Compiled]] = []
    failed: list[CheckResult] = []
    for check in checks:
        try:
            compiled.append((check, compile_check(check, base, tables, resolve)))
        except _MissingTableError as missing:
            failed.append(CheckResult(check, None, None, NOT_APPLICABLE, missing.message))
        except Exception as error:  # an Ibis error: a field missing or of another type
            failed.append(CheckResult(check, None, None, ERROR, _short(error)))
    if not compiled:
        return failed
    try:
        row = _aggregate(engine, base, compiled)
    except MedlakeError as error:
        logger.warning("quality: checks on %s failed together (%s); one by one", key, error)
        return failed + [_run_one(engine, base, check, c) for check, c in compiled]
    elapsed = (time.perf_counter() - started) * 1000 / len(compiled)
    results = [
        _result(check, int(row[f"v{i}"] or 0), int(row[f"n{i}"] or 0), None)
        for i, (check, _) in enumerate(compiled)
    ]
    for result in results:
        result.elapsed_ms = elapsed
    return failed + results


def _aggregate(engine: Engine, base: ir.Table, compiled: list[tuple[Check, Compiled]]) -> dict:  # type: ignore[type-arg]
    metrics = {}
    for i, (_, c) in enumerate(compiled):
        metrics[f"v{i}"] = c.violating
        metrics[f"n{i}"] = c.total
    return engine.execute(base.aggregate(**metrics)).to_pylist()[0]


def _run_one(engine: Engine, base: ir.Table, check: Check, compiled: Compiled) -> CheckResult:
    started = time.perf_counter()
    try:
        row = _aggregate(engine, base, [(check, compiled)])
    except MedlakeError as error:
        return CheckResult(check, None, None, ERROR, _short(error))
    return _result(check, int(row["v0"] or 0), int(row["n0"] or 0), None, started)


def _result(
    check: Check, violating: int, total: int, message: str | None, started: float | None = None
) -> CheckResult:
    elapsed = 0.0 if started is None else (time.perf_counter() - started) * 1000
    return CheckResult(
        check, violating, total, status_for(violating, total, check.threshold_pct), message,
        elapsed,
    )  # fmt: skip


def _short(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.splitlines()[0][:900]


__all__ = ["run_checks"]
