"""The lake's tables as data: OMOP CDM v5.4 plus medlake's own, with no I/O.

Every table the lake holds is declared here once, as a :class:`medlake.engine.TableSpec`
(names, logical types, required flags, keys), so the engine can create it on any
backend, quality checks can test conformance against it, and tests can compare it
field by field with OHDSI's official v5.4 field list. Groups: ``cdm`` (clinical, health
system, derived, metadata), ``vocabulary``, ``results`` (cohorts), ``medlake``
(operational) and ``restricted`` (direct identifiers). How a lake moves from one
:data:`SCHEMA_VERSION` to the next is in :mod:`medlake.schema.migrations`.
"""

from __future__ import annotations

from medlake.engine import TableSpec
from medlake.schema.access_tables import ACCESS_TABLES
from medlake.schema.empi_tables import EMPI_TABLES
from medlake.schema.governance_tables import GOVERNANCE_TABLES
from medlake.schema.job_tables import JOB_TABLES
from medlake.schema.medlake_tables import MEDLAKE_TABLES
from medlake.schema.omop import OMOP_TABLES

#: The schema version this medlake writes; the last migration's version.
SCHEMA_VERSION: int = 5

#: Every table, OMOP first (in the field list's order), then medlake's.
ALL_TABLES: tuple[TableSpec, ...] = (
    OMOP_TABLES + MEDLAKE_TABLES + EMPI_TABLES + GOVERNANCE_TABLES + ACCESS_TABLES + JOB_TABLES
)

#: The groups tables belong to.
GROUPS: tuple[str, ...] = ("cdm", "vocabulary", "results", "medlake", "restricted")

_BY_NAME: dict[str, TableSpec] = {table.name: table for table in ALL_TABLES}


def table_spec(name: str) -> TableSpec:
    """The table called ``name`` (e.g. ``"person"``, ``"ingest_batch"``).

    Raises:
        KeyError: no table has that name; the message says so plainly.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no table named {name!r} in the medlake schema") from None


def tables_in_group(group: str) -> tuple[TableSpec, ...]:
    """The tables of one group, in :data:`ALL_TABLES` order.

    Raises:
        ValueError: ``group`` is not one of :data:`GROUPS`.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown table group {group!r}; groups are {', '.join(GROUPS)}")
    return tuple(table for table in ALL_TABLES if table.group == group)


__all__ = [
    "ALL_TABLES",
    "GROUPS",
    "MEDLAKE_TABLES",
    "OMOP_TABLES",
    "SCHEMA_VERSION",
    "table_spec",
    "tables_in_group",
]
