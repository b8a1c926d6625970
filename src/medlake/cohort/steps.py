"""A count split into steps that definitions share: canonical step keys and the combine.

The web UI's cohort builder counts a new definition at every edit, and the definitions
of a study differ in a rule or two; each step of the attrition (the index events, each
inclusion rule's flag per index event) is the same work whenever its own part of the
definition is the same. This module says what a step *is*, independent of the
definition around it, and how flags become the attrition row:

* :func:`step_plan` — the canonical key of the index step (primary criteria, additional
  criteria and qualified limit, how observation periods are read) and of each rule
  (its expression), as JSON with every concept set replaced by its resolved concept ids,
  so the key is what decides the step's SQL: the rule's name, the definition's name, the
  numbering of concept sets and the other rules do not enter it;
* :func:`attrition_row` — the row :meth:`CohortCompiler.attrition_query` returns, from
  the index events and one boolean flag per rule (aligned with the index rows), with
  SQL's three-valued logic (Kleene ``and``; ``any`` and ``sum`` skip nulls).

The service (:mod:`medlake.service.cohort_steps`) keeps step results by these keys and
runs only missing steps: :meth:`CohortCompiler.index_events` and
:meth:`CohortCompiler.rule_query` build their SQL, compiled once per step shape
(:mod:`medlake.cohort.templates`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from medlake.cohort.events import DOMAINS
from medlake.cohort.model import CohortDefinition

#: Every lake table a count can read once concept sets are resolved ahead (the clinical
#: domains and ``person``): a step result stands while their data version does.
COUNT_TABLES: tuple[str, ...] = tuple(sorted({d.table for d in DOMAINS.values()} | {"person"}))

_CODESET_FIELDS = ("codeset_id", "source_codeset_id")


@dataclass(frozen=True)
class StepPlan:
    """The steps of one definition's count, by canonical key."""

    index_key: str
    rule_keys: tuple[str, ...]
    one_event_per_person: bool

    @property
    def index_name(self) -> str:
        """A table name for the index step's result, the same for the same key (the rule
        statements read it under this name)."""
        return "medlake_cohort_index_" + hashlib.sha256(self.index_key.encode()).hexdigest()[:20]


def step_plan(
    definition: CohortDefinition,
    codesets: Mapping[int, Sequence[int]],
    observation_periods: str,
    one_event_per_person: bool,
) -> StepPlan:
    """The canonical keys of ``definition``'s steps (concept sets ``codesets``, resolved)."""
    resolved = {k: sorted(set(v)) for k, v in codesets.items()}
    additional = definition.additional_criteria
    index = {
        "primary": definition.primary_criteria.model_dump(mode="json"),
        "additional": None if additional is None else additional.model_dump(mode="json"),
        "qualified_limit": None if additional is None else definition.qualified_limit,
        "observation_periods": observation_periods,
    }
    rules = tuple(
        _canonical({"rule": r.expression.model_dump(mode="json")}, resolved)
        for r in definition.inclusion_rules
    )
    return StepPlan(_canonical(index, resolved), rules, one_event_per_person)


def _canonical(part: dict[str, Any], codesets: Mapping[int, list[int]]) -> str:
    return json.dumps(_resolve(part, codesets), sort_keys=True, separators=(",", ":"))


def _resolve(value: Any, codesets: Mapping[int, list[int]]) -> Any:
    """``value`` with each concept set reference replaced by the concept ids it stands for."""
    if isinstance(value, dict):
        return {
            k: {"concepts": codesets.get(v, [])}
            if k in _CODESET_FIELDS and isinstance(v, int)
            else _resolve(v, codesets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve(v, codesets) for v in value]
    return value


def attrition_row(
    index: pa.Table, flags: Sequence[pa.Array], one_event_per_person: bool
) -> dict[str, int | None]:
    """``initial``, ``remaining_<i>``, ``satisfied_<i>`` from the index events and the
    rules' flags, as :meth:`~medlake.cohort.compiler.CohortCompiler.attrition_query`
    computes them: events counted when the index holds one per person, else persons
    (a person passes when any of their events does)."""
    passing: dict[str, pa.Array] = {}
    passed: pa.Array | None = None
    for i, rule in enumerate(flags):
        passed = rule if passed is None else pc.and_kleene(passed, rule)
        passing[f"remaining_{i}"] = passed
        passing[f"satisfied_{i}"] = rule
    if one_event_per_person:
        row: dict[str, int | None] = {"initial": index.num_rows}
        row |= {name: _sum(value) for name, value in passing.items()}
        return row
    persons = index.column("person_id")
    if not passing:
        return {"initial": pc.count_distinct(persons).as_py()}
    table = pa.table({"person_id": persons, **passing})
    grouped = table.group_by("person_id").aggregate([(name, "any") for name in passing])
    row = {"initial": grouped.num_rows}
    row |= {name: _sum(grouped.column(f"{name}_any")) for name in passing}
    return row


def _sum(flags: pa.Array | pa.ChunkedArray) -> int | None:
    """SQL's ``SUM(CAST(flag AS BIGINT))``: nulls skipped, None over no values (Arrow sums
    booleans as counts of true; a cast to int64 first cost 100 times as much)."""
    total = pc.sum(flags).as_py()
    return None if total is None else int(total)
