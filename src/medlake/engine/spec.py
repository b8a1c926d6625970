"""How tables are described: the vocabulary ``medlake.schema`` uses to declare the lake.

The engine turns a :class:`TableSpec` into a table on whatever backend holds the lake,
so the OMOP CDM and medlake's own tables are defined once, as data, in
``medlake.schema``. Logical types keep the CDM's own spelling (``integer``,
``varchar(50)``, ``datetime``...) so the definition can be compared field by field with
the official v5.4 field list; :func:`ibis_type` maps them to physical types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import ibis
import ibis.expr.datatypes as dt

# The CDM's logical types, plus the few medlake's own tables need.
_VARCHAR = re.compile(r"^varchar\((\d+|MAX)\)$", re.IGNORECASE)
_SIMPLE_TYPES: dict[str, dt.DataType] = {
    # OMOP integer ids are 32-bit in the DDL, but person ids built from hashes and
    # row counts of large sites overflow that; int64 costs nothing on columnar engines.
    "integer": dt.int64,
    "bigint": dt.int64,
    "float": dt.float64,
    "date": dt.date,
    "datetime": dt.timestamp,
    "boolean": dt.boolean,
    "binary": dt.binary,
    "json": dt.string,
}


def ibis_type(logical_type: str, *, nullable: bool = True) -> dt.DataType:
    """Physical Ibis type for a logical column type such as ``varchar(50)``."""
    key = logical_type.strip().lower()
    if _VARCHAR.match(key) or key in ("text", "string"):
        base: dt.DataType = dt.string
    elif key in _SIMPLE_TYPES:
        base = _SIMPLE_TYPES[key]
    else:
        raise ValueError(f"unknown logical column type {logical_type!r}")
    return base.copy(nullable=nullable)


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its name, logical type and constraints."""

    name: str
    logical_type: str
    required: bool = False
    primary_key: bool = False
    foreign_key: tuple[str, str] | None = None  # (table, column)
    description: str = ""

    def __post_init__(self) -> None:
        ibis_type(self.logical_type)  # fail at definition time on a typo

    @property
    def ibis_type(self) -> dt.DataType:
        return ibis_type(self.logical_type, nullable=not self.required)


@dataclass(frozen=True)
class TableSpec:
    """One table of the lake.

    ``group`` says where it belongs (``cdm`` clinical, ``vocabulary``, ``results``,
    ``medlake`` operational, ``restricted`` identifiers); ``restricted`` tables hold
    direct identifiers and are readable only by roles allowed to see them.
    """

    name: str
    columns: tuple[ColumnSpec, ...]
    group: str
    description: str = ""
    restricted: bool = False
    unique: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.primary_key)

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name!r}")

    def ibis_schema(self) -> ibis.Schema:
        return ibis.schema({column.name: column.ibis_type for column in self.columns})
