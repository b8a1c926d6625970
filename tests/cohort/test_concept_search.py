"""Concept search for the cohort builder against a pandas reading of the vocabulary.

The reference applies the documented rules (medlake.vocab.search) to ``concept`` and
``concept_synonym`` read from the lake: case-insensitive substring of name or synonym,
code prefix, or the id; valid, then standard, then classification concepts first; then
exact id/code, code prefix, name/synonym prefix, anywhere; shorter names; id.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.errors import InputError
from medlake.service.concept_search import CRITERION_DOMAINS, search_concepts


@pytest.fixture(scope="module")
def vocabulary(hospital_lake: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    with open_workspace_engine(open_workspace(hospital_lake.workspace)) as engine:
        concept = engine.execute(engine.table("concept")).to_pandas()
        synonym = engine.execute(engine.table("concept_synonym")).to_pandas()
    return concept, synonym


def expected(
    vocabulary: tuple[pd.DataFrame, pd.DataFrame], text: str, domains: list[str] | None, limit: int
) -> list[int]:
    concept, synonym = vocabulary
    needle = text.strip().lower()
    matching_synonyms = synonym[
        synonym.concept_synonym_name.str.lower().str.contains(needle, regex=False)
    ]
    best_synonym = (
        matching_synonyms.assign(n=matching_synonyms.concept_synonym_name.str.len())
        .sort_values(["concept_id", "n"]).groupby("concept_id").concept_synonym_name.first()
    )  # fmt: skip
    rows = []
    for c in concept.itertuples():
        name, code = c.concept_name.lower(), c.concept_code.lower()
        syn = best_synonym.get(c.concept_id)
        exact = code == needle or (needle.isdigit() and c.concept_id == int(needle))
        if not (exact or code.startswith(needle) or needle in name or syn is not None):
            continue
        if domains and c.domain_id not in domains:
            continue
        starts = name.startswith(needle) or (syn is not None and syn.lower().startswith(needle))
        match = 0 if exact else 1 if code.startswith(needle) else 2 if starts else 3
        standard = {"S": 0, "C": 1}.get(c.standard_concept, 2)
        valid = 0 if not c.invalid_reason else 1
        rows.append((valid, standard, match, len(c.concept_name), c.concept_id))
    return [row[-1] for row in sorted(rows)[:limit]]


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("metformin", None),
        ("E11", None),
        ("e11.", "condition_occurrence"),
        ("2型糖尿病", None),  # Chinese names are synonyms in Athena's layout
        ("糖尿病", "Condition"),
        ("4548-4", None),
        ("hemoglobin", "measurement"),
        ("%", None),  # not a LIKE pattern
        ("diabetes", "drug_exposure"),  # nothing: diabetes is a condition
        ("  Type 2 ", None),
    ],
)
def test_search_matches_the_documented_rules(
    hospital_lake: Any, vocabulary: Any, text: str, domain: str | None
) -> None:
    domains = None if domain is None else CRITERION_DOMAINS.get(domain, [domain])
    found = search_concepts(hospital_lake.workspace, text, domain=domain, limit=15)
    assert [m.concept_id for m in found] == expected(vocabulary, text, domains, 15)


def test_results_say_what_a_criterion_needs(hospital_lake: Any, vocabulary: Any) -> None:
    concept, _ = vocabulary
    (metformin,) = search_concepts(hospital_lake.workspace, "metformin", "drug_exposure")
    row = concept[concept.concept_id == metformin.concept_id].iloc[0]
    assert (metformin.vocabulary_id, metformin.concept_code) == (
        row.vocabulary_id,
        row.concept_code,
    )
    assert metformin.standard == (row.standard_concept == "S")
    chinese = search_concepts(hospital_lake.workspace, "二甲双胍")
    assert [c.concept_id for c in chinese] == [metformin.concept_id]
    assert chinese[0].synonym == "二甲双胍"
    assert metformin.synonym is None
    assert chinese[0].as_dict()["concept_name"] == "metformin"


def test_empty_text_and_silly_limits_are_refused(hospital_lake: Any) -> None:
    with pytest.raises(InputError):
        search_concepts(hospital_lake.workspace, "  ")
    with pytest.raises(InputError):
        search_concepts(hospital_lake.workspace, "E11", limit=0)
