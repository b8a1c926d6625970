"""Small-cell suppression of counts and attrition tables.

A count of people under a threshold (default 5) can single out a person, so it is shown
as ``"<5"``. In an attrition table that is not enough: the cells are tied by
subtraction (``remaining before a rule = remaining after it + excluded by it``), so one
hidden cell could be recomputed from the cells still shown. *Complementary suppression*
hides further cells until no hidden cell is determined by the shown ones.

Which cells to hide is chosen by a small dynamic programme over the chain of rules
(cheapest hiding such that no relation holds a single unknown), then checked the way a
reader would attack it: by propagating bounds through the relations (exact for this
tree of relations, where linear programming would give the same ranges) over what
the display says (``"<5"`` means 0 to 4, ``"hidden"`` means at least 5), so that bounds
cannot pin a value either (``8 = "<5" + "<5"`` forces 4 and 4). No well-kept Python
library does complementary suppression of a small table (sdcTable and tau-Argus are R
and Java programs for large tabulations), hence this module.

Zero is shown (it singles out nobody) unless hiding it protects another cell; then it
prints ``"<5"`` like the small counts, so that ``"<5"`` means 0 to 4 to every reader:
were zeros never hidden, four ``"<5"`` cells adding up along a chain would pin each other
(every one at least 1). Cells with ``0 < n < threshold`` are always hidden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_THRESHOLD = 5


class HiddenBecause(StrEnum):
    """Why a count is not shown."""

    SMALL = "small"
    """Under the threshold: ``0 < n < t`` (primary suppression), or a zero hidden to
    protect another cell. Prints ``"<t"``, which therefore means 0 to t-1."""
    COMPLEMENTARY = "complementary"
    """At least the threshold, hidden so that a small cell cannot be recomputed."""


@dataclass(frozen=True)
class SuppressedCount:
    """One count as it may be shown: ``value`` is ``None`` when hidden, ``hidden_because`` why.

    ``str()`` gives the text to print: the number, ``"<5"`` (for threshold 5) for a small
    count, or ``"hidden"`` for a count hidden to protect a small one.
    """

    value: int | None
    hidden_because: HiddenBecause | None
    threshold: int = DEFAULT_THRESHOLD

    @property
    def hidden(self) -> bool:
        return self.value is None

    def __str__(self) -> str:
        if self.hidden_because is HiddenBecause.SMALL:
            return f"<{self.threshold}"
        if self.hidden_because is HiddenBecause.COMPLEMENTARY:
            return "hidden"
        return str(self.value)

    def to_json(self) -> int | str:
        """The number when shown, else the printed text (``"<5"`` or ``"hidden"``)."""
        return self.value if self.value is not None else str(self)


def is_small(n: int, threshold: int = DEFAULT_THRESHOLD) -> bool:
    """True when ``n`` people could be singled out: ``0 < n < threshold``."""
    return 0 < n < threshold


def suppress_count(n: int, threshold: int = DEFAULT_THRESHOLD) -> SuppressedCount:
    """One count on its own: hidden (``"<5"``) when ``0 < n < threshold``, else shown."""
    _check_threshold(threshold)
    if n < 0:
        raise ValueError(f"a count of people cannot be negative: {n}")
    if is_small(n, threshold):
        return SuppressedCount(None, HiddenBecause.SMALL, threshold)
    return SuppressedCount(n, None, threshold)


@dataclass(frozen=True)
class AttritionStep:
    """One inclusion rule's counts, as the cohort compiler computes them (the input).

    ``remaining``: people left after this rule and every rule before it.
    ``excluded_alone``: optional, people of the initial cohort this rule alone would remove
    (ATLAS's "independent" view); its complement ``initial - excluded_alone`` is never shown
    but is derivable, so it is protected too.
    """

    name: str
    remaining: int
    excluded_alone: int | None = None


@dataclass(frozen=True)
class SuppressedAttritionRow:
    """One rule as it may be shown: ``excluded`` is the rule's own effect in sequence
    (remaining before it minus remaining after it)."""

    name: str
    remaining: SuppressedCount
    excluded: SuppressedCount
    excluded_alone: SuppressedCount | None = None


@dataclass(frozen=True)
class SuppressedAttrition:
    """An attrition table safe to show: no hidden cell is determined by the shown ones."""

    initial: SuppressedCount
    rules: tuple[SuppressedAttritionRow, ...]
    threshold: int = DEFAULT_THRESHOLD
    final: SuppressedCount = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "final", self.rules[-1].remaining if self.rules else self.initial)

    def to_json(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "initial": self.initial.to_json(),
            "final": self.final.to_json(),
            "rules": [
                {
                    "name": row.name,
                    "remaining": row.remaining.to_json(),
                    "excluded": row.excluded.to_json(),
                    **(
                        {"excluded_alone": row.excluded_alone.to_json()}
                        if row.excluded_alone is not None
                        else {}
                    ),
                }
                for row in self.rules
            ],
        }


def suppress_attrition(
    initial: int,
    rules: Sequence[AttritionStep],
    threshold: int = DEFAULT_THRESHOLD,
) -> SuppressedAttrition:
    """Suppress small cells of an attrition table, with complementary suppression.

    Input: the initial count (people with an entry event) and, per inclusion rule in
    order, an :class:`AttritionStep` (``remaining`` after it, optionally
    ``excluded_alone``). Output: a :class:`SuppressedAttrition` holding one
    :class:`SuppressedCount` per shown cell: ``initial``, and per rule ``remaining``,
    ``excluded`` (``remaining`` before minus after the rule) and ``excluded_alone``.

    Cells with ``0 < n < threshold`` are hidden as ``"<threshold"``; further cells are
    hidden (``"hidden"``) until no hidden cell, nor any never-shown derived small count,
    can be recomputed by adding and subtracting shown cells. The fewest, smallest extra
    cells are hidden, keeping the initial and final counts shown whenever possible.
    """
    _check_threshold(threshold)
    table = _AttritionCells.build(initial, rules)
    hidden = table.suppress(threshold)

    def cell(index: int) -> SuppressedCount:
        value = table.values[index]
        if index not in hidden:
            return SuppressedCount(value, None, threshold)
        # A hidden zero prints "<t" like a small count, so "<t" means 0..t-1 and
        # "hidden" means at least t; nothing tells the two kinds of "<t" apart.
        because = HiddenBecause.SMALL if value < threshold else HiddenBecause.COMPLEMENTARY
        return SuppressedCount(None, because, threshold)

    rows = tuple(
        SuppressedAttritionRow(
            name=step.name,
            remaining=cell(table.remaining[i]),
            excluded=cell(table.excluded[i]),
            excluded_alone=None if table.alone[i] is None else cell(table.alone[i]),
        )
        for i, step in enumerate(rules)
    )
    return SuppressedAttrition(initial=cell(0), rules=rows, threshold=threshold)


def _check_threshold(threshold: int) -> None:
    if threshold < 1:
        raise ValueError(f"the small-cell threshold must be at least 1, got {threshold}")


@dataclass
class _AttritionCells:
    """The table as cells (shown or derived-only) and relations ``total = a + b``."""

    values: list[int]
    shown: list[bool]
    relations: list[tuple[int, int, int]]
    remaining: list[int]
    excluded: list[int]
    alone: list[int | None]

    @classmethod
    def build(cls, initial: int, rules: Sequence[AttritionStep]) -> _AttritionCells:
        if initial < 0:
            raise ValueError(f"the initial count cannot be negative: {initial}")
        cells = cls([initial], [True], [], [], [], [])

        def add(value: int, shown: bool) -> int:
            cells.values.append(value)
            cells.shown.append(shown)
            return len(cells.values) - 1

        before, before_index = initial, 0
        for step in rules:
            if not 0 <= step.remaining <= before:
                raise ValueError(
                    f"attrition rule {step.name!r}: remaining {step.remaining} must lie "
                    f"between 0 and the {before} remaining before it"
                )
            after = add(step.remaining, True)
            dropped = add(before - step.remaining, True)
            cells.relations.append((before_index, after, dropped))
            cells.remaining.append(after)
            cells.excluded.append(dropped)
            if step.excluded_alone is None:
                cells.alone.append(None)
            else:
                if not 0 <= step.excluded_alone <= initial:
                    raise ValueError(
                        f"attrition rule {step.name!r}: excluded_alone {step.excluded_alone} "
                        f"must lie between 0 and the initial {initial}"
                    )
                alone = add(step.excluded_alone, True)
                kept = add(initial - step.excluded_alone, False)
                cells.relations.append((0, alone, kept))
                cells.alone.append(alone)
            before, before_index = step.remaining, after
        return cells

    def suppress(self, threshold: int) -> set[int]:
        """Indices of the shown cells to hide: the small ones plus the cheapest others
        that leave every protected cell with at least two possible values."""
        small = {i for i, v in enumerate(self.values) if is_small(v, threshold)}
        forced: set[int] = set()
        while True:
            hidden = self._plan(small, forced)
            pinned = self._pinned(hidden, small, threshold)
            if not pinned:
                return hidden
            # Bounds pinned a cell (e.g. 8 shown = "<5" + "<5" forces 4 + 4): hide the
            # cheapest further cell that frees it, the plan closing relations around it.
            shown = [c for c in self._hideable() if c not in hidden]
            for candidate in sorted(shown, key=lambda c: self._weight(c, small)):
                plan = self._plan(small, forced | {candidate})
                if pinned[0] not in self._pinned(plan, small, threshold):
                    forced.add(candidate)
                    break
            else:
                return self._hideable() | small

    def _weight(self, cell: int, small: set[int]) -> float:
        """Cost of hiding ``cell``: ~1 per cell, 10 for the final and 100 for the initial
        count, so those two stay shown whenever possible; ties go to smaller values."""
        if cell in small:
            return 0.0
        final = self.remaining[-1] if self.remaining else 0
        base = 100.0 if cell == 0 else 10.0 if cell == final else 1.0
        return base + self.values[cell] / (max(self.values) + 1)

    def _plan(self, small: set[int], forced: set[int]) -> set[int]:
        """The cheapest hiding of shown cells, containing ``small | forced``, such that no
        relation holds exactly one unknown (hidden or never-shown small) cell.

        The relations form a tree (a chain of rules, each ``excluded_alone`` hanging off
        the initial count), so that condition means no unknown is recomputable by
        addition and subtraction. A dynamic programme over "is ``remaining`` hidden" along
        the chain finds the optimum.
        """
        must = small | forced
        chain = [0, *self.remaining]

        def cost(cell: int) -> float:
            return self._weight(cell, small)

        def options(cell: int) -> tuple[bool, ...]:
            if cell in must:
                return (True,)
            return (False, True)

        def alone_part(r0_hidden: bool) -> tuple[float, set[int]]:
            total, extra = 0.0, set()
            for alone in self.alone:
                if alone is None:
                    continue
                kept = alone + 1  # built right after its excluded_alone cell
                if alone in must or (kept in small and not r0_hidden):
                    total, extra = total + cost(alone), extra | {alone}
            return total, extra

        best: dict[bool, tuple[float, set[int]]] = {}
        for hidden0 in options(0):
            total, extra = alone_part(hidden0)
            best[hidden0] = (
                total + (cost(0) if hidden0 else 0.0),
                extra | ({0} if hidden0 else set()),
            )
        for step, excluded in enumerate(self.excluded, start=1):
            cell = chain[step]
            following: dict[bool, tuple[float, set[int]]] = {}
            for hidden_now in options(cell):
                for hidden_before, (total, hidden) in best.items():
                    ends = int(hidden_before) + int(hidden_now)
                    if excluded in must:
                        if ends == 0:
                            continue
                        add: set[int] = {excluded}
                    else:
                        add = {excluded} if ends == 1 else set()
                    candidate = (
                        total + sum(cost(c) for c in add) + (cost(cell) if hidden_now else 0.0)
                    )
                    if hidden_now not in following or candidate < following[hidden_now][0]:
                        chosen = hidden | add | ({cell} if hidden_now else set())
                        following[hidden_now] = (candidate, chosen)
            best = following
        if not best:
            return self._hideable() | small
        return min(best.values(), key=lambda pair: pair[0])[1]

    def _hideable(self) -> set[int]:
        return {c for c, shown in enumerate(self.shown) if shown}

    def _pinned(self, hidden: set[int], small: set[int], threshold: int) -> list[int]:
        """Protected cells whose value the display fixes.

        What a reader knows: shown cells exactly, a ``"<t"`` cell lies in [0, t-1], a
        ``"hidden"`` cell is at least t, never-shown cells are at least 0, and the
        relations hold. Bounds are propagated through the relations to a fixpoint; the
        relations form a tree (two share at most one cell, no cycles), for which this
        gives each cell's exact range (the linear programme's answer, at a fraction of
        its cost). A protected cell (hidden, or never shown and small) is pinned when its
        range holds one value.
        """
        low: list[float] = []
        high: list[float] = []
        for cell, value in enumerate(self.values):
            if self.shown[cell] and cell not in hidden:
                low.append(value)
                high.append(value)
            elif not self.shown[cell]:
                low.append(0)
                high.append(math.inf)
            elif value < threshold:  # shown as "<t": 0 to t-1
                low.append(0)
                high.append(threshold - 1)
            else:
                low.append(threshold)
                high.append(math.inf)
        for _ in range(2 * len(self.relations) + 2):
            changed = False
            for total, a, b in self.relations:
                for cell, new_low, new_high in (
                    (total, low[a] + low[b], high[a] + high[b]),
                    (a, low[total] - high[b], high[total] - low[b]),
                    (b, low[total] - high[a], high[total] - low[a]),
                ):
                    if new_low > low[cell]:
                        low[cell], changed = new_low, True
                    if new_high < high[cell]:
                        high[cell], changed = new_high, True
            if not changed:
                break
        protect = [
            c for c in range(len(self.values)) if c in hidden or (c in small and not self.shown[c])
        ]
        return [c for c in protect if high[c] - low[c] < 1]
