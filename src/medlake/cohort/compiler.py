"""The one cohort compiler: a definition to Ibis expressions on the engine's tables.

There is no per-backend code here: the expressions are built on whatever tables the
``table`` callable returns (the engine's, in practice) and the engine runs them. The
steps follow OHDSI Circe's generated SQL:

* :meth:`CohortCompiler.index_events` — entry events inside an observation period, with
  the primary limit, ``additional_criteria`` and the qualified limit; each gets an
  ``event_id``;
* :meth:`CohortCompiler.attrition_query` — one query returning the persons with an index
  event (``initial``), then per inclusion rule the persons remaining after the rules so
  far (``remaining_<i>``) and the persons satisfying that rule alone
  (``satisfied_<i>``);
* :meth:`CohortCompiler.members_query` — the cohort: events passing every rule, the
  expression limit, the exit (end strategy, censoring) and eras collapsed per person.

:meth:`CohortCompiler.count_query` and :meth:`CohortCompiler.cohort_query` chain these
through a :data:`Step` callable that names each intermediate table (the entry events,
the index events, each rule's passing events). The caller decides what a step becomes:
a placeholder table the engine later runs as a common table expression of one
statement (what the service does: Ibis's SQL compiler takes time that grows faster than
the expression, so compiling each step on its own and joining the SQL is several times
faster than compiling the whole graph), a computed in-memory table, or the expression
itself (:func:`inline`).

Groups are evaluated as sets of index ``event_id``s: each item (criterion, demographic,
nested group) yields the index events it holds for; ALL intersects them, ANY unites
them, AT_LEAST/AT_MOST n count them per event. A criterion that asks for at least one
event (or none) is a semi-join (anti-join), so the engine never materializes the
matching pairs; window bounds are computed once per index event as dates, so the join
compares dates with dates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ibis
import ibis.expr.types as ir

from medlake.cohort.events import (
    DOMAINS,
    EventBuilder,
    TableGetter,
    range_predicate,
    shift,
    union_all,
)
from medlake.cohort.exit import INDEX_COLUMNS, censor, collapse, with_end_dates
from medlake.cohort.model import (
    CohortDefinition,
    CorrelatedCriterion,
    CriteriaGroup,
    DemographicCriterion,
    Expression,
    Genotype,
    Limit,
    Window,
)

__all__ = ["INDEX_COLUMNS", "CohortCompiler", "Step", "collapse", "inline"]

#: What a named intermediate table becomes: ``step(name, expression) -> table``.
Step = Callable[[str, ir.Table], ir.Table]


def inline(name: str, expr: ir.Table) -> ir.Table:
    """The :data:`Step` that keeps the expression itself (one graph, compiled at once)."""
    return expr


class CohortCompiler:
    """Compiles one definition; ``observation_periods="derived"`` spans each person's records.

    Where the lake has no ``observation_period`` rows, ``derived`` takes each person's
    observation as the span from their first to their last recorded event over the
    clinical domains.
    """

    def __init__(
        self,
        definition: CohortDefinition,
        table: TableGetter,
        *,
        omics_events: Mapping[str, ir.Table] | None = None,
        observation_periods: str = "table",
        codesets: Mapping[int, Sequence[int]] | None = None,
    ) -> None:
        """``codesets``: each concept set's concept ids, resolved ahead from
        :meth:`codeset_query`; without them concept sets are subqueries."""
        self.definition = definition
        self._omics = bool(omics_events)
        self._codesets = codesets
        self._tables: dict[str, ir.Table] = {}
        self._get_table = table
        self._derived_periods = observation_periods == "derived"
        self._events = EventBuilder(
            self._event_table, definition.concept_sets, omics_events or {}, codesets
        )

    def sibling(
        self, definition: CohortDefinition, codesets: Mapping[int, Sequence[int]]
    ) -> CohortCompiler:
        """A compiler for ``definition`` with concept sets ``codesets``, on the same tables
        (already opened ones shared) and observation periods: a step shape's template is
        compiled this way (:mod:`medlake.cohort.templates`)."""
        other = CohortCompiler(
            definition,
            self._get_table,
            observation_periods=self.periods_mode,
            codesets=codesets,
        )
        other._tables = self._tables
        return other

    def codeset_query(self) -> ir.Table:
        """``codeset_id, concept_id``: every concept set expanded on the vocabulary."""
        return self._events.codeset_query()

    def cache_key(self, query: str) -> tuple[object, ...] | None:
        """What decides the SQL of ``query`` (``count``/``cohort``), for a cache of it.

        ``None`` when the SQL depends on more than that: omics events are in-memory
        tables, and unresolved concept sets are read from the vocabulary by the query.
        """
        if self._omics or self._codesets is None:
            return None
        codesets = tuple(sorted((k, tuple(v)) for k, v in self._codesets.items()))
        periods = "derived" if self._derived_periods else "table"
        return (query, self.definition.model_dump_json(), periods, codesets)

    @property
    def resolved_codesets(self) -> Mapping[int, Sequence[int]] | None:
        """The concept ids of each concept set when resolved ahead, else None."""
        return self._codesets

    @property
    def periods_mode(self) -> str:
        """``"table"`` or ``"derived"``: how observation periods are read."""
        return "derived" if self._derived_periods else "table"

    def _table(self, name: str) -> ir.Table:
        # Opening a table reads its schema from the backend: once per table is enough.
        if name not in self._tables:
            self._tables[name] = self._get_table(name)
        return self._tables[name]

    def _event_table(self, name: str) -> ir.Table:
        # Observation-period criteria see the derived periods when the table is empty.
        if name != "observation_period" or not self._derived_periods:
            return self._table(name)
        periods = self.observation_periods()
        return periods.select(
            observation_period_id=periods.person_id,
            person_id=periods.person_id,
            observation_period_start_date=periods.op_start,
            observation_period_end_date=periods.op_end,
            period_type_concept_id=ibis.literal(0, "int64"),
        )

    # ------------------------------------------------------------------ observation

    def observation_periods(self) -> ir.Table:
        """``person_id, op_start, op_end`` per observation period."""
        if not self._derived_periods:
            op = self._table("observation_period")
            return op.select(
                person_id=op.person_id.cast("int64"),
                op_start=op.observation_period_start_date,
                op_end=op.observation_period_end_date,
            )
        spans = []
        for name, domain in DOMAINS.items():
            if name == "observation_period":
                continue
            t = self._table(domain.table)
            end = t[domain.end] if domain.end else t[domain.start]
            spans.append(
                t.select(
                    person_id=t.person_id.cast("int64"),
                    start=t[domain.start],
                    end=ibis.coalesce(end, t[domain.start]),
                )
            )
        union = union_all(spans)
        return union.group_by("person_id").agg(op_start=union.start.min(), op_end=union.end.max())

    # ------------------------------------------------------------------ index events

    def index_events(self, step: Step = inline) -> ir.Table:
        """Qualified index events, one row each, in :data:`INDEX_COLUMNS`."""
        primary = self.definition.primary_criteria
        parts = [
            self._events.events(c).mutate(domain_rank=ibis.literal(i, "int32"))
            for i, c in enumerate(primary.criteria)
        ]
        events = union_all(parts)
        op = self.observation_periods()
        joined = events.join(
            op,
            [
                events.person_id == op.person_id,
                events.start_date >= shift(op.op_start, primary.prior_observation_days),
                shift(events.start_date, primary.post_observation_days) <= op.op_end,
            ],
        ).select(
            events.person_id,
            events.source_id,
            events.domain_rank,
            events.start_date,
            events.end_date,
            events.visit_id,
            op.op_start,
            op.op_end,
        )
        limited = _limit(joined, primary.limit)
        numbered = limited.mutate(
            event_id=ibis.row_number().over(
                order_by=["person_id", "start_date", "domain_rank", "source_id", "op_start"]
            )
        ).select(*INDEX_COLUMNS)
        if self.definition.additional_criteria is None:
            return numbered
        entry = step("cohort_entry", numbered)
        passing = step(
            "cohort_additional", self.group_query(self.definition.additional_criteria, entry)
        )
        qualified = entry.filter(entry.event_id.isin(passing.event_id))
        return _limit(qualified, self.definition.qualified_limit, tiebreak="event_id").select(
            *INDEX_COLUMNS
        )

    def count_query(self, step: Step = inline) -> ir.Table:
        """:meth:`attrition_query` over the index events and rules, named by ``step``."""
        return self.attrition_query(*self._rule_steps(step))

    def cohort_query(self, step: Step = inline) -> ir.Table:
        """:meth:`members_query` over the index events and rules, named by ``step``."""
        return self.members_query(*self._rule_steps(step))

    def _rule_steps(self, step: Step) -> tuple[ir.Table, list[ir.Table]]:
        index = step("cohort_index", self.index_events(step))
        hits = [
            step(f"cohort_rule_{i}", self.rule_query(i, index))
            for i in range(len(self.definition.inclusion_rules))
        ]
        return index, hits

    # ------------------------------------------------------------------ groups

    def group_query(self, group: CriteriaGroup, index: ir.Table) -> ir.Table:
        """The ``event_id``s of ``index`` for which ``group`` holds."""
        items: list[ir.Table] = []
        items += [self.criterion_query(c, index) for c in group.criteria]
        items += [self.demographic_query(d, index) for d in group.demographics]
        items += [self.group_query(g, index) for g in group.groups]
        everything = index.select("event_id")
        if not items:
            return everything
        if len(items) == 1 and group.type in ("all", "any"):
            return items[0]  # one item: the group is that item (a smaller graph to compile)
        match group.type:
            case "all":
                return ibis.intersect(*_loose(items), distinct=True)
            case "any":
                return ibis.union(*_loose(items), distinct=True)
        tagged = [t.select("event_id", item=ibis.literal(i, "int32")) for i, t in enumerate(items)]
        union = union_all(tagged)
        hits = union.group_by("event_id").agg(hits=union.item.nunique())
        if group.type == "at_least":
            if group.count == 0:
                return everything
            return hits.filter(hits.hits >= group.count).select("event_id")
        # at_most: events without any hit qualify too
        return everything.anti_join(hits.filter(hits.hits > group.count), "event_id")

    def criterion_query(self, correlated: CorrelatedCriterion, index: ir.Table) -> ir.Table:
        """Index events with the wanted number of ``correlated`` events in its windows."""
        criterion = correlated.criterion
        ev = self._events.events(criterion).rename(
            e_person="person_id",
            e_id="source_id",
            e_start="start_date",
            e_end="end_date",
            e_visit="visit_id",
            e_concept="concept_id",
        )
        # Each bound on the criterion event's start or end date, computed once per index
        # event as a date (tightest of the window and the observation period).
        lower: dict[str, list[ir.DateValue]] = {"start": [], "end": []}
        upper: dict[str, list[ir.DateValue]] = {"start": [], "end": []}
        omics = isinstance(criterion, Genotype | Expression)
        if not (correlated.ignore_observation_period or omics):
            lower["start"].append(index.op_start)
            upper["start"].append(index.op_end)
        _window_bounds(correlated.start_window, index, lower, upper)
        if correlated.end_window is not None:
            end_window = correlated.end_window.model_copy(update={"use_event_end": True})
            _window_bounds(end_window, index, lower, upper)
        bounds: dict[str, ir.DateValue] = {}
        for side in ("start", "end"):
            if lower[side]:
                bounds[f"lo_{side}"] = _tightest(lower[side], ibis.greatest)
            if upper[side]:
                bounds[f"hi_{side}"] = _tightest(upper[side], ibis.least)
        visit = ["visit_id"] if correlated.restrict_visit else []
        keyed = index.select("event_id", "person_id", *visit, **bounds)
        placed = {"start": ev.e_start, "end": ev.e_end}
        conditions = [keyed.person_id == ev.e_person]
        for name in bounds:
            bound, side = name.split("_")
            column = placed[side]
            conditions.append(column >= keyed[name] if bound == "lo" else column <= keyed[name])
        if correlated.restrict_visit:
            conditions.append(keyed.visit_id == ev.e_visit)
        occurrence = correlated.occurrence
        counted = "e_id"
        if occurrence.distinct:
            counted = {"concept": "e_concept", "start_date": "e_start", "visit": "e_visit"}[
                occurrence.distinct_on
            ]
            conditions.append(ev[counted].notnull())  # a distinct count ignores nulls
        wanted = occurrence.count
        everything = index.select("event_id")
        if occurrence.type == "at_least" and wanted <= 1:
            if wanted == 0:
                return everything
            return keyed.semi_join(ev, conditions).select("event_id")
        if occurrence.type in ("exactly", "at_most") and wanted == 0:
            return keyed.anti_join(ev, conditions).select("event_id")
        matched = keyed.join(ev, conditions).select(keyed.event_id, ev[counted])
        n = matched[counted].nunique() if occurrence.distinct else matched[counted].count()
        counts = matched.group_by("event_id").agg(n=n)
        match occurrence.type:
            case "at_least":
                return counts.filter(counts.n >= wanted).select("event_id")
            case "exactly":
                return counts.filter(counts.n == wanted).select("event_id")
            case _:  # at_most
                return everything.anti_join(counts.filter(counts.n > wanted), "event_id")

    def demographic_query(self, demographic: DemographicCriterion, index: ir.Table) -> ir.Table:
        person = self._table("person")
        people = person.select(
            p_person=person.person_id.cast("int64"),
            year_of_birth=person.year_of_birth,
            gender_concept_id=person.gender_concept_id,
            race_concept_id=person.race_concept_id,
            ethnicity_concept_id=person.ethnicity_concept_id,
        )
        joined = index.join(people, index.person_id == people.p_person)
        conditions: list[ir.BooleanValue] = [ibis.literal(True)]
        if demographic.age is not None:
            age = joined.start_date.year() - joined.year_of_birth
            conditions.append(range_predicate(age, demographic.age))
        if demographic.gender:
            conditions.append(joined.gender_concept_id.isin(demographic.gender))
        if demographic.race:
            conditions.append(joined.race_concept_id.isin(demographic.race))
        if demographic.ethnicity:
            conditions.append(joined.ethnicity_concept_id.isin(demographic.ethnicity))
        if demographic.index_start_date is not None:
            conditions.append(range_predicate(joined.start_date, demographic.index_start_date))
        if demographic.index_end_date is not None:
            conditions.append(range_predicate(joined.end_date, demographic.index_end_date))
        return joined.filter(conditions).select("event_id")

    # ------------------------------------------------------------------ rules

    def rule_query(self, rule: int, index: ir.Table) -> ir.Table:
        """The ``event_id``s of ``index`` that satisfy inclusion rule number ``rule``."""
        return self.group_query(self.definition.inclusion_rules[rule].expression, index)

    def rule_flags(self, index: ir.Table, hits: Sequence[ir.Table] | None = None) -> ir.Table:
        """``index`` with a boolean ``rule_<i>`` column per inclusion rule.

        ``hits`` are the rules' :meth:`rule_query` tables (or what a :data:`Step` made of
        them) when already built.
        """
        rules = self.definition.inclusion_rules
        if hits is None:
            hits = [self.rule_query(i, index) for i in range(len(rules))]
        return index.select(
            *INDEX_COLUMNS,
            **{f"rule_{i}": index.event_id.isin(hit.event_id) for i, hit in enumerate(hits)},
        )

    def attrition_query(
        self, index: ir.Table | None = None, hits: Sequence[ir.Table] | None = None
    ) -> ir.Table:
        """One row: ``initial``, then ``remaining_<i>`` and ``satisfied_<i>`` per rule.

        ``index`` (:meth:`index_events`) and ``hits`` (:meth:`rule_query` per rule) may be
        given already built (see :meth:`count_query`).
        """
        flags = self.rule_flags(self.index_events() if index is None else index, hits)
        passing: dict[str, ir.BooleanValue] = {}
        passed: ir.BooleanValue | None = None
        for i in range(len(self.definition.inclusion_rules)):
            rule = flags[f"rule_{i}"]
            passed = rule if passed is None else passed & rule
            passing[f"remaining_{i}"] = passed
            passing[f"satisfied_{i}"] = rule
        if self.one_event_per_person:  # count events: no grouping by person needed
            return flags.agg(
                initial=flags.count(),
                **{name: value.cast("int64").sum() for name, value in passing.items()},
            )
        if not passing:
            return flags.agg(initial=flags.person_id.nunique())
        persons = flags.group_by("person_id").agg(
            **{name: value.any() for name, value in passing.items()}
        )
        return persons.agg(
            initial=persons.count(),
            **{name: persons[name].cast("int64").sum() for name in passing},
        )

    @property
    def one_event_per_person(self) -> bool:
        """Whether the index holds at most one event per person: the primary limit, or
        the qualified limit after additional criteria, keeps each person's first or last."""
        definition = self.definition
        if definition.primary_criteria.limit != "all":
            return True
        return definition.additional_criteria is not None and definition.qualified_limit != "all"

    # ------------------------------------------------------------------ the cohort

    def members_query(
        self, index: ir.Table | None = None, hits: Sequence[ir.Table] | None = None
    ) -> ir.Table:
        """``person_id, cohort_start_date, cohort_end_date``: the cohort's eras."""
        flags = self.rule_flags(self.index_events() if index is None else index, hits)
        for i in range(len(self.definition.inclusion_rules)):
            flags = flags.filter(flags[f"rule_{i}"])
        final = _limit(flags.select(*INDEX_COLUMNS), self.definition.expression_limit, "event_id")
        ended = with_end_dates(final, self.definition.end_strategy, self._events)
        censored = censor(ended, self.definition.censoring_criteria, self._events)
        return collapse(
            censored.select("person_id", start=censored.start_date, end=censored.cohort_end),
            self.definition.collapse_days,
        ).select("person_id", cohort_start_date="start", cohort_end_date="end")


