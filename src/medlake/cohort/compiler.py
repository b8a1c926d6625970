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

Groups are evaluated as sets of index ``event_id``s: each item (criterion, demographic,
nested group) yields the index events it holds for, and a group counts its items per
event (ALL: every item, ANY: one, AT_LEAST/AT_MOST n).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from medlake.cohort.events import (
    DOMAINS,
    EventBuilder,
    TableGetter,
    days,
    range_predicate,
    union_all,
)
from medlake.cohort.model import (
    CohortDefinition,
    CorrelatedCriterion,
    CriteriaGroup,
    DemographicCriterion,
    DrugEra,
    Expression,
    FixedOffset,
    Genotype,
    Limit,
    Window,
)

INDEX_COLUMNS = (
    "person_id",
    "event_id",
    "start_date",
    "end_date",
    "visit_id",
    "op_start",
    "op_end",
)


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
        self._tables: dict[str, ir.Table] = {}
        self._get_table = table
        self._derived_periods = observation_periods == "derived"
        self._events = EventBuilder(
            self._event_table, definition.concept_sets, omics_events or {}, codesets
        )

    def codeset_query(self) -> ir.Table:
        """``codeset_id, concept_id``: every concept set expanded on the vocabulary."""
        return self._events.codeset_query()

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

    def index_events(self) -> ir.Table:
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
                events.start_date >= op.op_start + days(primary.prior_observation_days),
                events.start_date + days(primary.post_observation_days) <= op.op_end,
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
        if self.definition.additional_criteria is not None:
            passing = self.group_query(self.definition.additional_criteria, numbered)
            numbered = numbered.semi_join(passing, "event_id")
            numbered = _limit(numbered, self.definition.qualified_limit, tiebreak="event_id")
        return numbered.select(*INDEX_COLUMNS)

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
        tagged = [t.select("event_id", item=ibis.literal(i, "int32")) for i, t in enumerate(items)]
        union = union_all(tagged)
        hits = union.group_by("event_id").agg(hits=union.item.nunique())
        match group.type:
            case "all":
                return hits.filter(hits.hits == len(items)).select("event_id")
            case "any":
                return hits.select("event_id")
            case "at_least":
                if group.count == 0:
                    return everything
                return hits.filter(hits.hits >= group.count).select("event_id")
            case _:  # at_most: events without any hit qualify too
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
        conditions = [index.person_id == ev.e_person]
        omics = isinstance(criterion, Genotype | Expression)
        if not (correlated.ignore_observation_period or omics):
            conditions += [ev.e_start >= index.op_start, ev.e_start <= index.op_end]
        conditions += _window(correlated.start_window, index, ev.e_start, ev.e_end)
        if correlated.end_window is not None:
            end_window = correlated.end_window.model_copy(update={"use_event_end": True})
            conditions += _window(end_window, index, ev.e_start, ev.e_end)
        if correlated.restrict_visit:
            conditions.append(index.visit_id == ev.e_visit)
        matched = index.join(ev, conditions).select(
            index.event_id, ev.e_id, ev.e_start, ev.e_visit, ev.e_concept
        )
        occurrence = correlated.occurrence
        if occurrence.distinct:
            column = {"concept": "e_concept", "start_date": "e_start", "visit": "e_visit"}[
                occurrence.distinct_on
            ]
            n = matched[column].nunique()
        else:
            n = matched.e_id.count()
        counts = matched.group_by("event_id").agg(n=n)
        everything = index.select("event_id")
        wanted = occurrence.count
        match occurrence.type:
            case "at_least":
                if wanted == 0:
                    return everything
                return counts.filter(counts.n >= wanted).select("event_id")
            case "exactly":
                if wanted == 0:
                    return everything.anti_join(counts, "event_id")
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

        ``hits`` are the rules' :meth:`rule_query` tables, or their results, when already
        computed.
        """
        rules = self.definition.inclusion_rules
        if not rules:
            return index
        if hits is None:
            hits = [self.rule_query(i, index) for i in range(len(rules))]
        tagged = [t.select("event_id", rule=ibis.literal(i, "int32")) for i, t in enumerate(hits)]
        union = union_all(tagged)
        mask = union.group_by("event_id").agg(
            **{f"m_{i}": (union.rule == i).any() for i in range(len(rules))}
        )
        joined = index.left_join(mask, index.event_id == mask.event_id)
        return joined.select(
            *[joined[c] for c in INDEX_COLUMNS],
            **{f"rule_{i}": joined[f"m_{i}"].fill_null(False) for i in range(len(rules))},
        )

    def attrition_query(
        self, index: ir.Table | None = None, hits: Sequence[ir.Table] | None = None
    ) -> ir.Table:
        """One row: ``initial``, then ``remaining_<i>`` and ``satisfied_<i>`` per rule.

        ``index`` (:meth:`index_events`) and ``hits`` (:meth:`rule_query` per rule) may be
        given already computed, as memtables: Ibis's SQL compiler takes time that grows
        faster than the expression, so several small queries compile several times
        faster than the one that holds them all.
        """
        flags = self.rule_flags(self.index_events() if index is None else index, hits)
        n_rules = len(self.definition.inclusion_rules)
        per_person: dict[str, ir.BooleanValue] = {}
        passed: ir.BooleanValue | None = None
        for i in range(n_rules):
            rule = flags[f"rule_{i}"]
            passed = rule if passed is None else passed & rule
            per_person[f"remaining_{i}"] = passed.any()
            per_person[f"satisfied_{i}"] = rule.any()
        if not per_person:
            return flags.agg(initial=flags.person_id.nunique())
        persons = flags.group_by("person_id").agg(**per_person)
        return persons.agg(
            initial=persons.count(),
            **{name: persons[name].cast("int64").sum() for name in per_person},
        )

    # ------------------------------------------------------------------ the cohort

    def members_query(
        self, index: ir.Table | None = None, hits: Sequence[ir.Table] | None = None
    ) -> ir.Table:
        """``person_id, cohort_start_date, cohort_end_date``: the cohort's eras."""
        flags = self.rule_flags(self.index_events() if index is None else index, hits)
        for i in range(len(self.definition.inclusion_rules)):
            flags = flags.filter(flags[f"rule_{i}"])
        final = _limit(flags.select(*INDEX_COLUMNS), self.definition.expression_limit, "event_id")
        ended = self._with_end_dates(final)
        censored = self._censor(ended)
        return collapse(
            censored.select("person_id", start=censored.start_date, end=censored.cohort_end),
            self.definition.collapse_days,
        ).select("person_id", cohort_start_date="start", cohort_end_date="end")

    def _with_end_dates(self, index: ir.Table) -> ir.Table:
        """``index`` with ``cohort_end`` by the end strategy (never past the period end)."""
        strategy = self.definition.end_strategy
        if isinstance(strategy, FixedOffset):
            anchor = index.start_date if strategy.date_field == "start" else index.end_date
            return index.mutate(
                cohort_end=ibis.least(anchor + days(strategy.offset_days), index.op_end)
            )
        if isinstance(strategy, DrugEra):
            return self._drug_era_end(index, strategy)
        return index.mutate(cohort_end=index.op_end)

    def _drug_era_end(self, index: ir.Table, strategy: DrugEra) -> ir.Table:
        # Eras of the concept set's exposures (gap_days bridged); the era holding the index
        # start ends the cohort. An index outside every era ends on its own start date.
        exposures = self._events.events(_drug_criterion(strategy.codeset_id)).select(
            "person_id", start="start_date", end="end_date"
        )
        eras = collapse(exposures, strategy.gap_days).rename(era_person="person_id")
        holding = (
            index.join(
                eras,
                [
                    index.person_id == eras.era_person,
                    eras.start <= index.start_date,
                    eras.end >= index.start_date,
                ],
            )
            .group_by("event_id")
            .agg(era_end=eras.end.max())
        )
        found = index.left_join(holding, index.event_id == holding.event_id)
        era_end = found.era_end + days(strategy.offset_days)
        return found.select(
            *[found[c] for c in INDEX_COLUMNS],
            cohort_end=ibis.least(ibis.coalesce(era_end, found.start_date), found.op_end),
        )

    def _censor(self, ended: ir.Table) -> ir.Table:
        criteria = self.definition.censoring_criteria
        if not criteria:
            return ended
        parts = [self._events.events(c).select("person_id", "start_date") for c in criteria]
        union = union_all(parts).rename(c_person="person_id", c_start="start_date")
        first = (
            ended.join(
                union,
                [
                    ended.person_id == union.c_person,
                    union.c_start >= ended.start_date,
                    union.c_start <= ended.cohort_end,
                ],
            )
            .group_by("event_id")
            .agg(censor=union.c_start.min())
        )
        joined = ended.left_join(first, ended.event_id == first.event_id)
        return joined.select(
            *[joined[c] for c in INDEX_COLUMNS],
            cohort_end=ibis.least(
                joined.cohort_end, ibis.coalesce(joined.censor, joined.cohort_end)
            ),
        )


