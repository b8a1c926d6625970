"""Step SQL compiled once per shape: the values of a step (thresholds, windows, concept
id lists) bound into a statement compiled for another step of the same shape.

Building a step's Ibis expression and compiling it to SQL costs 20–40 ms of Python per
statement (at 1M persons about a third of a cold count, and Python holds the GIL beside
DuckDB's threads when counts arrive together). The definitions a cohort builder or a
study counts mostly differ in values: an age bound, a lab threshold, a window's days, a
concept set. Here a step's part of the definition is split into

* its **shape** (canonical JSON with every such value replaced by a numbered
  parameter), which decides the SQL's structure, and
* its **values**, one per parameter;

the service compiles the shape once, from a copy of the definition whose parameters
carry sentinel values (:func:`parametrize`), and binds each new step's values into that
statement (:func:`bind`) by replacing the sentinels in the SQLGlot tree.

Only values Ibis renders as a literal of their own are parameters: numeric range values
and extents (``sge.convert(float)``), non-zero window offsets and observation days (the
day count of an ``INTERVAL``, as text), an occurrence count of 2 or more, and non-empty
lists of concept ids (the ``IN`` list of the column they filter). Everything that
changes the SQL's structure stays in the shape: operators, dates, zero offsets and
missing bounds (no interval, no bound), occurrence counts 0 and 1 (anti- and
semi-joins), empty lists, group counts, flags. :func:`template_from` checks that every
sentinel is found in the compiled tree, else the shape is not used as a template;
``tests/cohort/test_templates.py`` checks that bound statements equal those compiled
directly, value for value.

Written here rather than with Ibis's ``ScalarParameter``: Ibis binds parameters by
compiling the expression again, the cost this module avoids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot.expressions as sge

#: Where the sentinels start, per kind; far from any constant the compiler writes. A part
#: with a value of its structure in this range is not made a template.
_FLOAT_BASE = 810_000_000.5
_INT_BASE = 820_000_000
_LIST_BASE = 830_000_000
_LOWEST, _HIGHEST = 810_000_000, 840_000_000

#: The domain criteria's lists of concept ids the compiler filters with ``IN``.
_ID_LISTS = frozenset(
    {"gender", "race", "ethnicity", "visit_type", "type_concept", "value_as_concept", "unit"}
)
_CODESET_FIELDS = ("codeset_id", "source_codeset_id")
_OBSERVATION_DAYS = ("prior_observation_days", "post_observation_days")

Value = float | int | tuple[int, ...]


@dataclass(frozen=True)
class Parametrized:
    """A step part split into shape and values, and its sentinel twin to compile."""

    shape: str
    values: tuple[Value, ...]
    #: The part with each parameter's sentinel in place of its value.
    sentinel_part: Any
    #: Concept ids per concept set for compiling the sentinel part.
    sentinel_codesets: dict[int, list[int]]


@dataclass(frozen=True)
class Template:
    """A statement compiled from sentinel values, with where each parameter goes."""

    statement: sge.Expression
    #: Per parameter: the text of its sentinel literal.
    slots: tuple[str, ...]
    #: Placeholder table names to replace by real ones at binding (the index step's).
    tables: tuple[str, ...] = ()


def parametrize(part: Any, codesets: Mapping[int, Sequence[int]]) -> Parametrized | None:
    """``part`` (a step's part of the definition, dumped as JSON) as shape and values;
    ``codesets``: the resolved concept ids of each concept set it may name. None when a
    value of its structure lies among the sentinels (then it cannot be told apart)."""
    walker = _Walker(codesets)
    shape, sentinel = walker.walk(part)
    if walker.clash:
        return None
    return Parametrized(
        json.dumps(shape, sort_keys=True, separators=(",", ":")),
        tuple(walker.values),
        sentinel,
        walker.sentinel_codesets,
    )


def template_from(statement: sge.Expression, parametrized: Parametrized,
                  tables: Sequence[str] = ()) -> Template | None:  # fmt: skip
    """The template of ``statement`` (compiled from ``parametrized.sentinel_part``), or
    None when a sentinel is missing from it (the compiler did not write the value as a
    literal of its own: compile such a shape for each step instead)."""
    slots = tuple(_sentinel_text(i, value) for i, value in enumerate(parametrized.values))
    seen = {node.this for node in statement.find_all(sge.Literal)} & set(slots)
    if seen != set(slots):
        return None
    if not set(tables) <= {t.name for t in statement.find_all(sge.Table)}:
        return None
    return Template(statement, slots, tuple(tables))


def bind(template: Template, values: Sequence[Value], tables: Sequence[str] = ()) -> sge.Expression:
    """``template``'s statement with ``values`` (and ``tables`` for its placeholder
    tables), as the compiler writes them: a number as ``sge.convert`` does, a day count
    as the text of its ``INTERVAL``, a list as the ``IN`` list it fills."""
    if len(values) != len(template.slots):
        raise ValueError(f"{len(template.slots)} values expected, got {len(values)}")
    by_text = dict(zip(template.slots, values, strict=True))
    by_table = dict(zip(template.tables, tables, strict=True))

    # A replaced node is new, so ``transform`` does not walk into it: a bound value that
    # happens to read like a sentinel is never replaced again.
    def replace(node: sge.Expression) -> sge.Expression:
        if isinstance(node, sge.In) and len(node.expressions) == 1:
            only = node.expressions[0]
            value = by_text.get(only.this) if isinstance(only, sge.Literal) else None
            if isinstance(value, tuple):
                return sge.In(this=node.this.copy(), expressions=[sge.convert(v) for v in value])
        elif isinstance(node, sge.Literal):
            value = by_text.get(node.this)
            if value is not None and not isinstance(value, tuple):
                return sge.convert(str(value)) if node.is_string else sge.convert(value)
        elif isinstance(node, sge.Table) and node.name in by_table:
            renamed = node.copy()
            renamed.set("this", sge.to_identifier(by_table[node.name], quoted=True))
            return renamed
        return node

    return template.statement.transform(replace)


def _sentinel(index: int, value: Value) -> Any:
    if isinstance(value, tuple):
        return _LIST_BASE + index
    if isinstance(value, float):
        return _FLOAT_BASE + index
    return _INT_BASE + index


def _sentinel_text(index: int, value: Value) -> str:
    """How the compiler writes the sentinel: ``sge.convert`` of the number (an
    ``INTERVAL``'s day count is its ``str``, the same digits)."""
    return str(sge.convert(_sentinel(index, value)).this)


class _Walker:
    """One pass over a part: its shape, its values, and its sentinel twin."""

    def __init__(self, codesets: Mapping[int, Sequence[int]]) -> None:
        self.codesets = codesets
        self.values: list[Value] = []
        self.sentinel_codesets: dict[int, list[int]] = {}
        self.clash = False
        self._codeset_params: dict[int, int] = {}

    def walk(self, value: Any, key: str | None = None) -> tuple[Any, Any]:
        """(shape, sentinel twin) of ``value``."""
        if isinstance(value, dict):
            return self._dict(value)
        if isinstance(value, list):
            if key in _ID_LISTS and value and all(_is_int(v) for v in value):
                return self._param(tuple(value))
            pairs = [self.walk(v) for v in value]
            return [s for s, _ in pairs], [t for _, t in pairs]
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.clash |= _LOWEST <= value < _HIGHEST
        return value, value

    def _dict(self, value: dict[str, Any]) -> tuple[Any, Any]:
        shape: dict[str, Any] = {}
        twin: dict[str, Any] = {}
        keys = set(value)
        is_range = keys == {"op", "value", "extent"}
        is_window = keys >= {"start", "end", "use_index_end", "use_event_end"}
        is_occurrence = keys == {"type", "count", "distinct", "distinct_on"}
        for k, v in value.items():
            if k in _CODESET_FIELDS and _is_int(v):
                shape[k], twin[k] = self._codeset(v)
            elif is_range and k in ("value", "extent") and _is_float(v):
                shape[k], twin[k] = self._param(float(v))
            elif _is_int(v) and _int_parameter(k, v, is_window, is_occurrence):
                shape[k], twin[k] = self._param(int(v))
            else:
                shape[k], twin[k] = self.walk(v, key=k)
        return shape, twin

    def _codeset(self, codeset_id: int) -> tuple[Any, Any]:
        """A concept set reference: its concept ids are one parameter (the same for every
        reference to the set); an empty set is part of the shape."""
        ids = tuple(self.codesets.get(codeset_id, ()))
        if not ids:
            self.sentinel_codesets[codeset_id] = []
            return {"concepts": []}, codeset_id
        if codeset_id not in self._codeset_params:
            self._codeset_params[codeset_id] = len(self.values)
            self.sentinel_codesets[codeset_id] = [_LIST_BASE + len(self.values)]
            self.values.append(ids)
        return {"$": self._codeset_params[codeset_id]}, codeset_id

    def _param(self, value: Value) -> tuple[Any, Any]:
        index = len(self.values)
        self.values.append(value)
        kind = "list" if isinstance(value, tuple) else type(value).__name__
        sentinel = _sentinel(index, value)
        return {"$": index, "kind": kind}, [sentinel] if isinstance(value, tuple) else sentinel


def _int_parameter(key: str, value: int, is_window: bool, is_occurrence: bool) -> bool:
    """Whether an int is a parameter: a window's or the observation's non-zero days (zero
    is no interval at all), an occurrence count from 2 (0 and 1 are other joins)."""
    if (is_window and key in ("start", "end")) or key in _OBSERVATION_DAYS:
        return value != 0
    return is_occurrence and key == "count" and value >= 2


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)
