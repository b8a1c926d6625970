"""Governance tables: data-quality results with history, users, roles, projects."""

from __future__ import annotations

from medlake.engine import TableSpec

GOVERNANCE_TABLES: tuple[TableSpec, ...] = ()

__all__ = ["GOVERNANCE_TABLES"]