def _limit(events: ir.Table, limit: Limit, tiebreak: str = "source_id") -> ir.Table:
    if limit == "all":
        return events
    order = [events.start_date, events[tiebreak]]
    if limit == "last":
        order = [events.start_date.desc(), events[tiebreak].desc()]
    window = ibis.window(group_by="person_id", order_by=order)
    return events.filter(ibis.row_number().over(window) == 0)


def _window_bounds(
    window: Window,
    index: ir.Table,
    lower: dict[str, list[ir.DateValue]],
    upper: dict[str, list[ir.DateValue]],
) -> None:
    """Add ``window``'s bounds, on the criterion event's start or end, to ``lower``/``upper``."""
    anchor = index.end_date if window.use_index_end else index.start_date
    side = "end" if window.use_event_end else "start"
    if window.start is not None:
        lower[side].append(shift(anchor, window.start))
    if window.end is not None:
        upper[side].append(shift(anchor, window.end))


def _tightest(values: list[ir.DateValue], pick: Callable[..., ir.DateValue]) -> ir.DateValue:
    return values[0] if len(values) == 1 else pick(*values)


def _loose(tables: list[ir.Table]) -> list[ir.Table]:
    """The tables with nullable columns, so set operations accept them together."""
    return [
        t.cast({name: dtype.copy(nullable=True) for name, dtype in t.schema().items()})
        for t in tables
    ]
