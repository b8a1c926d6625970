"""Cohorts as a use case: load a definition, count it with attrition, list or store members.

Composes the cohort domain (definitions, Circe translation, the Ibis compiler, omics
criteria) with the privacy domain's small-cell suppression. Every function takes the
workspace directory and a :class:`~medlake.cohort.model.CohortDefinition` (see
:func:`load_definition`), opens the lake, and closes it again.

Two things happen here rather than in the compiler because they are not SQL: omics
criteria are resolved from the genotype and expression files into event tables handed
to the compiler as memtables, and a lake without ``observation_period`` rows (the
synthetic hospital's exports carry none) is observed from each person's first to last
record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import ValidationError

from medlake.access import Permission
from medlake.cohort import example_names, example_path
from medlake.cohort.circe import circe_to_definition
from medlake.cohort.compiler import CohortCompiler
from medlake.cohort.events import omics_key
from medlake.cohort.model import CohortDefinition, Expression, Genotype, iter_criteria
from medlake.cohort.omics import expression_events, genotype_events, omics_memtable
from medlake.cohort.steps import COUNT_TABLES
from medlake.config import Workspace, as_workspace, open_workspace
from medlake.engine import Engine, SupportsTransactions
from medlake.errors import InputError, UsageError
from medlake.privacy import (
    DEFAULT_THRESHOLD,
    AttritionStep,
    SuppressedAttrition,
    suppress_attrition,
)
from medlake.service.cohort_query import remembered, resolve_concept_sets, run_cohort_query
from medlake.service.cohort_steps import count_by_steps
from medlake.service.lake_pool import pooled_lake
from medlake.service.policy import authorized, record_read, require
from medlake.service.workspace import open_lake

MEMBER_SCHEMA = pa.schema(
    [
        pa.field("person_id", pa.int64(), nullable=False),
        pa.field("cohort_start_date", pa.date32(), nullable=False),
        pa.field("cohort_end_date", pa.date32(), nullable=False),
    ]
)


# ---------------------------------------------------------------------- definitions


def load_definition(path: Path, circe: bool = False) -> CohortDefinition:
    """Read a definition file: medlake's JSON, or with ``circe`` an ATLAS/Circe export.

    ``path`` may also name a bundled example (``t2d_hba1c_metformin``: the demo cohort).
    """
    path = Path(path)
    if not path.exists() and path.suffix == "" and str(path) in example_names():
        path = example_path(str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON file ({error})") from None
    if circe:
        return circe_to_definition(data, name=path.stem, source=str(path))
    return parse_definition(data, source=str(path))


def parse_definition(data: object, source: str = "definition") -> CohortDefinition:
    """Validate a definition given as parsed JSON; errors name the JSON path."""
    try:
        return CohortDefinition.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"{source}: {where}: {first['msg']}") from None


# ---------------------------------------------------------------------- compiling


@contextlib.contextmanager
def _compiled(
    workspace_dir: Path | Workspace | None, definition: CohortDefinition
) -> Iterator[tuple[Workspace, Engine, CohortCompiler]]:
    workspace = as_workspace(workspace_dir)
    # In the server an engine lent from the pool: opening the lake per count (a
    # connection, Ibis's set-up, the schema check) costs more than a cached count.
    with pooled_lake(workspace) as engine:
        omics = {}
        for criterion in iter_criteria(definition):
            if isinstance(criterion, Genotype):
                events = genotype_events(engine, workspace.omics_dir, criterion)
            elif isinstance(criterion, Expression):
                events = expression_events(engine, workspace.omics_dir, criterion)
            else:
                continue
            omics[omics_key(criterion)] = omics_memtable(events)
        periods = remembered(
            engine,
            ["observation_period"],
            ("observation periods", engine.name),
            lambda: "table" if engine.count("observation_period") else "derived",
        )
        # Concept sets resolved ahead become literal lists the engine filters on while
        # scanning, instead of a join per criterion.
        compiler = CohortCompiler(
            definition,
            engine.table,
            omics_events=omics,
            observation_periods=periods,
            codesets=resolve_concept_sets(engine, definition),
        )
        yield workspace, engine, compiler


def _run(
    workspace: Workspace,
    engine: Engine,
    compiler: CohortCompiler,
    query: Literal["count", "cohort"],
) -> pa.Table:
    """The attrition row (``count``) or the members (``cohort``).

    A count is assembled from steps shared with other definitions where the engine and
    settings allow (:mod:`medlake.service.cohort_steps`, ``[cohort] step_cache_mb``);
    otherwise, and for members, one statement whose SQL is cached per definition
    (:mod:`medlake.service.cohort_query`). The attrition row is kept until the tables it
    reads change (``[cohort] cache_results``)."""
    settings = workspace.settings.cohort
    if query == "count" and settings.cache_results and settings.step_cache_mb:
        # Steps shared with other definitions (cohort_steps), the row kept as a whole too.
        def by_steps() -> pa.Table | None:
            return count_by_steps(engine, compiler, limit_mb=settings.step_cache_mb,
                                  concurrent=settings.concurrent_statements)  # fmt: skip

        key = ("steps row", engine.name, compiler.cache_key("count"))
        row = remembered(engine, COUNT_TABLES, key, by_steps) if key[2] else None
        if row is not None:
            return row
    build = compiler.count_query if query == "count" else compiler.cohort_query
    return run_cohort_query(
        engine,
        build,
        compiler.cache_key(query),
        keep_result=query == "count" and settings.cache_results,
        concurrent=settings.concurrent_statements,
    )


# ---------------------------------------------------------------------- counting


@dataclass(frozen=True)
class RuleCount:
    """One inclusion rule's exact counts.

    ``remaining``: persons left after this rule and every rule before it; ``excluded``:
    removed by this rule in sequence; ``satisfied_alone``/``excluded_alone``: persons of
    the initial cohort meeting/failing this rule on its own.
    """

    name: str
    remaining: int
    excluded: int
    satisfied_alone: int
    excluded_alone: int


@dataclass(frozen=True)
class CohortCount:
    """A definition's counts: exact, and as shown to researchers (suppressed)."""

    name: str
    initial: int
    rules: list[RuleCount]
    threshold: int = DEFAULT_THRESHOLD  # privacy.small_cell_threshold
    exact: bool = False
    suppressed: SuppressedAttrition = field(init=False)

    def __post_init__(self) -> None:
        steps = [AttritionStep(r.name, r.remaining, r.excluded_alone) for r in self.rules]
        object.__setattr__(
            self, "suppressed", suppress_attrition(self.initial, steps, self.threshold)
        )

    @property
    def final(self) -> int:
        return self.rules[-1].remaining if self.rules else self.initial

    def as_dict(self) -> dict[str, object]:
        """Exact counts when ``exact``, else the suppressed table (``"<5"``, ``"hidden"``)."""
        if not self.exact:
            return {"name": self.name, "exact": False, **self.suppressed.to_json()}
        return {
            "name": self.name,
            "exact": True,
            "initial": self.initial,
            "final": self.final,
            "rules": [vars(r) | {} for r in self.rules],
        }

    def as_rows(self) -> list[list[object]]:
        """``[step, remaining, excluded, excluded alone]`` rows for a table."""
        if self.exact:
            rows: list[list[object]] = [["initial (entry events)", self.initial, None, None]]
            rows += [[r.name, r.remaining, r.excluded, r.excluded_alone] for r in self.rules]
            return rows
        shown = self.suppressed
        rows = [["initial (entry events)", str(shown.initial), None, None]]
        for row in shown.rules:
            alone = None if row.excluded_alone is None else str(row.excluded_alone)
            rows.append([row.name, str(row.remaining), str(row.excluded), alone])
        return rows


