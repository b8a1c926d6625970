"""Cohort definitions saved in the workspace: create, list, read, update, delete.

What the web UI's cohort builder and the API keep between sessions. A saved definition
is a row of the OMOP ``cohort_definition`` table: ``cohort_definition_name``, the
description, and the definition's JSON in ``cohort_definition_syntax`` (ATLAS/WebAPI
keep theirs there too). The table rather than a folder of JSON files because:

* it is where :func:`medlake.service.cohort.create_cohort` already records a cohort it
  materializes (found by name, its ``cohort_definition_id`` kept), so a saved
  definition and its generated ``cohort`` rows share one id, and OMOP tools reading the
  lake see both;
* a save is one transaction on every engine (DuckDB, Spark), and the lake's backups,
  checkpoints and rebuild cover it with the rest of the lake; a folder would need its
  own atomic writes, locking between the API's threads, and its own backup.

:func:`count_definition` counts a saved definition, or one given as an object or as
its JSON, and returns the counts and attrition as plain JSON.

Names are unique (the definition's own ``name`` is set to the saved name). Updating a
definition deletes the ``cohort`` rows generated from its earlier version, which no
longer describe it; deleting removes both. No person-level data passes through here.

Access: reading and writing definitions is part of building cohorts: every entry point
is ``@authorized(Permission.COUNT)`` (:mod:`medlake.service.policy`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from medlake.access import Permission
from medlake.cohort.model import CohortDefinition
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine, SupportsTransactions
from medlake.errors import InputError, NotFoundError, UsageError
from medlake.service.cohort import count_cohort, parse_definition
from medlake.service.lake_pool import pooled_lake
from medlake.service.policy import authorized

_COLUMNS = (
    "cohort_definition_id",
    "cohort_definition_name",
    "cohort_definition_description",
    "cohort_definition_syntax",
    "cohort_initiation_date",
)


@dataclass(frozen=True)
class SavedDefinition:
    """A saved definition; ``definition`` is None in listings (read one to get it)."""

    id: int
    name: str
    description: str
    saved: dt.date | None  # cohort_initiation_date: when it was last saved
    has_members: bool  # ``cohort`` rows were generated from it (medlake cohort create)
    definition: CohortDefinition | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON: the definition as its JSON object (or null in listings)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "saved": self.saved.isoformat() if self.saved else None,
            "has_members": self.has_members,
            "definition": (
                None if self.definition is None else self.definition.model_dump(mode="json")
            ),
        }


@authorized(Permission.COUNT)
def save_definition(
    workspace_dir: Path | Workspace | None,
    name: str,
    definition: CohortDefinition | Mapping[str, Any],
) -> int:
    """Save ``definition`` under ``name`` (unique); return its ``cohort_definition_id``."""
    # policy: Permission.COUNT
    name = _clean_name(name)
    parsed = _named(definition, name)
    with _lake(workspace_dir) as engine, _transaction(engine):
        existing = _id_by_name(engine, name)
        if existing is not None:
            raise UsageError(
                f"a cohort definition named {name!r} exists (id {existing}): update it "
                "or choose another name"
            )
        table = engine.table("cohort_definition")
        definition_id = int(engine.scalar(table.cohort_definition_id.max()) or 0) + 1
        _insert(engine, definition_id, parsed)
    return definition_id


@authorized(Permission.COUNT)
def list_definitions(workspace_dir: Path | Workspace | None) -> list[SavedDefinition]:
    """Every saved definition (without its JSON), by id."""
    # policy: Permission.COUNT
    with _lake(workspace_dir) as engine:
        rows = _rows(engine, None)
        generated = _with_members(engine)
    return [_saved(row, generated, with_definition=False) for row in rows]


@authorized(Permission.COUNT)
def get_definition(workspace_dir: Path | Workspace | None, definition_id: int) -> SavedDefinition:
    """One saved definition with its parsed JSON."""
    # policy: Permission.COUNT
    with _lake(workspace_dir) as engine:
        row = _row(engine, definition_id)
        generated = _with_members(engine)
    return _saved(row, generated, with_definition=True)


@authorized(Permission.COUNT)
def update_definition(
    workspace_dir: Path | Workspace | None,
    definition_id: int,
    definition: CohortDefinition | Mapping[str, Any],
    *,
    name: str | None = None,
) -> SavedDefinition:
    """Replace a saved definition (and rename it when ``name`` is given).

    ``cohort`` rows generated from the earlier version are deleted: they no longer
    describe it (generate them again with ``create_cohort``).
    """
    # policy: Permission.COUNT
    with _lake(workspace_dir) as engine, _transaction(engine):
        current = _row(engine, definition_id)
        new_name = _clean_name(name) if name is not None else current["cohort_definition_name"]
        other = _id_by_name(engine, new_name)
        if other is not None and other != definition_id:
            raise UsageError(f"a cohort definition named {new_name!r} exists (id {other})")
        parsed = _named(definition, new_name)
        _delete(engine, definition_id)
        _insert(engine, definition_id, parsed)
    return SavedDefinition(definition_id, new_name, parsed.description, dt.date.today(),
                           False, parsed)  # fmt: skip


@authorized(Permission.COUNT)
def delete_definition(workspace_dir: Path | Workspace | None, definition_id: int) -> None:
    """Delete a saved definition and the ``cohort`` rows generated from it."""
    # policy: Permission.COUNT
    with _lake(workspace_dir) as engine, _transaction(engine):
        _row(engine, definition_id)  # refuses an unknown id
        _delete(engine, definition_id)


@authorized(Permission.COUNT)
def count_definition(
    workspace_dir: Path | Workspace | None,
    definition: int | CohortDefinition | Mapping[str, Any],
    *,
    exact: bool = False,
) -> dict[str, Any]:
    """Count a saved definition (by id) or one given as an object or its JSON.

    The counts and attrition as plain JSON (:meth:`~medlake.service.cohort.CohortCount.
    as_dict`): exact for stewards with ``exact``, else small cells suppressed. The check
    (``count`` or ``count_exact``) is :func:`~medlake.service.cohort.count_cohort`'s.
    """
    # policy: Permission.COUNT (Permission.COUNT_EXACT with exact), checked by count_cohort
    if isinstance(definition, int):
        saved = get_definition(workspace_dir, definition)
        assert saved.definition is not None
        parsed = saved.definition
    elif isinstance(definition, CohortDefinition):
        parsed = definition
    else:
        parsed = parse_definition(dict(definition))
    return count_cohort(workspace_dir, parsed, exact=exact).as_dict()


# ---------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _lake(workspace_dir: Path | Workspace | None) -> Iterator[Engine]:
    # Borrowed from the server's pool while it serves: opening the lake for each request
    # cost a saved definition's count more than the cached count itself.
    with pooled_lake(as_workspace(workspace_dir)) as engine:
        yield engine


def _transaction(engine: Engine) -> contextlib.AbstractContextManager[Any]:
    if isinstance(engine, SupportsTransactions):
        return engine.transaction()
    return contextlib.nullcontext()


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise InputError("a cohort definition needs a name")
    if len(cleaned) > 255:
        raise InputError(f"cohort definition name too long ({len(cleaned)} > 255 characters)")
    return cleaned


def _named(definition: CohortDefinition | Mapping[str, Any], name: str) -> CohortDefinition:
    parsed = (
        definition
        if isinstance(definition, CohortDefinition)
        else parse_definition(dict(definition))
    )
    return parsed.model_copy(update={"name": name})


def _id_by_name(engine: Engine, name: str) -> int | None:
    table = engine.table("cohort_definition")
    ids = engine.execute(
        table.filter(table.cohort_definition_name == name).cohort_definition_id
    ).column(0)
    return int(ids[0].as_py()) if len(ids) else None


def _rows(engine: Engine, definition_id: int | None) -> list[dict[str, Any]]:
    table = engine.table("cohort_definition")
    if definition_id is not None:
        table = table.filter(table.cohort_definition_id == definition_id)
    return engine.execute(table.select(*_COLUMNS).order_by("cohort_definition_id")).to_pylist()


def _row(engine: Engine, definition_id: int) -> dict[str, Any]:
    rows = _rows(engine, int(definition_id))
    if not rows:
        raise NotFoundError(f"no cohort definition with id {definition_id}")
    return rows[0]


def _with_members(engine: Engine) -> set[int]:
    cohort = engine.table("cohort")
    ids = engine.execute(cohort.select("cohort_definition_id").distinct()).column(0)
    return {int(i) for i in ids.to_pylist()}


def _saved(row: dict[str, Any], generated: set[int], *, with_definition: bool) -> SavedDefinition:
    definition_id = int(row["cohort_definition_id"])
    definition = None
    if with_definition:
        syntax = row["cohort_definition_syntax"]
        if not syntax:
            raise InputError(f"cohort definition {definition_id} has no definition JSON")
        definition = _parse_stored(syntax, f"cohort definition {definition_id}")
    return SavedDefinition(
        id=definition_id,
        name=row["cohort_definition_name"],
        description=row["cohort_definition_description"] or "",
        saved=row["cohort_initiation_date"],
        has_members=definition_id in generated,
        definition=definition,
    )


def _parse_stored(text: str, source: str) -> CohortDefinition:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not JSON ({error})") from None
    return parse_definition(data, source=source)


def _insert(engine: Engine, definition_id: int, definition: CohortDefinition) -> None:
    engine.load_arrow(
        "cohort_definition",
        pa.table(
            {
                "cohort_definition_id": [definition_id],
                "cohort_definition_name": [definition.name],
                "cohort_definition_description": [definition.description or None],
                "definition_type_concept_id": [0],
                "cohort_definition_syntax": [definition.model_dump_json()],
                "subject_concept_id": [0],
                "cohort_initiation_date": [dt.date.today()],
            }
        ),
    )


def _delete(engine: Engine, definition_id: int) -> None:
    cohort = engine.table("cohort")
    engine.delete_where("cohort", cohort.cohort_definition_id == definition_id)
    definitions = engine.table("cohort_definition")
    engine.delete_where("cohort_definition", definitions.cohort_definition_id == definition_id)
