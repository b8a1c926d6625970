"""k-anonymity over chosen quasi-identifiers, enforced by suppression.

A table is k-anonymous over quasi-identifiers Q when every combination of Q values that
occurs, occurs in at least k rows (Sweeney 2002). :func:`enforce_k_anonymity` first
suppresses the quasi-identifiers (sets them to null) of rows in classes smaller than k,
which keeps their other columns for analysis; those rows then form one class of their
own, and if that class is itself smaller than k they are dropped. The result is
k-anonymous by construction, and :func:`k_anonymity` measures it independently.

The check is a group-by; libraries that do it (pycanon, ARX) bring whole anonymization
frameworks for one ``group_by().count()``, so it is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_K = 5


@dataclass(frozen=True)
class KAnonymityResult:
    """The protected table and what it cost.

    ``k_achieved``: the smallest class size left (None for an empty table);
    ``suppressed_rows``: rows whose quasi-identifiers were set to null;
    ``dropped_rows``: rows removed because even suppressed they were fewer than k.
    """

    table: pa.Table
    quasi_identifiers: tuple[str, ...]
    k: int
    k_achieved: int | None
    suppressed_rows: int
    dropped_rows: int


def class_sizes(table: pa.Table, quasi_identifiers: Sequence[str]) -> pa.Array:
    """For each row, how many rows share its quasi-identifier values (null equals null).

    Each column is dictionary-encoded (null as its own code), the codes combined column
    by column into one class number (renumbered densely after each step, so it never
    overflows), and classes counted with ``numpy.unique``. Not an Arrow join: Arrow never
    matches null keys, and a suppressed quasi-identifier is exactly a null that must
    match its peers.
    """
    n = table.num_rows
    key = np.zeros(n, dtype=np.int64)
    for name in quasi_identifiers:
        encoded = pc.dictionary_encode(table.column(name).combine_chunks())
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        key = key * (len(encoded.dictionary) + 1) + codes + 1
        key = np.unique(key, return_inverse=True)[1].astype(np.int64).ravel()
    if n == 0:
        return pa.array([], type=pa.int64())
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return pa.array(counts[inverse.ravel()], type=pa.int64())


def k_anonymity(table: pa.Table, quasi_identifiers: Sequence[str]) -> int | None:
    """The k the table achieves: its smallest class size, None when it has no rows."""
    if table.num_rows == 0:
        return None
    return int(pc.min(class_sizes(table, quasi_identifiers)).as_py())


def enforce_k_anonymity(
    table: pa.Table, quasi_identifiers: Sequence[str], k: int = DEFAULT_K
) -> KAnonymityResult:
    """Make ``table`` k-anonymous over ``quasi_identifiers`` by suppression (see module)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    qis = tuple(quasi_identifiers)
    missing = [q for q in qis if q not in table.column_names]
    if missing:
        raise ValueError(f"quasi-identifiers not in the table: {', '.join(missing)}")
    small = pc.less(class_sizes(table, qis), k)
    suppressed = int(pc.sum(small).as_py() or 0)
    protected = table
    if suppressed:
        for name in qis:
            column = protected.column(name)
            nulls = pa.nulls(len(column), column.type)
            position = protected.column_names.index(name)
            protected = protected.set_column(position, name, pc.if_else(small, nulls, column))
    dropped = 0
    if qis and protected.num_rows:
        sizes = class_sizes(protected, qis)
        keep = pc.greater_equal(sizes, k)
        dropped = protected.num_rows - int(pc.sum(keep).as_py() or 0)
        protected = protected.filter(keep)
    return KAnonymityResult(
        table=protected,
        quasi_identifiers=qis,
        k=k,
        k_achieved=k_anonymity(protected, qis),
        suppressed_rows=suppressed,
        dropped_rows=dropped,
    )
