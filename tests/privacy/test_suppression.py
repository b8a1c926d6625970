"""Small-cell suppression: a hidden count can be neither read nor recomputed.

The reference is a brute-force reader: given the displayed table and what its symbols
mean ("<5" = 0..4, "hidden" = at least 5, a number = itself), it enumerates every attrition
table that would read the same and collects the values each hidden cell can take. A
hidden cell is protected when at least two values remain possible. The enumeration is
bounded (counts up to a ceiling), which only makes the reader stronger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medlake.privacy import (
    AttritionStep,
    HiddenBecause,
    SuppressedAttrition,
    SuppressedCount,
    suppress_attrition,
    suppress_count,
)

THRESHOLD = 5
CEILING = 40  # the reader's bound on a hidden count that has no upper bound


def _admits(cell: SuppressedCount, value: int) -> bool:
    """Whether a true ``value`` would read as ``cell``."""
    if cell.hidden_because is HiddenBecause.SMALL:
        return 0 <= value < cell.threshold
    if cell.hidden_because is HiddenBecause.COMPLEMENTARY:
        return value >= cell.threshold
    return value == cell.value


def _candidates(cell: SuppressedCount, low: int, high: int) -> range | list[int]:
    if cell.value is not None:
        return [cell.value] if low <= cell.value <= high else []
    return [v for v in range(low, high + 1) if _admits(cell, v)]


def _readings(shown: SuppressedAttrition) -> Iterator[dict[str, int]]:
    """Every table (cell name -> value) that reads exactly as ``shown``."""
    for initial in _candidates(shown.initial, 0, CEILING):
        for chain in _chains(shown, 0, initial):
            yield from _with_alone(shown, initial, {"initial": initial, **chain})


def _chains(shown: SuppressedAttrition, i: int, before: int) -> Iterator[dict[str, int]]:
    if i == len(shown.rules):
        yield {}
        return
    row = shown.rules[i]
    for after in _candidates(row.remaining, 0, before):
        if not _admits(row.excluded, before - after):
            continue
        for rest in _chains(shown, i + 1, after):
            yield {f"remaining{i}": after, f"excluded{i}": before - after, **rest}


def _with_alone(
    shown: SuppressedAttrition, initial: int, table: dict[str, int]
) -> Iterator[dict[str, int]]:
    options: list[list[int]] = []
    for row in shown.rules:
        options.append(
            [-1]
            if row.excluded_alone is None
            else list(_candidates(row.excluded_alone, 0, initial))
        )
    # The alone cells are independent given the initial count: report each one's range
    # without the full product (same value sets, far fewer tables).
    if any(not values for values in options):
        return
    longest = max((len(values) for values in options), default=1)
    for k in range(longest):
        reading = dict(table)
        for i, values in enumerate(options):
            if values != [-1]:
                alone = values[min(k, len(values) - 1)]
                reading[f"alone{i}"] = alone
                reading[f"kept{i}"] = initial - alone
        yield reading


def _protected_cells(
    truth: dict[str, int], shown: SuppressedAttrition
) -> dict[str, SuppressedCount | None]:
    cells: dict[str, SuppressedCount | None] = {"initial": shown.initial}
    for i, row in enumerate(shown.rules):
        cells[f"remaining{i}"] = row.remaining
        cells[f"excluded{i}"] = row.excluded
        if row.excluded_alone is not None:
            cells[f"alone{i}"] = row.excluded_alone
            kept = truth[f"kept{i}"]
            if 0 < kept < THRESHOLD:  # never shown, but small: must not be derivable
                cells[f"kept{i}"] = None
    return {name: cell for name, cell in cells.items() if cell is None or cell.hidden}


def _truth(initial: int, steps: list[AttritionStep]) -> dict[str, int]:
    truth = {"initial": initial}
    before = initial
    for i, step in enumerate(steps):
        truth[f"remaining{i}"] = step.remaining
        truth[f"excluded{i}"] = before - step.remaining
        if step.excluded_alone is not None:
            truth[f"alone{i}"] = step.excluded_alone
            truth[f"kept{i}"] = initial - step.excluded_alone
        before = step.remaining
    return truth


@st.composite
def attrition_tables(draw: st.DrawFn) -> tuple[int, list[AttritionStep]]:
    """Small tables, so many cells are small: 0-25 people, 1-4 rules."""
    initial = draw(st.integers(0, 25))
    steps, before = [], initial
    for i in range(draw(st.integers(1, 4))):
        removed = draw(st.integers(0, min(before, 12)))
        alone = draw(st.none() | st.integers(0, initial))
        steps.append(AttritionStep(f"rule {i}", before - removed, alone))
        before -= removed
    return initial, steps


@settings(max_examples=300, deadline=None)
@given(attrition_tables())
def test_no_hidden_cell_can_be_recomputed_from_the_shown_ones(
    table: tuple[int, list[AttritionStep]],
) -> None:
    initial, steps = table
    shown = suppress_attrition(initial, steps, THRESHOLD)
    truth = _truth(initial, steps)
    protected = _protected_cells(truth, shown)

    possible: dict[str, set[int]] = defaultdict(set)
    for reading in _readings(shown):
        for name in protected:
            possible[name].add(reading[name])

    for name in protected:
        assert truth[name] in possible[name], f"{name}: the true value does not read the same"
        assert len(possible[name]) >= 2, f"{name} = {truth[name]} is recoverable from {shown}"


@settings(max_examples=300, deadline=None)
@given(attrition_tables())
def test_every_small_cell_is_hidden_and_every_shown_cell_is_true(
    table: tuple[int, list[AttritionStep]],
) -> None:
    initial, steps = table
    shown = suppress_attrition(initial, steps, THRESHOLD)
    truth = _truth(initial, steps)
    cells = {"initial": shown.initial}
    for i, row in enumerate(shown.rules):
        cells |= {f"remaining{i}": row.remaining, f"excluded{i}": row.excluded}
        if row.excluded_alone is not None:
            cells[f"alone{i}"] = row.excluded_alone
    for name, cell in cells.items():
        assert _admits(cell, truth[name]), name
        if 0 < truth[name] < THRESHOLD:
            assert cell.hidden_because is HiddenBecause.SMALL, name
        if truth[name] >= THRESHOLD:
            assert cell.hidden_because is not HiddenBecause.SMALL, name


def test_two_small_cells_adding_up_to_a_shown_total_hide_the_total() -> None:
    # 8 = "<5" + "<5" would force 4 + 4.
    shown = suppress_attrition(8, [AttritionStep("adult", 4)])
    assert str(shown.initial) == "hidden"
    assert [str(shown.rules[0].remaining), str(shown.rules[0].excluded)] == ["<5", "<5"]


def test_initial_and_final_counts_stay_shown_when_inner_cells_can_protect() -> None:
    shown = suppress_attrition(
        400, [AttritionStep("a", 397), AttritionStep("b", 300), AttritionStep("c", 298)]
    )
    assert shown.initial.value == 400
    assert shown.final.value == 298
    assert str(shown.rules[0].excluded) == "<5"
    assert str(shown.rules[2].excluded) == "<5"


def test_large_counts_are_shown_unchanged() -> None:
    shown = suppress_attrition(400, [AttritionStep("a", 300, 120), AttritionStep("b", 250)])
    assert shown.to_json() == {
        "threshold": 5,
        "initial": 400,
        "final": 250,
        "rules": [
            {"name": "a", "remaining": 300, "excluded": 100, "excluded_alone": 120},
            {"name": "b", "remaining": 250, "excluded": 50},
        ],
    }


@pytest.mark.parametrize(
    ("n", "printed"), [(0, "0"), (1, "<5"), (4, "<5"), (5, "5"), (1234, "1234")]
)
def test_one_count_under_the_threshold_prints_as_less_than_threshold(n: int, printed: str) -> None:
    assert str(suppress_count(n)) == printed
    assert suppress_count(n).hidden == (printed == "<5")


def test_threshold_is_a_parameter() -> None:
    assert str(suppress_count(9, threshold=11)) == "<11"
    assert suppress_count(11, threshold=11).value == 11


def test_an_impossible_attrition_table_is_refused() -> None:
    with pytest.raises(ValueError, match="rule 'b'"):
        suppress_attrition(10, [AttritionStep("a", 8), AttritionStep("b", 9)])
