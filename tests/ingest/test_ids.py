"""Row ids over Arrow (``stable_ids``) are the per-key ``stable_id``, whatever the path.

The reference is :func:`medlake.ingest.ids.stable_id`, one key at a time: repeated keys,
nulls, non-ASCII keys and the ``distinct`` hint (keys hashed as they come) must all give
its numbers.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from medlake.ingest.ids import stable_id, stable_ids

KEYS = ["Observation/1", "Observation/2", "张三/3", "Observation/1", None, "", "x" * 300]


def reference(prefix: tuple[str, ...], keys: list[str | None]) -> list[int | None]:
    return [None if k is None else stable_id(*prefix, k) for k in keys]


@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize(
    "keys",
    [KEYS, [k for k in KEYS if k is not None], sorted({k for k in KEYS if k}), []],
    ids=["repeats-and-nulls", "repeats", "all-distinct", "empty"],
)
def test_stable_ids_equal_stable_id_per_key(keys: list[str | None], distinct: bool) -> None:
    prefix = ("measurement", "emr")
    got = stable_ids(prefix, pa.array(keys, pa.string()), distinct=distinct)
    assert got.type == pa.int64()
    assert got.to_pylist() == reference(prefix, keys)


def test_chunked_keys_give_the_same_ids() -> None:
    prefix = ("visit_occurrence", "his")
    chunked = pa.chunked_array([pa.array(KEYS[:3]), pa.array(KEYS[3:])], pa.string())
    for distinct in (False, True):
        assert stable_ids(prefix, chunked, distinct=distinct).to_pylist() == reference(prefix, KEYS)
