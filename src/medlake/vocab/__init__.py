"""OMOP vocabularies: the bundled demo vocabulary, the OHDSI Athena loader, vocabulary queries.

The lake's concept tables follow OMOP CDM v5.4. A hospital loads its own Athena
download (``medlake vocab load DIR``); until then a new workspace has the small demo
vocabulary bundled in ``medlake/vocab/data`` (real codes and names, local concept_ids;
see the README there), loaded by the same Athena loader.
"""

from medlake.vocab.athena import (
    ATHENA_FILES,
    REQUIRED_FILES,
    ProgressCallback,
    TableLoad,
    VocabularyLoadSummary,
    demo_vocabulary_dir,
    find_athena_files,
    load_athena_vocabulary,
    load_demo_vocabulary,
    read_athena_file,
)
from medlake.vocab.queries import ancestors_query, concept_lookup_query, descendants_query

__all__ = [
    "ATHENA_FILES",
    "REQUIRED_FILES",
    "ProgressCallback",
    "TableLoad",
    "VocabularyLoadSummary",
    "ancestors_query",
    "concept_lookup_query",
    "demo_vocabulary_dir",
    "descendants_query",
    "find_athena_files",
    "load_athena_vocabulary",
    "load_demo_vocabulary",
    "read_athena_file",
]
