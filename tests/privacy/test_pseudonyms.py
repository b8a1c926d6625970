"""Keyed pseudonyms and date shifts: HMAC-SHA-256 under the workspace secret, stable per person."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.errors import ConfigError
from medlake.privacy import (
    date_shift_days,
    date_shifts,
    new_key,
    pseudonym,
    pseudonymize,
    read_or_create_key,
    shift_date_column,
)


def _openssl_hmac(key: bytes, message: bytes) -> str:
    """HMAC-SHA-256 by the openssl command, as docs/privacy.md defines the pseudonym."""
    done = subprocess.run(
        ["openssl", "mac", "-digest", "SHA256", "-macopt", f"hexkey:{key.hex()}", "HMAC"],
        input=message,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip().lower()


def test_pseudonym_is_the_documented_hmac_sha256_of_context_and_value() -> None:
    key = new_key()
    message = b"medlake-pseudonym\x00" + b"study-7" + b"\x00" + b"123456789"
    assert pseudonym(key, 123456789, "study-7") == _openssl_hmac(key, message)[:32]


def test_pseudonym_is_not_a_plain_hash_and_depends_on_key_and_context() -> None:
    key, other = new_key(), new_key()
    value = 987654321
    assert pseudonym(key, value) == pseudonym(key, value)
    assert pseudonym(key, value) != pseudonym(other, value)
    assert pseudonym(key, value, "a") != pseudonym(key, value, "b")
    assert pseudonym(key, value) not in hashlib.sha256(str(value).encode()).hexdigest()


def test_pseudonyms_of_many_persons_are_distinct_and_nulls_stay_null() -> None:
    key = new_key()
    ids = pa.array([*range(50_000), None], type=pa.int64())
    names = pseudonymize(key, ids).to_pylist()
    assert names[-1] is None
    assert len(set(names[:-1])) == 50_000
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in names[:-1])


def test_secret_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "pseudonym.key"
    key = read_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32
    assert read_or_create_key(path) == key


def test_an_unreadable_secret_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match=r"pseudonym\.key"):
        read_or_create_key(path)


def test_each_person_always_shifts_by_the_same_nonzero_days_within_range() -> None:
    key = new_key()
    shifts = [date_shift_days(key, person, 180) for person in range(20_000)]
    assert shifts == [date_shift_days(key, person, 180) for person in range(20_000)]
    assert 0 not in shifts
    assert min(shifts) == -180
    assert max(shifts) == 180
    # Spread evenly: each of the 360 values about 20000/360 = 56 times.
    counts = [shifts.count(v) for v in (-180, -90, -1, 1, 90, 180)]
    assert all(20 < c < 110 for c in counts)
    assert abs(sum(shifts) / len(shifts)) < 5


def test_shifting_keeps_intervals_within_a_person() -> None:
    key = new_key()
    persons = pa.array([1, 1, 2, 2, 3], type=pa.int64())
    dates = pa.array(
        [dt.date(2020, 1, 1), dt.date(2020, 3, 1), dt.date(2021, 5, 5), None, dt.date(2019, 1, 1)]
    )
    shifts = date_shifts(key, persons.to_pylist(), 365)
    moved = shift_date_column(dates, persons, shifts).to_pylist()
    assert moved[1] - moved[0] == dt.timedelta(days=60)
    assert moved[3] is None
    for before, after, person in zip(dates.to_pylist(), moved, persons.to_pylist(), strict=True):
        if before is not None:
            assert (after - before).days == date_shift_days(key, person, 365)