def collapse(periods: ir.Table, gap_days: int) -> ir.Table:
    """Merge each person's ``start``/``end`` periods that overlap or lie ``gap_days`` apart.

    Gaps and islands: a period opens a new island when it starts after the latest end of
    the person's earlier periods plus ``gap_days``.
    """
    before = ibis.window(group_by="person_id", order_by=["start", "end"], rows=(None, -1))
    marked = periods.mutate(previous_end=periods.end.max().over(before))
    marked = marked.mutate(
        opens=ibis.ifelse(
            marked.previous_end.isnull() | (marked.start > marked.previous_end + days(gap_days)),
            1,
            0,
        )
    )
    running = ibis.window(group_by="person_id", order_by=["start", "end"], rows=(None, 0))
    numbered = marked.mutate(island=marked.opens.sum().over(running))
    return (
        numbered.group_by(["person_id", "island"])
        .agg(start=numbered.start.min(), end=numbered.end.max())
        .select("person_id", "start", "end")
    )


def _limit(events: ir.Table, limit: Limit, tiebreak: str = "source_id") -> ir.Table:
    if limit == "all":
        return events
    order = [events.start_date, events[tiebreak]]
    if limit == "last":
        order = [events.start_date.desc(), events[tiebreak].desc()]
    window = ibis.window(group_by="person_id", order_by=order)
    return events.filter(ibis.row_number().over(window) == 0)


def _window(
    window: Window, index: ir.Table, event_start: ir.DateValue, event_end: ir.DateValue
) -> list[ir.BooleanValue]:
    anchor = index.end_date if window.use_index_end else index.start_date
    placed = event_end if window.use_event_end else event_start
    conditions: list[ir.BooleanValue] = []
    if window.start is not None:
        conditions.append(placed >= anchor + days(window.start))
    if window.end is not None:
        conditions.append(placed <= anchor + days(window.end))
    return conditions


def _drug_criterion(codeset_id: int):  # type: ignore[no-untyped-def]
    from medlake.cohort.model import DrugExposure

    return DrugExposure(codeset_id=codeset_id)
