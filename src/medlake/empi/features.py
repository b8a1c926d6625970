"""Comparison features of an identity record: what the linkage model compares.

Splink compares columns with SQL; these are the columns, computed once per record in
Python because the transliteration needs pypinyin (a well-kept package with the
pinyin of every hanzi) and no SQL engine has that.

- ``name_py``: the name in toneless pinyin, lower case, letters only, in the order
  written (``zhangsan``). A hanzi name is transliterated (surname, then given name),
  so 张三 and "ZHANG SAN" give the same key, and a hanzi typo with a homophone
  (the commonest kind) gives the same key too.
- ``name_sorted``: the same name parts sorted, so given-name-first spellings
  ("San Zhang") and Western names in either order meet.
- ``name_hanzi``: the characters, when written in hanzi (an exact match is stronger
  evidence than the same pinyin).
- ``name_fuzzy`` (derived at link time, :func:`with_derived`, not cached): the sorted
  parts with the accent merges of Chinese input methods' fuzzy pinyin (模糊音: z/zh,
  c/ch, s/sh, n/l/r, f/h, -n/-ng), so a clerk's southern spelling ("Zang Lin" for
  Zhang Ning) and a given-name-first order still meet.
- ``birth_date`` as ``YYYY-MM-DD`` and ``birth_date_swapped`` (day and month swapped,
  where that is a date), ``birth_year``.
- ``resident_id``: the ID number upper-cased (trailing ``X``), spaces removed. For an
  18-character number, whether its GB 11643 check digit holds is kept as
  ``resident_id_valid``: one mistyped digit breaks the check, so a near match where
  one side is invalid is a typo rather than another person.
- ``sex``: ``M`` or ``F`` from the spellings sources use (男/女, male/female, M/F, 1/2).
- ``phone``: digits only, without a leading ``86`` country code.
- ``address`` (whitespace removed), ``postcode``, ``email`` (lower case).

Distinct values are transliterated once (names repeat a lot), so a million records
take seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

import pyarrow as pa
from pypinyin import Style, lazy_pinyin

from medlake.resident_id import has_valid_check_character

# Two-character surnames (复姓): the rest of the name is the given name.
_COMPOUND_SURNAMES = frozenset({
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "夏侯",
    "长孙", "宇文", "司徒", "令狐", "端木", "轩辕", "西门", "南宫", "独孤", "呼延",
    "申屠", "澹台", "公冶", "太史", "闻人", "赫连", "第五", "百里", "东郭", "濮阳",
})  # fmt: skip
# Surnames whose reading as a surname differs from pypinyin's default reading.
_SURNAME_READINGS = {
    "曾": "zeng", "单": "shan", "解": "xie", "仇": "qiu", "朴": "piao", "查": "zha",
    "区": "ou", "盖": "ge", "乐": "yue", "覃": "qin", "翟": "zhai", "缪": "miao",
    "尉迟": "yuchi", "万俟": "moqi", "长孙": "zhangsun", "重": "chong", "折": "she",
}  # fmt: skip
_HANZI = re.compile(r"[\u3400-\u9fff]")
_NOT_LETTER = re.compile(r"[^a-z]+")
_NOT_DIGIT = re.compile(r"\D+")
_SPACE = re.compile(r"\s+")

_SEX = {
    "m": "M", "male": "M", "man": "M", "1": "M", "男": "M", "男性": "M",
    "f": "F", "female": "F", "woman": "F", "2": "F", "女": "F", "女性": "F",
}  # fmt: skip

#: Feature columns, in order, with their Arrow types.
FEATURE_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("name_hanzi", pa.string()),
        ("name_py", pa.string()),
        ("name_sorted", pa.string()),
        ("birth_date", pa.string()),
        ("birth_date_swapped", pa.string()),
        ("birth_year", pa.string()),
        ("sex", pa.string()),
        ("resident_id", pa.string()),
        ("resident_id_valid", pa.bool_()),
        ("phone", pa.string()),
        ("address", pa.string()),
        ("postcode", pa.string()),
        ("email", pa.string()),
    ]
)


def split_hanzi(name: str, family: str | None = None) -> tuple[str, str]:
    """(surname, given name) of a hanzi name; ``family`` when the source says it."""
    name = _SPACE.sub("", name)
    if family and name.startswith(family):
        return family, name[len(family) :]
    if name[:2] in _COMPOUND_SURNAMES and len(name) > 2:
        return name[:2], name[2:]
    return name[:1], name[1:]


@lru_cache(maxsize=200_000)
def _pinyin(text: str) -> str:
    return "".join(lazy_pinyin(text, style=Style.NORMAL, errors="ignore")).lower()


def surname_pinyin(surname: str) -> str:
    return _SURNAME_READINGS.get(surname) or _pinyin(surname)


def name_parts(
    hanzi: str | None,
    pinyin: str | None = None,
    family: str | None = None,
    given: str | None = None,
    latin: str | None = None,
) -> list[str]:
    """The name as lower-case pinyin/Latin parts in the order written (surname first for hanzi)."""
    if hanzi and _HANZI.search(hanzi):
        surname, rest = split_hanzi(hanzi, family if family and _HANZI.search(family) else None)
        parts = [surname_pinyin(surname), _pinyin(rest)]
    else:
        text = pinyin or latin or hanzi
        if not text and (family or given):
            text = f"{family or ''} {given or ''}"
        if not text:
            return []
        if _HANZI.search(text):  # a hanzi name in a pinyin field
            return name_parts(text)
        parts = [_NOT_LETTER.sub("", token.lower()) for token in re.split(r"[\s,.\-·]+", text)]
    return [part for part in parts if part]


def normal_sex(value: str | None) -> str | None:
    if value is None:
        return None
    return _SEX.get(value.strip().lower())


def normal_phone(value: str | None) -> str | None:
    if not value:
        return None
    digits = _NOT_DIGIT.sub("", value)
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return digits or None


def normal_resident_id(value: str | None) -> str | None:
    if not value:
        return None
    text = _SPACE.sub("", value).upper()
    return text if len(text) >= 5 else None


def swapped(date: dt.date | None) -> str | None:
    """The date with day and month swapped, where that is a different valid date."""
    if date is None or date.day > 12 or date.day == date.month:
        return None
    try:
        return dt.date(date.year, date.day, date.month).isoformat()
    except ValueError:
        return None


# Fuzzy pinyin (模糊音) as input methods offer it. The digraphs go first, so their
# letters are not merged on their own (the "h" of "zh" is not an "f/h").
_FUZZY_STEPS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("ng", "n"), ("l", "n"), ("r", "n"),
                ("f", "h"))  # fmt: skip

#: Columns :func:`with_derived` adds to :data:`FEATURE_SCHEMA` before Splink sees them.
DERIVED_SCHEMA = pa.schema([("name_fuzzy", pa.string())])


@lru_cache(maxsize=200_000)
def fuzzy_pinyin(name_sorted: str) -> str:
    """The sorted name parts with fuzzy-pinyin accent merges, each part on its own."""
    parts = []
    for part in name_sorted.split(" "):
        for a, b in _FUZZY_STEPS:
            part = part.replace(a, b)
        parts.append(part)
    return " ".join(sorted(parts))


def with_derived(features: pa.Table) -> pa.Table:
    """``features`` plus the derived comparison columns (:data:`DERIVED_SCHEMA`).

    Derived columns are computed from the cached ones each time (cheap: distinct names
    repeat), so changing them needs no change of the ``empi_feature`` cache table.
    """
    if "name_fuzzy" in features.column_names:
        return features
    sorted_names = features.column("name_sorted").to_pylist()
    fuzzy = [fuzzy_pinyin(name) if name else None for name in sorted_names]
    return features.append_column("name_fuzzy", pa.array(fuzzy, pa.string()))


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    text = _SPACE.sub("", value)
    return text or None


def feature_table(records: pa.Table) -> pa.Table:
    """Features (:data:`FEATURE_SCHEMA`) of identity records.

    ``records`` has ``unique_id`` and any of the ``pii_person`` identifier columns
    (``name_hanzi``, ``name_pinyin``, ``family_name``, ``given_name``, ``name_latin``,
    ``birth_date`` as a date, ``sex``, ``resident_id``, ``phone``, ``address``,
    ``postcode``, ``email``); a missing column counts as null.
    """
    n = records.num_rows

    def column(name: str) -> list:
        if name in records.column_names:
            return records.column(name).to_pylist()
        return [None] * n

    hanzi, pinyin, family, given, latin = (
        column(c) for c in ("name_hanzi", "name_pinyin", "family_name", "given_name", "name_latin")
    )
    name_py: list[str | None] = []
    name_sorted: list[str | None] = []
    name_hz: list[str | None] = []
    cache: dict[tuple, list[str]] = {}
    for key in zip(hanzi, pinyin, family, given, latin, strict=True):
        parts = cache.get(key)
        if parts is None:
            parts = cache[key] = name_parts(*key)
        name_py.append("".join(parts) or None)
        name_sorted.append(" ".join(sorted(parts)) or None)
        name_hz.append(_text(key[0]) if key[0] and _HANZI.search(key[0]) else None)
    births = column("birth_date")
    births = [b if isinstance(b, dt.date) or b is None else _parse_date(b) for b in births]
    resident = [normal_resident_id(v) for v in column("resident_id")]
    return pa.table(
        {
            "unique_id": records.column("unique_id"),
            "name_hanzi": name_hz,
            "name_py": name_py,
            "name_sorted": name_sorted,
            "birth_date": [b.isoformat() if b else None for b in births],
            "birth_date_swapped": [swapped(b) for b in births],
            "birth_year": [f"{b.year:04d}" if b else None for b in births],
            "sex": [normal_sex(v) for v in column("sex")],
            "resident_id": resident,
            "resident_id_valid": [
                has_valid_check_character(v) if v and len(v) == 18 else None for v in resident
            ],
            "phone": [normal_phone(v) for v in column("phone")],
            "address": [_text(v) for v in column("address")],
            "postcode": [_text(v) for v in column("postcode")],
            "email": [v.strip().lower() if v else None for v in column("email")],
        },
        schema=FEATURE_SCHEMA,
    )


def _parse_date(value: object) -> dt.date | None:
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d/%m/%Y", "%Y.%m.%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


__all__ = [
    "DERIVED_SCHEMA",
    "FEATURE_SCHEMA",
    "feature_table",
    "fuzzy_pinyin",
    "name_parts",
    "normal_sex",
    "split_hanzi",
    "with_derived",
]
