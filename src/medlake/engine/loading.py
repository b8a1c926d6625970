"""Arrow data shaped to a lake table before any backend sees it.

Every engine loads through the same steps, so a file that loads on DuckDB loads the same
way on Spark: columns are matched by name (any order), nullable columns the data lacks
are filled with nulls, values are cast to the table's types with Arrow's *safe* casts
(no silent truncation or overflow), and required columns may not be missing or null.
Problems are reported as :class:`~medlake.errors.EngineError` naming the table and the
column, before a row reaches storage where possible.

Batches are conformed one at a time, lazily, so loading a
:class:`pyarrow.RecordBatchReader` holds only a batch or two in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from medlake.errors import EngineError

#: What :meth:`medlake.engine.Engine.load_arrow` accepts.
ArrowData = pa.Table | pa.RecordBatchReader | pa.RecordBatch | Iterable[pa.RecordBatch]


@dataclass(frozen=True)
class LoadTarget:
    """The table being loaded: its columns in storage order and which must have values.

    ``schema`` has every field nullable; whether a value is required is kept apart in
    ``required`` because backends differ in what they record (Spark forgets NOT NULL on
    Parquet tables), while the check must be the same everywhere.
    """

    table: str
    schema: pa.Schema
    required: frozenset[str] = field(default_factory=frozenset)
    engine: str = ""

    def error(self, message: str) -> EngineError:
        return EngineError(f"cannot load into {self.table}: {message}", engine=self.engine)


@dataclass
class LoadProgress:
    """Rows conformed so far, and the first conformance error (which a backend may wrap)."""

    rows: int = 0
    error: EngineError | None = None


def iter_record_batches(data: ArrowData) -> Iterator[pa.RecordBatch]:
    """The record batches of any accepted input, without reading ahead."""
    if isinstance(data, pa.Table):
        yield from data.to_batches()
    elif isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.RecordBatchReader):
        yield from data
    else:
        for batch in data:
            if not isinstance(batch, pa.RecordBatch):
                raise TypeError(f"expected pyarrow.RecordBatch items, got {type(batch).__name__}")
            yield batch


def conform_batches(
    target: LoadTarget, batches: Iterable[pa.RecordBatch], progress: LoadProgress
) -> Iterator[pa.RecordBatch]:
    """Conform each batch to ``target``, counting rows and remembering the first error.

    The error is both raised and kept in ``progress``: a backend that pulls batches from
    native code (DuckDB scanning an Arrow stream) reports it as its own error, and the
    engine then raises the original, clearer one instead.
    """
    checked: pa.Schema | None = None
    for batch in batches:
        try:
            if checked is None or not batch.schema.equals(checked):
                check_columns(target, batch.schema)
                checked = batch.schema
            conformed = conform_batch(target, batch)
        except EngineError as exc:
            progress.error = exc
            raise
        progress.rows += conformed.num_rows
        yield conformed


def check_columns(target: LoadTarget, schema: pa.Schema) -> None:
    """Refuse data with a column the table lacks, a duplicate, or a missing required column."""
    known = set(target.schema.names)
    seen: set[str] = set()
    for name in schema.names:
        if name not in known:
            columns = ", ".join(target.schema.names)
            raise target.error(f"column {name!r} is not in the table (its columns: {columns})")
        if name in seen:
            raise target.error(f"column {name!r} appears more than once in the data")
        seen.add(name)
    for name in target.schema.names:
        if name in target.required and name not in seen:
            raise target.error(f"required column {name!r} is missing from the data")


def conform_batch(target: LoadTarget, batch: pa.RecordBatch) -> pa.RecordBatch:
    """One batch with exactly the target's columns, in its order and types."""
    arrays = []
    for target_field in target.schema:
        name = target_field.name
        index = batch.schema.get_field_index(name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, type=target_field.type))
            continue
        arrays.append(_cast_column(target, name, batch.column(index), target_field.type))
        if name in target.required and arrays[-1].null_count:
            raise target.error(
                f"required column {name!r} has {arrays[-1].null_count} null value(s)"
            )
    return pa.RecordBatch.from_arrays(arrays, schema=target.schema)


def _cast_column(target: LoadTarget, name: str, column: pa.Array, to: pa.DataType) -> pa.Array:
    if column.type == to:
        return column
    try:
        # safe=True: a value that does not fit (1.5 into an integer, 2**40 into int32,
        # 'x' into a date) is an error rather than a quietly different number.
        return pc.cast(column, to, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise target.error(f"column {name!r}: cannot convert {column.type} to {to}: {exc}") from exc