def small_cell_threshold(workspace: Workspace) -> int:
    """The workspace's small-cell threshold (``privacy.small_cell_threshold``, default 5)."""
    return workspace.settings.privacy.small_cell_threshold


def count_cohort(
    workspace_dir: Path | Workspace | None, definition: CohortDefinition, *, exact: bool = False
) -> CohortCount:
    """Persons with an entry event, then remaining after each inclusion rule (one query).

    Small cells are suppressed unless ``exact`` (stewards: ``count_exact``)."""
    # The settings read once per count (medlake.toml parsed twice was 2-3 ms of a cold
    # count's Python and most of a cached one's).
    workspace = as_workspace(workspace_dir)
    require(workspace, Permission.COUNT_EXACT if exact else Permission.COUNT)
    with _compiled(workspace, definition) as (workspace, engine, compiler):
        row = _run(workspace, engine, compiler, "count").to_pylist()[0]
        threshold = small_cell_threshold(workspace)
    initial = int(row["initial"] or 0)
    rules: list[RuleCount] = []
    before = initial
    for i, rule in enumerate(definition.inclusion_rules):
        remaining = int(row[f"remaining_{i}"] or 0)
        satisfied = int(row[f"satisfied_{i}"] or 0)
        rules.append(
            RuleCount(rule.name, remaining, before - remaining, satisfied, initial - satisfied)
        )
        before = remaining
    return CohortCount(definition.name, initial, rules, threshold=threshold, exact=exact)


