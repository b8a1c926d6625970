"""SQL the engine writes itself, built as SQLGlot trees: never by pasting strings.

Names are quoted identifiers and types come from the backend's own Ibis type mapper,
so one :class:`~medlake.engine.spec.TableSpec` becomes the right ``CREATE TABLE`` on
each backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlglot
import sqlglot.expressions as sge

from medlake.engine.spec import TableSpec


def table_ref(name: str) -> sge.Table:
    """A quoted reference to the table ``name``."""
    return sge.Table(this=sqlglot.to_identifier(name, quoted=True))


def create_table_statement(
    spec: TableSpec,
    *,
    type_mapper: Any,
    dialect: str,
    properties: Sequence[sge.Expression] = (),
) -> str:
    """``CREATE TABLE`` for ``spec``, required columns ``NOT NULL``, in ``dialect``.

    ``type_mapper`` is the Ibis backend's (``backend.compiler.type_mapper``), which
    knows that a string is ``TEXT`` on DuckDB and ``STRING`` on Spark.
    """
    columns = [
        sge.ColumnDef(
            this=sqlglot.to_identifier(column.name, quoted=True),
            kind=type_mapper.from_ibis(column.ibis_type.copy(nullable=True)),
            constraints=(
                [sge.ColumnConstraint(kind=sge.NotNullColumnConstraint())]
                if column.required
                else []
            ),
        )
        for column in spec.columns
    ]
    create = sge.Create(
        kind="TABLE",
        this=sge.Schema(this=table_ref(spec.name), expressions=columns),
        properties=sge.Properties(expressions=list(properties)) if properties else None,
    )
    return create.sql(dialect=dialect)


def drop_table_statement(name: str, *, dialect: str) -> str:
    """``DROP TABLE IF EXISTS`` ``name`` in ``dialect``."""
    return sge.Drop(kind="TABLE", this=table_ref(name), exists=True).sql(dialect=dialect)
