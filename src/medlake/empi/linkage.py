"""Scoring candidate pairs with Splink on the engine's own SQL backend.

Splink runs its SQL on a connection of the engine's kind, obtained through the
engine's :class:`~medlake.engine.SupportsScratchSession` capability: on DuckDB a cursor
on the lake's database whose intermediate tables live in a scratch in-memory catalog;
Splink's Spark backend would take the Spark session the same way (not wired yet: the
Spark engine does not offer a scratch session, and linking on it raises a clear error).

Two ways to score: :func:`predict_all` (every candidate pair among the records, for a
first or full link) and :func:`predict_new` (new records against existing ones and among
themselves, for an incremental batch: the existing records are not compared with each
other again).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from splink import Linker

from medlake.empi.features import with_derived
from medlake.engine import Engine, SupportsScratchSession
from medlake.errors import EngineCapabilityError

# Splink logs every step at INFO; the EMPI reports its own progress.
logging.getLogger("splink").setLevel(logging.ERROR)

PAIR_COLUMNS = ("unique_id_l", "unique_id_r", "match_probability", "match_weight")


@contextlib.contextmanager
def splink_api(engine: Engine) -> Iterator[Any]:
    """A Splink database API on the engine's backend, for the duration of the block."""
    if not isinstance(engine, SupportsScratchSession):
        raise EngineCapabilityError(
            f"the {engine.name} engine offers no scratch session for Splink; "
            "link on a duckdb workspace",
            engine=engine.name,
        )
    if engine.name != "duckdb":
        raise EngineCapabilityError(
            f"EMPI linkage on the {engine.name} engine is not wired yet", engine=engine.name
        )
    from splink import DuckDBAPI

    with engine.scratch_session() as connection:
        yield DuckDBAPI(connection=connection)


def linker_factory(api: Any, features: pa.Table) -> Callable[[dict[str, Any]], Linker]:
    """``factory(settings)`` → a dedupe :class:`Linker` over ``features``."""
    frame = api.register(with_derived(features))

    def make(settings: dict[str, Any]) -> Linker:
        return Linker(frame, settings, log_level=None)

    return make


def _pairs(result: Any) -> pa.Table:
    """The scored pairs as Arrow."""
    table: pa.Table = result.as_pyarrow_table()
    result.drop_table_from_database_and_remove_from_cache()
    return table


def predict_all(
    api: Any, features: pa.Table, settings: dict[str, Any], threshold: float
) -> pa.Table:
    """Every blocked pair among ``features`` with match probability ≥ ``threshold``."""
    if features.num_rows < 2:
        return pa.table({})
    linker = Linker(api.register(with_derived(features)), settings, log_level=None)
    return _pairs(linker.inference.predict(threshold_match_probability=threshold))


def predict_new(
    api: Any,
    existing: pa.Table,
    new: pa.Table,
    settings: dict[str, Any],
    threshold: float,
) -> pa.Table:
    """Pairs between ``new`` and ``existing`` records, and among ``new`` ones."""
    if new.num_rows == 0:
        return pa.table({})
    existing, new = with_derived(existing), with_derived(new)
    combined = pa.concat_tables([existing, new]) if existing.num_rows else new
    all_frame = api.register(combined)
    new_frame = api.register(new)
    linker = Linker(all_frame, settings, log_level=None)
    # Term frequencies over every record, existing and new (predict_between and
    # predict_within do not derive them from what they are given).
    for column in tf_columns(settings):
        linker.table_management.compute_tf_table(column)
    parts = []
    if existing.num_rows:
        old_frame = api.register(existing)
        parts.append(
            _pairs(
                linker.inference.predict_between(
                    old_frame, new_frame, threshold_match_probability=threshold
                )
            )
        )
    if new.num_rows > 1:
        parts.append(
            _pairs(
                linker.inference.predict_within(new_frame, threshold_match_probability=threshold)
            )
        )
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")


def tf_columns(settings: dict[str, Any]) -> list[str]:
    """The columns the model's term-frequency adjustments look up, in order."""
    columns: list[str] = []
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            column = level.get("tf_adjustment_column")
            if column and column not in columns:
                columns.append(column)
    return columns
