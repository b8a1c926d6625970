"""The linkage model: Fellegi–Sunter comparisons, blocking, unsupervised training.

Splink does the statistics: it estimates u-probabilities from random pairs and
m-probabilities by expectation maximisation (no labels), and scores candidate pairs.
What this module owns is the *model definition* — which fields are compared, at which
levels, and which blocking rules generate candidates — written as a Splink settings
dictionary so a trained model is plain JSON that the workspace stores
(``empi_model``) and any Splink backend can run.

Comparison levels (strongest first; each comparison has a null level):

- name: same hanzi; same pinyin in the order written; same parts in another order
  (given name first); same fuzzy pinyin (accent merges z/zh, n/l, -n/-ng …, either
  order); pinyin within one edit (a typo) or Jaro–Winkler ≥ 0.92; ≥ 0.80.
- birth date: same; day and month swapped; one character apart; same year.
- resident ID: same; one character apart where one side fails the GB 11643 check
  (a mistyped digit: the check catches every single-digit error, so two valid
  numbers are never one character apart); one character apart (other ID numbers,
  plain-file mode); else.
- sex, email: same or not. Phone: same; one digit apart. Address: same address;
  Jaro–Winkler ≥ 0.9; same postcode. Address and postcode are one comparison because
  they are not independent (a new address nearly always has a new postcode): as two
  comparisons, one move would count against a pair twice.

Blocking rules (candidate pairs) are equality joins that stay small on millions of
records: resident ID; phone; pinyin name with birth year; sorted name with birth date;
birth date with sex (names with a typo where nothing else is known); swapped birth date
with sorted name; hanzi name with birth year; fuzzy pinyin with birth date.

A stored model whose definition (comparisons and blocking rules) is not this module's
is out of date: :func:`is_current` says so, and linking retrains it first.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from splink import Linker, SettingsCreator, block_on
from splink.internals.exceptions import SplinkException  # not re-exported publicly

from medlake.errors import MedlakeError

MODEL_VERSION = 1


class TrainingError(MedlakeError):
    """The records give EM nothing to learn from."""


def _null(column: str) -> dict[str, Any]:
    return {
        "sql_condition": f'"{column}_l" IS NULL OR "{column}_r" IS NULL',
        "label_for_charts": f"{column} missing",
        "is_null_level": True,
    }


def _level(sql: str, label: str, tf: str | None = None) -> dict[str, Any]:
    level: dict[str, Any] = {"sql_condition": sql, "label_for_charts": label}
    if tf:
        level["tf_adjustment_column"] = tf
        level["tf_adjustment_weight"] = 1.0
    return level


_ELSE = {"sql_condition": "ELSE", "label_for_charts": "different"}


def _comparison(name: str, description: str, levels: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "output_column_name": name,
        "comparison_description": description,
        "comparison_levels": [*levels, _ELSE],
    }


def _exact(column: str, label: str) -> dict[str, Any]:
    return _comparison(
        column,
        label,
        [_null(column), _level(f'"{column}_l" = "{column}_r"', f"same {label}")],
    )


COMPARISONS: list[dict[str, Any]] = [
    _comparison(
        "name",
        "name (hanzi, pinyin, either order)",
        [
            _null("name_py"),
            _level('"name_hanzi_l" = "name_hanzi_r"', "same hanzi"),
            _level('"name_py_l" = "name_py_r"', "same pinyin"),
            _level('"name_sorted_l" = "name_sorted_r"', "same parts, other order"),
            _level('"name_fuzzy_l" = "name_fuzzy_r"', "same fuzzy pinyin (z/zh, n/l, -n/-ng …)"),
            _level(
                'damerau_levenshtein("name_py_l", "name_py_r") <= 1 OR '
                'jaro_winkler_similarity("name_sorted_l", "name_sorted_r") >= 0.92',
                "pinyin one edit apart or Jaro-Winkler >= 0.92",
            ),
            _level(
                'jaro_winkler_similarity("name_sorted_l", "name_sorted_r") >= 0.80',
                "Jaro-Winkler >= 0.80",
            ),
        ],
    ),
    _comparison(
        "birth_date",
        "birth date",
        [
            _null("birth_date"),
            _level('"birth_date_l" = "birth_date_r"', "same date"),
            _level('"birth_date_l" = "birth_date_swapped_r"', "day and month swapped"),
            _level(
                'damerau_levenshtein("birth_date_l", "birth_date_r") <= 1',
                "one character apart",
            ),
            _level('"birth_year_l" = "birth_year_r"', "same year"),
        ],
    ),
    _comparison(
        "resident_id",
        "resident ID number (GB 11643)",
        [
            _null("resident_id"),
            _level('"resident_id_l" = "resident_id_r"', "same number"),
            _level(
                'damerau_levenshtein("resident_id_l", "resident_id_r") <= 1 AND '
                '(NOT "resident_id_valid_l" OR NOT "resident_id_valid_r")',
                "one character apart, one fails the check digit (typo)",
            ),
            _level(
                'damerau_levenshtein("resident_id_l", "resident_id_r") <= 1',
                "one character apart (not an 18-character number)",
            ),
        ],
    ),
    _exact("sex", "sex"),
    _comparison(
        "phone",
        "phone",
        [
            _null("phone"),
            _level('"phone_l" = "phone_r"', "same number"),
            _level('levenshtein("phone_l", "phone_r") <= 1', "one digit apart"),
        ],
    ),
    _comparison(
        "address",
        "address and postcode",
        [
            {
                "sql_condition": '("address_l" IS NULL OR "address_r" IS NULL) AND '
                '("postcode_l" IS NULL OR "postcode_r" IS NULL)',
                "label_for_charts": "address missing",
                "is_null_level": True,
            },
            _level('"address_l" = "address_r"', "same address"),
            _level(
                'jaro_winkler_similarity("address_l", "address_r") >= 0.9',
                "Jaro-Winkler >= 0.9",
            ),
            _level('"postcode_l" = "postcode_r"', "other address, same postcode"),
        ],
    ),
    _exact("email", "email"),
]

BLOCKING_RULES = [
    block_on("resident_id"),
    block_on("phone"),
    block_on("name_py", "birth_year"),
    block_on("name_sorted", "birth_date"),
    block_on("birth_date", "sex"),
    "l.birth_date_swapped = r.birth_date AND l.name_sorted = r.name_sorted",
    block_on("name_hanzi", "birth_year"),
    block_on("name_fuzzy", "birth_date"),
]

# EM sessions: each fixes some fields by blocking and trains the others.
_TRAINING_BLOCKS = [
    block_on("resident_id"),
    block_on("name_py", "birth_date"),
    block_on("phone"),
]
_DETERMINISTIC = [
    "l.resident_id = r.resident_id AND l.birth_date = r.birth_date",
    "l.name_py = r.name_py AND l.birth_date = r.birth_date AND l.sex = r.sex",
]


#: The name levels that compare one column for equality, and that column: with name
#: frequencies on, their evidence follows how common the agreeing name is.
_NAME_FREQUENCY_COLUMNS = ("name_hanzi", "name_py", "name_sorted", "name_fuzzy")


def _comparisons(name_frequency: bool) -> list[dict[str, Any]]:
    """:data:`COMPARISONS`, with term-frequency adjustments on the exact name levels when
    ``name_frequency``: Splink then scores a pair agreeing on a name with the frequency
    of that name in the records (u = its share) instead of the level's average u, so an
    agreeing 王伟 counts for less than an agreeing 欧阳雪."""
    comparisons = copy.deepcopy(COMPARISONS)
    if not name_frequency:
        return comparisons
    for level in comparisons[0]["comparison_levels"]:
        for column in _NAME_FREQUENCY_COLUMNS:
            if level["sql_condition"] == f'"{column}_l" = "{column}_r"':
                level["tf_adjustment_column"] = column
                level["tf_adjustment_weight"] = 1.0
    return comparisons


def base_settings(
    link_type: str = "dedupe_only", *, name_frequency: bool = False
) -> dict[str, Any]:
    """The untrained model as a Splink settings dictionary (``name_frequency``: with
    term-frequency adjustments on the name; ``[empi] name_frequency_adjustment``)."""
    creator = SettingsCreator(
        link_type=link_type,
        unique_id_column_name="unique_id",
        comparisons=_comparisons(name_frequency),
        blocking_rules_to_generate_predictions=BLOCKING_RULES,
        retain_matching_columns=True,
        retain_intermediate_calculation_columns=True,
        additional_columns_to_retain=[],
    )
    return creator.create_settings_dict(sql_dialect_str="duckdb")


def check_trainable(features: Any) -> None:
    """Raise :class:`TrainingError` unless some two records share what EM trains on.

    The EM sessions block on resident ID, phone, and pinyin name with birth date; with
    no two records agreeing on any of them, Splink would fail only after seconds of
    SQL, so a small lake (a first ingest, a test) finds out here, in one pass.
    """
    import pyarrow.compute as pc

    def shared(*columns: str) -> bool:
        table = features.select(list(columns))
        for name in columns:
            table = table.filter(pc.is_valid(table.column(name)))
        if table.num_rows < 2:
            return False
        return table.group_by(list(columns)).aggregate([]).num_rows < table.num_rows

    if not (shared("resident_id") or shared("phone") or shared("name_py", "birth_date")):
        raise TrainingError(
            "cannot train the linkage model: no two records share a resident ID, a phone "
            "number, or a name and birth date"
        )


def train(
    linker_factory: Any,
    *,
    max_pairs: float = 1e6,
    recall: float = 0.8,
    seed: int = 1,
    name_frequency: bool = False,
) -> dict[str, Any]:
    """Train the model on the records of ``linker_factory(settings)``; return the settings.

    Unsupervised: the prior from deterministic rules, u from random pairs (seeded, so
    retraining on the same records gives the same model), m by EM.
    """
    linker: Linker = linker_factory(base_settings(name_frequency=name_frequency))
    # No record pairs agreeing on the rules: keep the default prior.
    with contextlib.suppress(SplinkException, ValueError, ZeroDivisionError):
        linker.training.estimate_probability_two_random_records_match(_DETERMINISTIC, recall=recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    trained = 0
    for rule in _TRAINING_BLOCKS:
        # A session whose blocking field the records lack (a file without phones)
        # has no pairs to learn from; the others train its comparisons.
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, fix_probability_two_random_records_match=True
            )
        except SplinkException:
            continue
        trained += 1
    if not trained:
        raise TrainingError(
            "cannot train the linkage model: no two records share a resident ID, a phone "
            "number, or a name and birth date"
        )
    settings = linker.misc.save_model_to_json(overwrite=True)
    # Splink's random name for its cached tables: not part of the model, and kept it
    # would make the same training on the same records store a different model.
    settings.pop("linker_uid", None)
    return _rounded(_bound_unobserved_u(settings, max_pairs))


def _bound_unobserved_u(settings: dict[str, Any], max_pairs: float) -> dict[str, Any]:
    """``settings`` with a u-probability for every level that no random pair reached.

    Random sampling leaves such a level without u (a rare agreement: at a million
    records, "same name parts in another order" is about 2e-6, so a million random
    pairs may see none), and Splink then scores the level with a fallback u three
    orders of magnitude too high: a given-name-first pair with the same birth date fell
    to the review queue. Not seen in ``max_pairs`` pairs puts u below 3 / max_pairs
    with 95 % confidence (the rule of three): that bound is used, so the level's
    evidence is, if anything, understated.
    """
    out = copy.deepcopy(settings)
    bound = 3.0 / max(max_pairs, 1.0)
    for comparison in out.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            if level.get("is_null_level") or level.get("sql_condition") == "ELSE":
                continue
            if not isinstance(level.get("u_probability"), float):
                level["u_probability"] = bound
    return out


_SIGNIFICANT = 8


def _rounded(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the estimated probabilities to 8 significant digits.

    EM's sums run in parallel in DuckDB, so two trainings on the same records differ
    in the 13th digit; rounded, they store the same model (and model id) but for the
    rare value that falls on a rounding boundary. Eight digits are far finer than the
    estimates' own error.
    """

    def rounded(value: Any) -> Any:
        return float(f"{value:.{_SIGNIFICANT}g}") if isinstance(value, float) else value

    out = copy.deepcopy(settings)
    key = "probability_two_random_records_match"
    if key in out:
        out[key] = rounded(out[key])
    for comparison in out.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            for name in ("m_probability", "u_probability"):
                if name in level:
                    level[name] = rounded(level[name])
    return out


