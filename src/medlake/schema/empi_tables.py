"""The EMPI's own tables: linkage model, links, review queue, decisions, person history."""

from __future__ import annotations

from medlake.engine import TableSpec

EMPI_TABLES: tuple[TableSpec, ...] = ()

__all__ = ["EMPI_TABLES"]
