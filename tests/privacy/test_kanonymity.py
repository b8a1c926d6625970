"""k-anonymity: after enforcement every quasi-identifier combination occurs at least k times,
checked with pandas; rows lose only what they must."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from medlake.privacy import enforce_k_anonymity, k_anonymity

QIS = ["age_band", "sex", "region"]


def _pandas_min_class(frame: pd.DataFrame, qis: list[str]) -> int | None:
    if frame.empty:
        return None
    return int(frame.groupby(qis, dropna=False).size().min())


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 80))
    return pa.table(
        {
            "row": list(range(n)),
            "age_band": draw(
                st.lists(st.sampled_from(["20-24", "25-29", "90+", None]), min_size=n, max_size=n)
            ),
            "sex": draw(st.lists(st.sampled_from(["F", "M"]), min_size=n, max_size=n)),
            "region": draw(
                st.lists(st.sampled_from(["11", "31", "44", None]), min_size=n, max_size=n)
            ),
            "hba1c": draw(st.lists(st.floats(4, 14), min_size=n, max_size=n)),
        }
    )


@settings(max_examples=60, deadline=None)
@given(tables(), st.integers(1, 8))
def test_enforced_table_is_k_anonymous_and_loses_only_small_classes(
    table: pa.Table, k: int
) -> None:
    result = enforce_k_anonymity(table, QIS, k)
    before = table.to_pandas()
    after = result.table.to_pandas()

    smallest = _pandas_min_class(after, QIS)
    assert smallest is None or smallest >= k
    assert result.k_achieved == smallest

    sizes = before.groupby(QIS, dropna=False)["row"].transform("size")
    safe = before[sizes >= k]
    # Rows already in classes of k or more come through untouched.
    kept = after.set_index("row")
    assert set(safe["row"]) <= set(kept.index)
    for row in safe.itertuples():
        assert kept.loc[row.row, "sex"] == row.sex
    # Every other row is either kept with all its quasi-identifiers null, or dropped.
    unsafe = before[sizes < k]
    assert result.suppressed_rows == len(unsafe)
    for row in unsafe.itertuples():
        if row.row in kept.index:
            assert kept.loc[row.row, QIS].isna().all()
    assert result.dropped_rows == len(before) - len(after)
    # The analysis columns are never changed.
    assert (
        kept.loc[after["row"], "hba1c"].to_numpy()
        == before.set_index("row").loc[after["row"], "hba1c"].to_numpy()
    ).all()


def test_k_anonymity_measures_the_smallest_class() -> None:
    table = pa.table({"sex": ["F", "F", "M", None, None], "age": ["1", "1", "1", "2", "2"]})
    assert k_anonymity(table, ["sex", "age"]) == 1
    assert k_anonymity(table, ["age"]) == 2
    assert k_anonymity(table.slice(0, 0), ["age"]) is None
