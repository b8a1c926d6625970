"""De-identification throughput: pseudonyms, date shifts, k-anonymity, attrition suppression.

Prints each figure with a reference run in the same script: pseudonyms against a plain
SHA-256 of each id (what an unkeyed hash would cost), k-anonymity's class sizes against
pandas ``groupby(...).transform("size")``, attrition suppression against the linear
programmes (``scipy.optimize.linprog``) a reader could use to attack the same tables.

    python benchmarks/privacy_core.py [--persons 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time

import numpy as np
import pyarrow as pa
from scipy.optimize import linprog

from medlake.privacy import (
    AttritionStep,
    class_sizes,
    date_shifts,
    enforce_k_anonymity,
    new_key,
    pseudonymize,
    suppress_attrition,
)


def _timed(label: str, func, *args):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = func(*args)
    seconds = time.perf_counter() - started
    print(f"{label:<58} {seconds:8.3f} s")
    return value, seconds


def _lp_ranges(initial: int, steps: list[AttritionStep]) -> None:
    """Reference: each cell's range by two linear programmes (no display knowledge)."""
    n = 1 + 2 * len(steps)
    rows = []
    for i in range(len(steps)):
        row = np.zeros(n)
        row[0 if i == 0 else 2 * i - 1] = 1
        row[2 * i + 1] = -1
        row[2 * i + 2] = -1
        rows.append(row)
    rhs = np.zeros(len(rows))
    for cell in range(n):
        c = np.zeros(n)
        c[cell] = 1
        linprog(c, A_eq=rows, b_eq=rhs, bounds=[(0, initial)] * n)
        linprog(-c, A_eq=rows, b_eq=rhs, bounds=[(0, initial)] * n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=1_000_000)
    n = parser.parse_args().persons
    rng = np.random.default_rng(7)
    key = new_key()
    ids = pa.array(rng.integers(1, 2**62, n), type=pa.int64())

    _, keyed = _timed(f"pseudonymize {n:,} ids (HMAC-SHA-256)", pseudonymize, key, ids)
    _, plain = _timed(
        f"reference: plain SHA-256 of {n:,} ids",
        lambda: [hashlib.sha256(str(v).encode()).hexdigest() for v in ids.to_pylist()],
    )
    print(f"  ratio keyed / plain: {keyed / plain:.2f}")
    _timed(f"date shifts of {n:,} persons", date_shifts, key, ids.to_pylist(), 365)

    table = pa.table(
        {
            "age_band": pa.array(rng.choice([f"{a}-{a + 4}" for a in range(0, 90, 5)], n)),
            "sex": pa.array(rng.choice(["F", "M"], n)),
            "birth_year": pa.array(rng.choice([f"{y}-{y + 4}" for y in range(1930, 2020, 5)], n)),
            "region": pa.array(rng.choice([f"{r:02d}" for r in range(11, 66)], n)),
        }
    )
    qis = table.column_names
    _, ours = _timed(f"class sizes over 4 quasi-identifiers, {n:,} rows", class_sizes, table, qis)
    frame = table.to_pandas()
    _, ref = _timed(
        "reference: pandas groupby(dropna=False).transform('size')",
        lambda: frame.groupby(qis, dropna=False)["sex"].transform("size"),
    )
    print(f"  ratio medlake / pandas: {ours / ref:.2f}")
    result, _ = _timed(f"enforce k = 5 over {n:,} rows", enforce_k_anonymity, table, qis, 5)
    print(f"  suppressed {result.suppressed_rows:,}, dropped {result.dropped_rows:,}, "
          f"k achieved {result.k_achieved}")  # fmt: skip

    random.seed(1)
    for rules in (5, 10, 30):
        tables = []
        for _ in range(20):
            initial, steps, before = random.randint(0, 60), [], 0
            before = initial
            for i in range(rules):
                before -= random.randint(0, min(before, 6))
                steps.append(AttritionStep(str(i), before))
            tables.append((initial, steps))
        _, ours = _timed(
            f"suppress 20 attrition tables of {rules} rules",
            lambda t=tables: [suppress_attrition(i, s) for i, s in t],
        )
        _, ref = _timed(
            "reference: one LP range check of the same tables",
            lambda t=tables: [_lp_ranges(i, s) for i, s in t],
        )
        print(f"  ratio suppression (search + checks) / one LP check: {ours / ref:.2f}")


if __name__ == "__main__":
    main()