# ---------------------------------------------------------------------- members


@authorized(Permission.READ_IDENTIFIED)
def cohort_members(workspace_dir: Path | None, definition: CohortDefinition) -> pa.Table:
    """The cohort: ``person_id, cohort_start_date, cohort_end_date``, one row per era.

    Real person ids and dates, so stewards only; the read is audited.
    """
    members = members_for_service(workspace_dir, definition)
    with open_lake(open_workspace(workspace_dir)) as engine:
        record_read(engine, "cohort", definition.name,
                    person_ids=members.column("person_id").to_pylist())  # fmt: skip
    return members


def members_for_service(workspace_dir: Path | None, definition: CohortDefinition) -> pa.Table:
    """:func:`cohort_members` unchecked, for services that use the members inside their
    own checked entry point (extract, GWAS, DE) and release only de-identified results.
    Never return its rows to a caller."""
    with _compiled(workspace_dir, definition) as (workspace, engine, compiler):
        members = _run(workspace, engine, compiler, "cohort").cast(MEMBER_SCHEMA)
        return members.sort_by([("person_id", "ascending"), ("cohort_start_date", "ascending")])


@dataclass(frozen=True)
class CreatedCohort:
    cohort_definition_id: int
    name: str
    persons: int
    rows: int

    def as_dict(self) -> dict[str, object]:
        return vars(self) | {}


@authorized(Permission.READ_DEIDENTIFIED)
def create_cohort(
    workspace_dir: Path | None, definition: CohortDefinition, name: str | None = None
) -> CreatedCohort:
    """Materialize the cohort into OMOP ``cohort`` and ``cohort_definition``.

    A cohort of the same name is replaced (keeping its ``cohort_definition_id``);
    otherwise the next free id is used. Runs in one transaction where the engine has them.
    Stewards, or researchers inside a project; audited with the member persons.
    """
    name = name or definition.name
    with _compiled(workspace_dir, definition) as (workspace, engine, compiler):
        members = _run(workspace, engine, compiler, "cohort").cast(MEMBER_SCHEMA)
        defs = engine.table("cohort_definition")
        existing = (
            engine.execute(
                defs.filter(defs.cohort_definition_name == name).select("cohort_definition_id")
            )
            .column(0)
            .to_pylist()
        )
        if existing:
            cohort_id = int(existing[0])
        else:
            cohort_id = int(engine.scalar(defs.cohort_definition_id.max()) or 0) + 1
        block = (
            engine.transaction()
            if isinstance(engine, SupportsTransactions)
            else contextlib.nullcontext()
        )
        with block:
            cohort = engine.table("cohort")
            engine.delete_where("cohort", cohort.cohort_definition_id == cohort_id)
            definitions = engine.table("cohort_definition")
            engine.delete_where("cohort_definition", definitions.cohort_definition_id == cohort_id)
            engine.load_arrow(
                "cohort_definition",
                pa.table(
                    {
                        "cohort_definition_id": [cohort_id],
                        "cohort_definition_name": [name],
                        "cohort_definition_description": [definition.description or None],
                        "definition_type_concept_id": [0],
                        "cohort_definition_syntax": [definition.model_dump_json()],
                        "subject_concept_id": [0],
                        "cohort_initiation_date": [dt.date.today()],
                    }
                ),
            )
            record_read(engine, "cohort", name, person_ids=members.column("person_id").to_pylist(),
                        detail={"cohort_definition_id": cohort_id, "created": True})  # fmt: skip
            engine.load_arrow(
                "cohort",
                pa.table(
                    {
                        "cohort_definition_id": pa.array(
                            [cohort_id] * members.num_rows, pa.int64()
                        ),
                        "subject_id": members.column("person_id"),
                        "cohort_start_date": members.column("cohort_start_date"),
                        "cohort_end_date": members.column("cohort_end_date"),
                    }
                ),
            )
    persons = len(set(members.column("person_id").to_pylist()))
    return CreatedCohort(cohort_id, name, persons, members.num_rows)
