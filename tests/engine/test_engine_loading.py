"""Arrow data is conformed to the table before any backend sees it (no engine needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from medlake.engine.loading import LoadProgress, LoadTarget, conform_batches, iter_record_batches
from medlake.errors import EngineError

TARGET = LoadTarget(
    table="lab",
    schema=pa.schema({"lab_id": pa.int64(), "value": pa.float64(), "unit": pa.string()}),
    required=frozenset({"lab_id"}),
)


def conform(data: pa.Table) -> tuple[pa.Table, LoadProgress]:
    progress = LoadProgress()
    batches = list(conform_batches(TARGET, iter_record_batches(data), progress))
    return pa.Table.from_batches(batches, schema=TARGET.schema), progress


def test_columns_come_out_in_table_order_with_missing_ones_null() -> None:
    table, progress = conform(pa.table({"value": [1.5, 2.0], "lab_id": [1, 2]}))
    assert table.column_names == ["lab_id", "value", "unit"]
    assert table.to_pylist() == [
        {"lab_id": 1, "value": 1.5, "unit": None},
        {"lab_id": 2, "value": 2.0, "unit": None},
    ]
    assert progress.rows == 2


def test_batches_are_conformed_one_at_a_time() -> None:
    data = pa.table({"lab_id": list(range(10))})
    pulled: list[int] = []

    def source():
        for batch in data.to_batches(max_chunksize=3):
            pulled.append(batch.num_rows)
            yield batch

    stream = conform_batches(TARGET, source(), LoadProgress())
    next(stream)
    assert pulled == [3]  # nothing read ahead


def test_a_later_batch_with_bad_values_is_reported_and_remembered() -> None:
    good = pa.record_batch({"lab_id": pa.array(["1"])})
    bad = pa.record_batch({"lab_id": pa.array(["x"])})
    progress = LoadProgress()
    with pytest.raises(EngineError, match="'lab_id'") as caught:
        list(conform_batches(TARGET, [good, bad], progress))
    assert progress.rows == 1
    assert progress.error is caught.value


def test_duplicate_column_is_refused() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1]), pa.array([2])], names=["lab_id", "lab_id"]
    )
    with pytest.raises(EngineError, match="'lab_id' appears more than once"):
        list(conform_batches(TARGET, [batch], LoadProgress()))


def test_integer_overflow_is_an_error_not_a_wrap_around() -> None:
    target = LoadTarget("t", pa.schema({"n": pa.int32()}))
    with pytest.raises(EngineError, match="'n'"):
        list(conform_batches(target, [pa.record_batch({"n": [2**40]})], LoadProgress()))


def test_non_batches_in_an_iterable_are_refused() -> None:
    with pytest.raises(TypeError, match="RecordBatch"):
        list(iter_record_batches([{"lab_id": 1}]))  # type: ignore[list-item]
