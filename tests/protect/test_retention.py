"""Retention keeps exactly one backup per hour for 7 days, per day for 2 years, per month
for 10 years and per year for 29 years, checked over 30 simulated years of hourly backups
pruned every week against an independent, calendar-arithmetic computation."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest

from medlake.errors import ConfigError
from medlake.protect.retention import RetentionPolicy, parse_span, snapshots_to_keep

HOUR = dt.timedelta(hours=1)


def _years_before(now: dt.datetime, years: int) -> dt.datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February
        return now.replace(year=now.year - years, day=28)


def _months_before(now: dt.datetime, months: int) -> dt.datetime:
    index = now.year * 12 + now.month - 1 - months
    year, month = divmod(index, 12)
    day = min(now.day, calendar.monthrange(year, month + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def expected_hourly_backups(start: dt.datetime, now: dt.datetime) -> set[dt.datetime]:
    """What the hospital policy keeps when a backup was taken every hour from start to now.

    With a backup every hour, the newest backup of a day is 23:00 (or now, today), of a
    month its last day's 23:00, of a year 31 December 23:00.
    """
    keep = {now}
    hour = now
    while hour > now - dt.timedelta(days=7) and hour >= start:
        keep.add(hour)
        hour -= HOUR
    day = start.date()
    while day <= now.date():
        newest = min(dt.datetime.combine(day, dt.time(23)), now)
        if newest > _years_before(now, 2) and newest >= start:
            keep.add(newest)
        day += dt.timedelta(days=1)
    for year in range(start.year, now.year + 1):
        for month in range(1, 13):
            last = calendar.monthrange(year, month)[1]
            newest = min(dt.datetime(year, month, last, 23), now)
            if newest >= start and newest > _months_before(now, 120):
                keep.add(newest)
        newest = min(dt.datetime(year, 12, 31, 23), now)
        if newest >= start and newest > _years_before(now, 29):
            keep.add(newest)
    return keep


@pytest.mark.slow
def test_thirty_years_of_hourly_backups_pruned_weekly_keep_exactly_the_policy() -> None:
    policy = RetentionPolicy.from_spans()
    start = dt.datetime(1996, 2, 27, 0)  # leap years and a 29 February cutoff included
    end = dt.datetime(2026, 2, 27, 13)
    checks = {
        dt.datetime(1996, 3, 30, 5),
        dt.datetime(1999, 1, 1, 0),
        dt.datetime(2012, 2, 29, 23),
        end,
    }
    kept: list[dt.datetime] = []
    now = start
    checked = 0
    while now <= end:
        kept.append(now)  # the hourly backup
        if (now.weekday() == 6 and now.hour == 3) or now in checks:  # weekly prune, Sunday 03:00
            kept = sorted(snapshots_to_keep(kept, now, policy))
        if now in checks:
            assert set(kept) == expected_hourly_backups(start, now), now
            checked += 1
        now += HOUR
    assert checked == len(checks)
    # 168 hourly, ~730 daily, 120 monthly, 29 yearly, less the overlaps.
    assert 168 + 730 + 90 <= len(kept) <= 168 + 731 + 120 + 29


def test_gaps_do_not_stretch_the_windows() -> None:
    """Unlike a count ("keep 730 dailies"), a month without backups keeps nothing older."""
    policy = RetentionPolicy.from_spans(hourly="1d", daily="10d", monthly="1m", yearly="1y")
    now = dt.datetime(2026, 6, 30, 12)
    times = [now - dt.timedelta(days=d) for d in (0, 1, 2, 40, 41, 42, 400)]
    keep = snapshots_to_keep(times, now, policy)
    # A count of 10 dailies would keep 40-42 days ago too; they lie outside every window
    # (the year's newest backup is today's).
    assert sorted(keep) == sorted(times[:3])
    assert keep[times[0]] == ["hourly", "daily", "monthly", "yearly", "latest"]


def test_the_newest_backup_and_clock_errors_are_always_kept() -> None:
    policy = RetentionPolicy.from_spans(hourly="1h", daily="1d", monthly="1m", yearly="1y")
    now = dt.datetime(2026, 1, 1)
    old = dt.datetime(2000, 1, 1)
    future = dt.datetime(2030, 1, 1)
    assert set(snapshots_to_keep([old], now, policy)) == {old}
    assert future in snapshots_to_keep([old, future], now, policy)


@pytest.mark.parametrize("bad", ["7", "d7", "7 days", "-1y", ""])
def test_spans_that_are_not_spans_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"backup\.keep_daily"):
        parse_span(bad, setting="backup.keep_daily")
