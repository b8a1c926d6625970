"""Builders for the cohort definitions the count tests write (plain JSON dicts)."""

from __future__ import annotations

from typing import Any

import pandas as pd

Json = dict[str, Any]


def cs(id_: int, vocabulary: str, *codes: str, descendants: bool = False, **extra: Any) -> Json:
    items = [
        {"vocabulary_id": vocabulary, "concept_code": c, "include_descendants": descendants}
        for c in codes
    ]
    return {"id": id_, "name": f"set {id_}", "items": items, **extra}


def rule(
    name: str,
    *criteria: Json,
    type_: str = "all",
    count: int | None = None,
    demographics: list[Json] | None = None,
    groups: list[Json] | None = None,
) -> Json:
    group: Json = {"type": type_, "criteria": list(criteria)}
    if count is not None:
        group["count"] = count
    if demographics:
        group["demographics"] = demographics
    if groups:
        group["groups"] = groups
    return {"name": name, "expression": group}


def first(events: pd.DataFrame) -> pd.DataFrame:
    return events.sort_values(["person_id", "start", "source_id"]).groupby("person_id").head(1)