def _definition(settings: dict[str, Any]) -> list[Any]:
    comparisons = [
        [
            c["output_column_name"],
            [
                [lv["sql_condition"], lv.get("tf_adjustment_column")]
                for lv in c["comparison_levels"]
            ],
        ]
        for c in settings["comparisons"]
    ]
    rules = [r["blocking_rule"] if isinstance(r, dict) else r
             for r in settings["blocking_rules_to_generate_predictions"]]  # fmt: skip
    return [comparisons, rules]


def is_current(settings: dict[str, Any], *, name_frequency: bool = False) -> bool:
    """Whether a stored model has this module's comparisons and blocking rules (with
    term-frequency adjustments on the name or not, as ``name_frequency`` says)."""
    try:
        return _definition(settings) == _definition(base_settings(name_frequency=name_frequency))
    except (KeyError, TypeError):
        return False


def comparison_labels(settings: dict[str, Any]) -> dict[str, dict[int, str]]:
    """For every comparison, its gamma value → level label (for the review screen)."""
    labels: dict[str, dict[int, str]] = {}
    for comparison in settings["comparisons"]:
        levels = comparison["comparison_levels"]
        named: dict[int, str] = {}
        gamma = len([lv for lv in levels if not lv.get("is_null_level")]) - 1
        for level in levels:
            if level.get("is_null_level"):
                named[-1] = level.get("label_for_charts", "missing")
            else:
                named[gamma] = level.get("label_for_charts", str(gamma))
                gamma -= 1
        labels[comparison["output_column_name"]] = named
    return labels


def settings_json(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, ensure_ascii=False)


__all__ = [
    "BLOCKING_RULES",
    "COMPARISONS",
    "base_settings",
    "check_trainable",
    "comparison_labels",
    "is_current",
    "train",
]
