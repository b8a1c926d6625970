"""The linkage model's SQL on each Splink backend, and back to one stored form.

The model (:mod:`medlake.empi.model`) writes its comparison levels and blocking rules
as DuckDB SQL, and the workspace stores trained models in that form, so a model is the
same JSON whichever engine trained it (``is_current`` compares definitions by text).
Splink passes a level's ``sql_condition`` to its backend as written, so before a
:class:`splink.Linker` is made on another backend the SQL is rewritten for it:

- SQLGlot transpiles the syntax (DuckDB's ``"column"`` is Spark's ```column```; in
  Spark SQL a double-quoted word is a string);
- the similarity functions are renamed to the backend's own, as Splink's dialect
  objects name them (DuckDB's ``jaro_winkler_similarity`` is ``jaro_winkler`` on
  Spark, a UDF from the jar bundled with Splink).

After training on another backend, :func:`stored_form` puts the DuckDB SQL back
into the trained settings (the levels are the same, only their SQL text differs).
Written here rather than taken from Splink because Splink's comparison library renders
a dialect once, when the settings are created, and offers no translation of a saved model.
"""

from __future__ import annotations

import copy
from typing import Any

import sqlglot
import sqlglot.expressions as sge
from splink.internals.dialects import SplinkDialect  # not re-exported publicly

#: The dialect the model is written and stored in.
STORED_DIALECT = "duckdb"

# Splink's dialect attributes naming the functions the model's SQL may call.
_FUNCTIONS = (
    "jaro_winkler_function_name",
    "jaro_function_name",
    "damerau_levenshtein_function_name",
    "levenshtein_function_name",
    "jaccard_function_name",
)


def dialect_of(api: Any) -> str:
    """The Splink dialect name (``duckdb``, ``spark``) of a Splink database API."""
    return str(api.sql_dialect.sql_dialect_str)


def translate_sql(sql: str, dialect: str) -> str:
    """A condition or blocking rule of the stored model, in ``dialect``."""
    if dialect == STORED_DIALECT:
        return sql
    source, target = SplinkDialect.from_string(STORED_DIALECT), SplinkDialect.from_string(dialect)
    renames = {}
    for attribute in _FUNCTIONS:
        try:
            renames[getattr(source, attribute).lower()] = getattr(target, attribute)
        except NotImplementedError:
            continue

    def rename(node: sge.Expression) -> sge.Expression:
        if isinstance(node, sge.Anonymous) and str(node.this).lower() in renames:
            return sge.Anonymous(this=renames[str(node.this).lower()], expressions=node.expressions)
        return node

    tree = sqlglot.parse_one(sql, read=source.sqlglot_dialect).transform(rename)
    return tree.sql(dialect=target.sqlglot_dialect)


def for_backend(settings: dict[str, Any], dialect: str) -> dict[str, Any]:
    """Model settings (stored form) with their SQL rewritten for ``dialect``."""
    if dialect == STORED_DIALECT:
        return settings
    out = copy.deepcopy(settings)
    for comparison in out["comparisons"]:
        for level in comparison["comparison_levels"]:
            condition = level.get("sql_condition")
            if condition and condition.strip().upper() != "ELSE":
                level["sql_condition"] = translate_sql(condition, dialect)
    rules = []
    for rule in out.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, dict):
            rule = {**rule, "blocking_rule": translate_sql(rule["blocking_rule"], dialect)}
            if "sql_dialect" in rule:
                rule["sql_dialect"] = dialect
        else:
            rule = translate_sql(rule, dialect)
        rules.append(rule)
    out["blocking_rules_to_generate_predictions"] = rules
    out.pop("sql_dialect", None)
    return out


def stored_form(trained: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``trained`` (settings saved by Splink on any backend) with ``reference``'s SQL.

    ``reference`` is the untrained model in the stored dialect; the trained settings
    must have its comparisons and levels in the same order (they were made from it).
    """
    out = copy.deepcopy(trained)
    comparisons, expected = out["comparisons"], reference["comparisons"]
    if [len(c["comparison_levels"]) for c in comparisons] != [
        len(c["comparison_levels"]) for c in expected
    ]:
        raise ValueError("the trained model's comparisons are not those of its definition")
    for comparison, original in zip(comparisons, expected, strict=True):
        for level, source in zip(
            comparison["comparison_levels"], original["comparison_levels"], strict=True
        ):
            if "sql_condition" in source:
                level["sql_condition"] = source["sql_condition"]
    out["blocking_rules_to_generate_predictions"] = copy.deepcopy(
        reference["blocking_rules_to_generate_predictions"]
    )
    if "sql_dialect" in out:
        out["sql_dialect"] = STORED_DIALECT
    return out


__all__ = ["STORED_DIALECT", "dialect_of", "for_backend", "stored_form", "translate_sql"]
