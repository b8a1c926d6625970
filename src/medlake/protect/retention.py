"""Which backups to keep: one per hour, day, month and year, each for a span of time.

A hospital's retention is stated in time — every hour for 7 days, every day for 2 years,
every month for 10 years, every year for 29 years — so the rules here are windows of
time, not counts. For each rule the newest snapshot of each calendar period (UTC) whose
time lies inside the rule's window (``now - span < time``) is kept; a snapshot is kept
if any rule keeps it, and the newest snapshot of all is always kept. Keeping the
*newest* of a period makes repeated pruning stable: pruning every day gives the same
set as pruning once at the end, because the newest snapshot of a period is also the
newest of its last day and hour.

Computed here rather than with ``borg prune``: Borg 1.2's ``--keep-daily N`` keeps the
last N days *that have archives*, so after a fortnight without backups it would keep
dailies older than two years; the policy is about time. Borg then deletes exactly the
archives this module does not keep (``medlake.service.backup``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dateutil.relativedelta import relativedelta

from medlake.errors import ConfigError

_SPAN = re.compile(r"^\s*(\d+)\s*([hdwmy])\s*$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks", "m": "months", "y": "years"}

PERIODS: dict[str, Callable[[dt.datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def parse_span(text: str, *, setting: str = "span") -> relativedelta:
    """``"7d"``, ``"36h"``, ``"4w"``, ``"6m"`` (months), ``"29y"`` as a calendar span."""
    match = _SPAN.match(text)
    if match is None:
        raise ConfigError(f"{setting}: {text!r} is not a span like 7d, 36h, 4w, 6m or 2y")
    return relativedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class RetentionPolicy:
    """How long one snapshot per hour, day, month and year is kept."""

    hourly: relativedelta
    daily: relativedelta
    monthly: relativedelta
    yearly: relativedelta

    @classmethod
    def from_spans(
        cls, hourly: str = "7d", daily: str = "2y", monthly: str = "10y", yearly: str = "29y"
    ) -> RetentionPolicy:
        return cls(
            hourly=parse_span(hourly, setting="backup.keep_hourly"),
            daily=parse_span(daily, setting="backup.keep_daily"),
            monthly=parse_span(monthly, setting="backup.keep_monthly"),
            yearly=parse_span(yearly, setting="backup.keep_yearly"),
        )

    def rules(self) -> list[tuple[str, relativedelta]]:
        return [
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]


def snapshots_to_keep(
    times: Iterable[dt.datetime], now: dt.datetime, policy: RetentionPolicy
) -> dict[dt.datetime, list[str]]:
    """The snapshot times to keep, each with the rules that keep it.

    Times are naive UTC. A snapshot from the future (a clock set wrong) is kept, so a
    clock error never deletes backups.
    """
    times = sorted(set(times))
    keep: dict[dt.datetime, list[str]] = {}
    for rule, span in policy.rules():
        cutoff = now - span
        bucket = PERIODS[rule]
        newest: dict[tuple[int, ...], dt.datetime] = {}
        for time in times:  # ascending, so the last one seen in a period is its newest
            if cutoff < time <= now:
                newest[bucket(time)] = time
        for time in newest.values():
            keep.setdefault(time, []).append(rule)
    for time in times:
        if time > now:
            keep.setdefault(time, []).append("future")
    if times:
        keep.setdefault(times[-1], []).append("latest")
    return keep
