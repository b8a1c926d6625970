"""Scoring candidate pairs with Splink on the engine's own SQL backend.

Splink runs its SQL on the engine's backend, through the engine's
:class:`~medlake.engine.SupportsSplink` capability: on DuckDB a ``DuckDBAPI`` on a
cursor of the lake whose intermediate tables live in a scratch in-memory catalog; on
Spark a ``SparkAPI`` on the engine's session (temporary views, scratch Parquet). The
model's SQL is rewritten for the backend's dialect (:mod:`medlake.empi.dialect`) each
time a :class:`~splink.Linker` is made, so one stored model runs on either.

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

from medlake.empi.dialect import dialect_of, for_backend
from medlake.empi.features import with_derived
from medlake.engine import Engine, SupportsSplink
from medlake.errors import EngineCapabilityError

# Splink logs every step at INFO; the EMPI reports its own progress.
logging.getLogger("splink").setLevel(logging.ERROR)

PAIR_COLUMNS = ("unique_id_l", "unique_id_r", "match_probability", "match_weight")


@contextlib.contextmanager
def splink_api(engine: Engine) -> Iterator[Any]:
    """A Splink database API on the engine's backend, for the duration of the block."""
    if not isinstance(engine, SupportsSplink):
        raise EngineCapabilityError(
            f"the {engine.name} engine cannot run Splink; link on a duckdb or spark workspace",
            engine=engine.name,
        )
    with engine.splink_api() as api:
        yield api


def _linker(api: Any, frame: Any, settings: dict[str, Any]) -> Linker:
    """A Linker over ``frame`` with the model's SQL in the API's dialect."""
    return Linker(frame, for_backend(settings, dialect_of(api)), log_level=None)


def linker_factory(api: Any, features: pa.Table) -> Callable[[dict[str, Any]], Linker]:
    """``factory(settings)`` → a dedupe :class:`Linker` over ``features``."""
    frame = api.register(with_derived(features))

    def make(settings: dict[str, Any]) -> Linker:
        return _linker(api, frame, settings)

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
    linker = _linker(api, api.register(with_derived(features)), settings)
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
    linker = _linker(api, all_frame, settings)
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
