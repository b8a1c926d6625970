"""An independent pandas reading of cohort semantics over the lake's tables, for the tests.

Each test composes these few steps by hand for its own definition, so an expected count
is a short pandas computation a reader can check against the definition, not a second
compiler. Conventions written down once here (Circe's, as the compiler documents them):
a missing end date is start + 1 day (drugs: + days_supply); age is the calendar-year
difference; a lake without observation_period rows is observed from each person's first
to last record; correlated events must start inside the index event's observation period.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from medlake.config import open_workspace
from medlake.engine import open_workspace_engine

DAY = pd.Timedelta(days=1)

# domain -> (table, id, concept, source concept, start, end, type)
DOMAINS = {
    "condition_occurrence": (
        "condition_occurrence",
        "condition_occurrence_id",
        "condition_concept_id",
        "condition_source_concept_id",
        "condition_start_date",
        "condition_end_date",
    ),
    "drug_exposure": (
        "drug_exposure",
        "drug_exposure_id",
        "drug_concept_id",
        "drug_source_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_end_date",
    ),
    "procedure_occurrence": (
        "procedure_occurrence",
        "procedure_occurrence_id",
        "procedure_concept_id",
        "procedure_source_concept_id",
        "procedure_date",
        "procedure_end_date",
    ),
    "measurement": (
        "measurement",
        "measurement_id",
        "measurement_concept_id",
        "measurement_source_concept_id",
        "measurement_date",
        None,
    ),
    "observation": (
        "observation",
        "observation_id",
        "observation_concept_id",
        "observation_source_concept_id",
        "observation_date",
        None,
    ),
    "visit_occurrence": (
        "visit_occurrence",
        "visit_occurrence_id",
        "visit_concept_id",
        "visit_source_concept_id",
        "visit_start_date",
        "visit_end_date",
    ),
    "device_exposure": (
        "device_exposure",
        "device_exposure_id",
        "device_concept_id",
        "device_source_concept_id",
        "device_exposure_start_date",
        "device_exposure_end_date",
    ),
    "specimen": ("specimen", "specimen_id", "specimen_concept_id", None, "specimen_date", None),
    "death": ("death", None, "cause_concept_id", "cause_source_concept_id", "death_date", None),
}
TABLES = [d[0] for d in DOMAINS.values()] + [
    "person",
    "concept",
    "concept_ancestor",
    "concept_relationship",
    "omics_sample",
]


class Lake:
    """The lake's tables as pandas frames (read once, engine closed)."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        with open_workspace_engine(open_workspace(workspace)) as engine:
            self.frames = {
                # nullable Int64: ids are 63-bit hashes, which float64 would round
                name: engine.execute(engine.table(name)).to_pandas(
                    types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype()}.get
                )
                for name in TABLES
            }
        for frame in self.frames.values():
            for column in frame.columns:
                if column.endswith("_date"):
                    frame[column] = pd.to_datetime(frame[column])
        self.person = self.frames["person"].set_index("person_id")

    # ------------------------------------------------------------------ concepts

    def concepts(self, vocabulary: str, *codes: str, descendants: bool = False) -> set[int]:
        concept = self.frames["concept"]
        ids = set(
            concept.loc[
                (concept.vocabulary_id == vocabulary) & concept.concept_code.isin(codes),
                "concept_id",
            ]
        )
        if descendants:
            ancestor = self.frames["concept_ancestor"]
            ids |= set(
                ancestor.loc[ancestor.ancestor_concept_id.isin(ids), "descendant_concept_id"]
            )
        return {int(i) for i in ids}

    # ------------------------------------------------------------------ events

    def events(
        self, domain: str, concepts: set[int] | None = None, source: bool = False
    ) -> pd.DataFrame:
        """Events of a domain in concept set ``concepts`` (on the source column with ``source``)."""
        table, id_col, concept_col, source_col, start, end = DOMAINS[domain]
        t = self.frames[table]
        out = pd.DataFrame(
            {
                "person_id": t.person_id,
                "source_id": t[id_col] if id_col else t.person_id,
                "start": t[start],
                "concept_id": t[concept_col],
                "visit_id": (
                    t["visit_occurrence_id"]
                    if "visit_occurrence_id" in t
                    else pd.Series(pd.NA, index=t.index, dtype="Int64")
                ),
            }
        )
        end_value = t[end] if end else pd.Series(pd.NaT, index=t.index)
        if domain == "drug_exposure":
            supplied = t[start] + pd.to_timedelta(t.days_supply, unit="D")
            end_value = end_value.fillna(supplied)
        out["end"] = end_value.fillna(t[start] + DAY)
        for column in (
            "value_as_number",
            "unit_concept_id",
            "range_low",
            "range_high",
            "value_as_concept_id",
        ):
            if column in t:
                out[column] = t[column]
        if concepts is not None:
            column = t[source_col] if source else out.concept_id
            out = out[column.isin(concepts)]
        return out.reset_index(drop=True)

    def periods(self) -> pd.DataFrame:
        """Each person's span from first to last recorded date (the lake has no
        observation_period): start dates, and end dates where the table has them."""
        spans = []
        for table, _, _, _, start, end in DOMAINS.values():
            t = self.frames[table]
            last = t[end].fillna(t[start]) if end else t[start]
            spans.append(pd.DataFrame({"person_id": t.person_id, "start": t[start], "end": last}))
        both = pd.concat(spans)
        return (
            both.groupby("person_id")
            .agg(op_start=("start", "min"), op_end=("end", "max"))
            .reset_index()
        )

    # ------------------------------------------------------------------ index and windows

    def entry(
        self, events: pd.DataFrame, prior: int = 0, post: int = 0, limit: str = "first"
    ) -> pd.DataFrame:
        """Index events: inside an observation period with prior/post days, then limited."""
        joined = events.merge(self.periods(), on="person_id")
        joined = joined[
            (joined.start >= joined.op_start + prior * DAY)
            & (joined.start + post * DAY <= joined.op_end)
        ]
        joined = joined.sort_values(["person_id", "start", "source_id"])
        if limit == "first":
            joined = joined.groupby("person_id").head(1)
        elif limit == "last":
            joined = joined.groupby("person_id").tail(1)
        return joined.reset_index(drop=True).rename_axis("event_id").reset_index()

    def counts(
        self,
        index: pd.DataFrame,
        events: pd.DataFrame,
        start: int | None = None,
        end: int | None = None,
        *,
        index_end: bool = False,
        event_end: bool = False,
        same_visit: bool = False,
        distinct: str | None = None,
        observation_period: bool = True,
    ) -> pd.Series:
        """Per index event, the number of ``events`` in the window (days from the index)."""
        pairs = index.merge(events, on="person_id", suffixes=("", "_e"))
        anchor = pairs.end if index_end else pairs.start
        placed = pairs.end_e if event_end else pairs.start_e
        keep = pd.Series(True, index=pairs.index)
        if start is not None:
            keep &= placed >= anchor + start * DAY
        if end is not None:
            keep &= placed <= anchor + end * DAY
        if same_visit:
            keep &= pairs.visit_id == pairs.visit_id_e
        if observation_period:
            keep &= (pairs.start_e >= pairs.op_start) & (pairs.start_e <= pairs.op_end)
        pairs = pairs[keep]
        grouped = pairs.groupby("event_id")
        # the event's own column (the index's namesake got no suffix in the merge)
        n = grouped[f"{distinct}_e"].nunique() if distinct else grouped.size()
        return n.reindex(index.event_id, fill_value=0).set_axis(index.index)

    def age(self, index: pd.DataFrame) -> pd.Series:
        return index.start.dt.year - index.person_id.map(self.person.year_of_birth)

    def gender(self, index: pd.DataFrame) -> pd.Series:
        return index.person_id.map(self.person.gender_concept_id)


def attrition(index: pd.DataFrame, rules: Sequence[pd.Series]) -> dict[str, object]:
    """Persons with an index event, then persons with an event passing rules 1..i."""
    passed = pd.Series(True, index=index.index)
    remaining = []
    satisfied = []
    for rule in rules:
        rule = rule.fillna(False).astype(bool)  # an unknown age or value does not pass
        passed = passed & rule
        remaining.append(int(index.loc[passed, "person_id"].nunique()))
        satisfied.append(int(index.loc[rule, "person_id"].nunique()))
    return {
        "initial": int(index.person_id.nunique()),
        "remaining": remaining,
        "satisfied": satisfied,
    }


def observed(result: object) -> dict[str, object]:
    """The same shape from a :class:`~medlake.service.cohort.CohortCount`."""
    return {
        "initial": result.initial,  # type: ignore[attr-defined]
        "remaining": [r.remaining for r in result.rules],  # type: ignore[attr-defined]
        "satisfied": [r.satisfied_alone for r in result.rules],  # type: ignore[attr-defined]
    }
