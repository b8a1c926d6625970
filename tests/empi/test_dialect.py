"""The model's SQL rewritten for Spark matches what Splink writes for Spark itself."""

from __future__ import annotations

import pytest
import splink.comparison_level_library as cll
import sqlglot
import sqlglot.expressions as sge

from medlake.empi.dialect import for_backend, stored_form, translate_sql
from medlake.empi.model import base_settings, is_current


def _normal(sql: str) -> str:
    return sqlglot.parse_one(sql, read="spark").sql(dialect="spark").lower()


@pytest.mark.parametrize(
    "level",
    [
        cll.JaroWinklerLevel("name_sorted", 0.8),
        cll.JaroLevel("name_sorted", 0.8),
        cll.DamerauLevenshteinLevel("name_py", 1),
        cll.LevenshteinLevel("phone", 1),
        cll.ExactMatchLevel("sex"),
    ],
)
def test_a_duckdb_level_becomes_splinks_own_spark_level(level) -> None:
    duckdb = level.get_comparison_level("duckdb").sql_condition
    spark = level.get_comparison_level("spark").sql_condition
    assert duckdb != spark
    assert _normal(translate_sql(duckdb, "spark")) == _normal(spark)


def test_the_whole_model_reads_columns_not_strings_on_spark() -> None:
    """In Spark SQL "x" is a string: every condition must name columns, as on DuckDB."""
    base = base_settings()
    spark = for_backend(base, "spark")
    pairs = [
        (a["sql_condition"], b["sql_condition"])
        for ca, cb in zip(base["comparisons"], spark["comparisons"], strict=True)
        for a, b in zip(ca["comparison_levels"], cb["comparison_levels"], strict=True)
        if a["sql_condition"] != "ELSE"
    ]
    rules = zip(
        [r["blocking_rule"] for r in base["blocking_rules_to_generate_predictions"]],
        [r["blocking_rule"] for r in spark["blocking_rules_to_generate_predictions"]],
        strict=True,
    )
    for original, translated in [*pairs, *rules]:
        tree = sqlglot.parse_one(translated, read="spark")
        columns = {c.name for c in tree.find_all(sge.Column)}
        expected = {c.name for c in sqlglot.parse_one(original, read="duckdb").find_all(sge.Column)}
        assert columns == expected, translated
        strings = [lit for lit in tree.find_all(sge.Literal) if lit.is_string]
        assert not strings, translated
    assert "jaro_winkler_similarity" not in str(spark).lower()


def test_a_model_trained_on_spark_is_stored_as_on_duckdb() -> None:
    base = base_settings()
    trained = for_backend(base, "spark")
    trained["comparisons"][0]["comparison_levels"][1]["m_probability"] = 0.9
    stored = stored_form(trained, base)
    assert is_current(stored)
    assert not is_current(trained)
    assert stored["comparisons"][0]["comparison_levels"][1]["m_probability"] == 0.9
    assert for_backend(stored, "duckdb") == stored
