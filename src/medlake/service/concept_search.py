"""Concept search for the cohort builder: text in, concepts (standard first) out.

A thin use case over :func:`medlake.vocab.search.concept_search_query` (how matching and
ranking work is documented there): opens the lake, maps a cohort criterion's domain
(``condition_occurrence``...) or an OMOP domain (``Condition``...) to the vocabulary's
``domain_id``, and returns plain rows the API and the web UI serialize as they are.
No person-level data is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from medlake.access import Permission
from medlake.config import open_workspace
from medlake.errors import InputError
from medlake.service.policy import authorized
from medlake.service.workspace import open_lake
from medlake.vocab.search import concept_search_query

#: The vocabulary domain of the concepts a cohort criterion of each domain uses.
CRITERION_DOMAINS: dict[str, list[str]] = {
    "condition_occurrence": ["Condition"],
    "drug_exposure": ["Drug"],
    "procedure_occurrence": ["Procedure"],
    "measurement": ["Measurement"],
    "observation": ["Observation"],
    "visit_occurrence": ["Visit"],
    "device_exposure": ["Device"],
    "specimen": ["Specimen"],
    "death": ["Condition", "Observation"],  # a cause of death
}

MAX_LIMIT = 200


@dataclass(frozen=True)
class ConceptMatch:
    """One concept found; ``synonym`` is the synonym that matched when the name did not."""

    concept_id: int
    concept_name: str
    domain_id: str
    vocabulary_id: str
    concept_class_id: str
    concept_code: str
    standard: bool  # standard_concept = 'S': what a criterion's codeset_id should use
    classification: bool  # standard_concept = 'C' (e.g. ICD10CM chapters, ATC levels)
    valid: bool  # invalid_reason is empty
    synonym: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@authorized(Permission.COUNT)
def search_concepts(
    workspace_dir: Path | None, text: str, domain: str | None = None, limit: int = 20
) -> list[ConceptMatch]:
    """The ``limit`` best concepts for ``text`` (name, synonym, code or id), best first.

    ``domain``: a cohort criterion's domain (``drug_exposure``) or an OMOP domain id
    (``Drug``); None searches every domain.
    """
    if not text.strip():
        raise InputError("give some text to search concepts for")
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    domain_ids = None
    if domain is not None:
        domain_ids = CRITERION_DOMAINS.get(domain, [domain])
    with open_lake(open_workspace(workspace_dir)) as engine:
        rows = engine.execute(
            concept_search_query(engine, text, domain_ids=domain_ids, limit=limit)
        ).to_pylist()
    return [
        ConceptMatch(
            concept_id=int(row["concept_id"]),
            concept_name=row["concept_name"],
            domain_id=row["domain_id"],
            vocabulary_id=row["vocabulary_id"],
            concept_class_id=row["concept_class_id"],
            concept_code=row["concept_code"],
            standard=row["standard_concept"] == "S",
            classification=row["standard_concept"] == "C",
            valid=not row["invalid_reason"],
            synonym=row["synonym"],
        )
        for row in rows
    ]
