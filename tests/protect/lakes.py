"""Helpers for comparing two workspaces row for row (the reference for restore tests)."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pyarrow as pa

from medlake.config import open_workspace
from medlake.service.workspace import open_lake


def lake_tables(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, pa.Table]:
    """Every lake table, rows sorted by every column (so physical order does not matter)."""
    tables = {}
    with open_lake(open_workspace(root)) as engine:
        for name in sorted(engine.list_tables()):
            if name.startswith(skip):
                continue
            table = engine.execute(engine.table(name))
            tables[name] = table.sort_by([(c, "ascending") for c in table.column_names])
    return tables


def assert_same_lake(a: Path, b: Path, *, skip: tuple[str, ...] = ()) -> None:
    left, right = lake_tables(a, skip=skip), lake_tables(b, skip=skip)
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name].num_rows == right[name].num_rows, name
        assert left[name].equals(right[name]), f"table {name} differs"


def assert_same_files(a: Path, b: Path) -> None:
    """Same relative file names with the same bytes under both folders."""
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert names_a == names_b
    for name in names_a:
        assert filecmp.cmp(a / name, b / name, shallow=False), name
