"""Find and replace protected health information in clinical free text (Chinese and English).

:func:`find_phi` returns the PHI spans of a note; :func:`scrub_text` replaces them: names,
ID numbers, phones, e-mails, MRNs and addresses by a tag (``[姓名]``/``[NAME]`` ...),
dates by the same date shifted by the person's shift, written in the note's own format,
so intervals inside a note survive de-identification.

How PHI is found, per entity type:

* ``ID_NUMBER``: 18-character resident ID numbers whose GB 11643 check character is
  valid, or any 18-character number right after a label (身份证, ID No.) — a mistyped
  number is still someone's ID; 15-digit first-generation numbers after a label.
* ``PHONE``: Chinese mobiles (1[3-9]x, with +86, spaces or dashes) and landlines with an
  area code (010-…, (0571)…); digits glued to other digits are left alone.
* ``EMAIL``; ``DATE``: 2024年3月5日, ISO, 2024/3/5, 2024.03.05, 05/03/2024 (day first, as
  Chinese and British notes write it), March 5, 2024 and 5 March 2024.
* ``MRN``: a letter-and-digit identifier after a label (病案号, 住院号, 门诊号, MRN,
  Patient ID), and every identifier the caller knows for the person.
* ``ADDRESS``: Chinese addresses (province/city/district, then a street, number and
  building/unit/room), and every address the caller knows.
* ``NAME``: the person's own names the caller knows (hanzi, pinyin both orders, surname
  with a title), and other people's names by context: a common surname plus one or two
  characters next to 医生/医师/家属/先生/女士 ..., a capitalised pinyin name after
  Dr./Mr./Ms./Patient:/a relation word.

Why our own recognizers and not Presidio: Presidio's analyzer needs a spaCy language
model (a download: nothing may be fetched here) for its NLP engine, and its built-in
recognizers are for US identifiers; what carries the recall on Chinese notes is exactly
this list of Chinese identifier patterns, the check digit and the person's known
identifiers. The recognizers are plain functions of (text) -> spans, so a Presidio
``EntityRecognizer`` could wrap them if a site wants its framework.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from medlake.resident_id import has_valid_check_character

ENTITY_TYPES = ("NAME", "ID_NUMBER", "PHONE", "ADDRESS", "DATE", "MRN", "EMAIL")

#: The common Chinese surnames (百家姓 by modern frequency, ~90 % of the population),
#: compound ones first so 欧阳 wins over 欧.
_SURNAME_TEXT = (
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 令狐 王 李 张 刘 "
    "陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 "
    "何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 彭 曾 肖 田 董 袁 潘 于 蒋 蔡 余 杜 "
    "叶 程 苏 魏 吕 丁 任 沈 姚 卢 姜 崔 钟 谭 陆 汪 范 金 石 廖 贾 夏 韦 付 方 白 "
    "邹 孟 熊 秦 邱 江 尹 薛 闫 段 雷 侯 龙 史 陶 黎 贺 顾 毛 郝 龚 邵 万 钱 严 覃 "
    "武 戴 莫 孔 向 汤 常 温 康 施 文 牛 樊 葛 邢 安 齐 易 乔 伍 庞 颜 倪 庄 聂 章 "
    "鲁 岳 翟 殷 詹 申 欧 耿 关 兰 焦 俞 左 柳 甘 祝 包 宁 尚 符 舒 阮 柯 纪 梅 童 "
    "凌 毕 单 季 裴 霍 涂 成 苗 谷 盛 曲 翁 冉 骆 蓝 路 游 辛 靳 管 柴 蒙 鲍 华 喻 "
    "祁 蒲 房 滕 屈 饶 解 牟 艾 尤 阳 时 穆 农 司 卓 古 吉 缪 简 车 项 连 芦 麦 褚 "
    "娄 窦 戚 岑 景 党 宫 费 卜 冷 晏 席 卫 米 柏 宗 瞿 桂 全 佟 应 臧 闵 苟 邬 边 "
    "卞 姬 师 和 仇 栾 隋 商 刁 沙 荣 巫 寇 桑 郎 甄 丛 仲 虞 敖 巩 明 佘 池 查 麻 "
    "苑 迟 邝 "
)
SURNAMES: tuple[str, ...] = tuple(_SURNAME_TEXT.split())
_SURNAME_RE = "|".join(sorted(SURNAMES, key=len, reverse=True))
_HAN = "[\u4e00-\u9fff]"
_TITLES = "先生|女士|小姐|老师|阿姨|大爷"
_RELATIONS_EN = "spouse|wife|husband|son|daughter|mother|father|sister|brother|relative"


@dataclass(frozen=True, order=True)
class PhiSpan:
    """One piece of PHI: ``text[start:end]``, its entity type and the recognizer's name."""

    start: int
    end: int
    entity: str
    text: str
    source: str = ""


@dataclass(frozen=True)
class KnownIdentifiers:
    """What the lake knows about the note's person: always removed wherever they appear."""

    names: Sequence[str] = ()
    ids: Sequence[str] = ()
    addresses: Sequence[str] = ()
    phones: Sequence[str] = ()


@dataclass
class _Found:
    spans: list[PhiSpan] = field(default_factory=list)

    def add(self, text: str, start: int, end: int, entity: str, source: str) -> None:
        if end > start:
            self.spans.append(PhiSpan(start, end, entity, text[start:end], source))

    def matches(self, text: str, pattern: re.Pattern[str], entity: str, group: int = 0) -> None:
        for match in pattern.finditer(text):
            self.add(text, match.start(group), match.end(group), entity, pattern.pattern[:20])


_NOT_DIGIT_BEFORE, _NOT_DIGIT_AFTER = r"(?<![\dA-Za-z])", r"(?![\dA-Za-z])"
_RESIDENT_ID = re.compile(_NOT_DIGIT_BEFORE + r"\d{17}[\dXx]" + _NOT_DIGIT_AFTER)
_LABELLED_ID = re.compile(r"(?:身份证号?码?|证件号码?|ID\s*(?:No\.?|number|#)|ID card)[:：\s]*"
                          r"(\d{17}[\dXx]|\d{15})" + _NOT_DIGIT_AFTER, re.IGNORECASE)  # fmt: skip
_MOBILE = re.compile(_NOT_DIGIT_BEFORE + r"(?:(?:\+|00)?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}"
                     + _NOT_DIGIT_AFTER)  # fmt: skip
_LANDLINE = re.compile(_NOT_DIGIT_BEFORE + r"(?:\(0\d{2,3}\)\s?|（0\d{2,3}）|0\d{2,3}[\s-])"
                       r"[2-9]\d{2,3}[\s-]?\d{3,4}" + _NOT_DIGIT_AFTER)  # fmt: skip
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_MRN = re.compile(r"(?:病案号|住院号|门诊号|病历号|就诊卡号|登记号|MRN|Patient ID|Hospital No\.?)"
                  r"[:：\s#]*([A-Za-z]{0,4}\d[A-Za-z0-9-]{4,})", re.IGNORECASE)  # fmt: skip
_MONTH_TEXT = (
    "january february march april may june july august september october november december"
)
_MONTHS: tuple[str, ...] = tuple(_MONTH_TEXT.split())
_MONTH_RE = (
    "|".join(m.capitalize() for m in _MONTHS)
    + "|"
    + "|".join(m[:3].capitalize() + r"\.?" for m in _MONTHS)
)
_DATE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("zh", re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})[日号]")),
    ("iso", re.compile(_NOT_DIGIT_BEFORE + r"(\d{4})-(\d{1,2})-(\d{1,2})" + _NOT_DIGIT_AFTER)),
    ("slash", re.compile(_NOT_DIGIT_BEFORE + r"(\d{4})/(\d{1,2})/(\d{1,2})" + _NOT_DIGIT_AFTER)),
    ("dot", re.compile(_NOT_DIGIT_BEFORE + r"(\d{4})\.(\d{1,2})\.(\d{1,2})" + _NOT_DIGIT_AFTER)),
    ("dmy", re.compile(_NOT_DIGIT_BEFORE + r"(\d{1,2})/(\d{1,2})/(\d{4})" + _NOT_DIGIT_AFTER)),
    ("mdy_en", re.compile(rf"({_MONTH_RE})\s+(\d{{1,2}}),\s*(\d{{4}})")),
    ("dmy_en", re.compile(rf"(?<!\d)(\d{{1,2}})\s+({_MONTH_RE})\s+(\d{{4}})")),
)
_ADMIN = rf"{_HAN}{{1,8}}?(?:省|自治区|市|州|盟)"
_ADDRESS = re.compile(
    rf"(?:{_ADMIN}){{0,2}}{_HAN}{{1,6}}?(?:区|县|旗|市)"
    rf"[\u4e00-\u9fff\d]{{1,20}}?(?:大街|大道|路|街|道|巷|胡同|弄|里)[东西南北中]?"
    r"\d{1,5}号(?:[\u4e00-\u9fff]{0,8}?\d{0,4}(?:号楼|栋|座|幢|单元|层|楼|室|号院|小区|花园|公寓))*"
)  # fmt: skip
_HANZI_NAME_CONTEXT = re.compile(
    rf"(?:姓名|患者|家属|陪同家属|联系人|主治医师|主治医生|医师|医生|护士|签名|记录者?|报告者?)"
    rf"[:：\s]*((?:{_SURNAME_RE}){_HAN}{{1,2}})"
    # what follows a name in a note: punctuation, a function word, a date, a title
    r"(?=[\s,，。;；:：（(、\d]|[于因在以今自由诉经及与和等]|医生|医师|$)"
)  # fmt: skip
_HANZI_NAME_BEFORE = re.compile(rf"((?:{_SURNAME_RE}){_HAN}{{1,2}}?)(?=医生|医师|护士|主任|教授)")
_HANZI_TITLE = re.compile(rf"(?:{_SURNAME_RE})(?:{_TITLES})")


@lru_cache(maxsize=1)
def _pinyin_surnames() -> str:
    from pypinyin import Style, lazy_pinyin  # its dictionaries take ~0.4 s to load

    spelled = {lazy_pinyin(s, style=Style.NORMAL)[0].capitalize() if len(s) == 1
               else "".join(lazy_pinyin(s)).capitalize() for s in SURNAMES}  # fmt: skip
    return "|".join(sorted(spelled, key=len, reverse=True))


@lru_cache(maxsize=1)
def _latin_name_patterns() -> tuple[re.Pattern[str], ...]:
    surname = _pinyin_surnames()
    name = r"[A-Z][a-z]{1,12}(?:[\s-][A-Z][a-z]{1,12})?"
    return (
        re.compile(rf"(?:Dr\.?|Doctor|Prof\.?|Mr\.?|Ms\.?|Mrs\.?|Miss|Patient:?|Name:?|"
                   rf"(?:{_RELATIONS_EN}))\s+({name})"),
        re.compile(rf"(?:患者|姓名[:：]|家属[:：])\s*({name})"),
        re.compile(rf"\b((?:{surname})\s[A-Z][a-z]{{1,12}})\b"),
    )  # fmt: skip


def find_phi(text: str, known: KnownIdentifiers | None = None) -> list[PhiSpan]:
    """The PHI spans of ``text``, sorted, overlaps merged (the longer span wins)."""
    found = _Found()
    for match in _RESIDENT_ID.finditer(text):
        if has_valid_check_character(match.group().upper()):
            found.add(text, match.start(), match.end(), "ID_NUMBER", "resident id")
    found.matches(text, _LABELLED_ID, "ID_NUMBER", 1)
    found.matches(text, _EMAIL, "EMAIL")
    found.matches(text, _MOBILE, "PHONE")
    found.matches(text, _LANDLINE, "PHONE")
    found.matches(text, _MRN, "MRN", 1)
    for _, pattern in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            if _parse_date(match) is not None:
                found.add(text, match.start(), match.end(), "DATE", "date")
    found.matches(text, _ADDRESS, "ADDRESS")
    found.matches(text, _HANZI_NAME_CONTEXT, "NAME", 1)
    found.matches(text, _HANZI_NAME_BEFORE, "NAME", 1)
    found.matches(text, _HANZI_TITLE, "NAME")
    for pattern in _latin_name_patterns():
        found.matches(text, pattern, "NAME", 1)
    if known is not None:
        _known(text, known, found)
    return _merge(found.spans)


def _known(text: str, known: KnownIdentifiers, found: _Found) -> None:
    for entity, values in (("NAME", _name_variants(known.names)), ("MRN", known.ids),
                           ("ADDRESS", known.addresses), ("PHONE", known.phones)):  # fmt: skip
        for value in {v for v in values if v and len(v) >= 2}:
            start = text.find(value)
            while start >= 0:
                found.add(text, start, start + len(value), entity, "known")
                start = text.find(value, start + len(value))


def _name_variants(names: Iterable[str]) -> list[str]:
    variants: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        variants.append(name)
        parts = name.split()
        if len(parts) == 2:  # pinyin: both orders
            variants.append(f"{parts[1]} {parts[0]}")
        elif re.fullmatch(f"{_HAN}{{2,4}}", name):
            surname = next((s for s in sorted(SURNAMES, key=len, reverse=True)
                            if name.startswith(s)), name[0])  # fmt: skip
            variants.extend(surname + title for title in _TITLES.split("|"))
    return variants


def _merge(spans: list[PhiSpan]) -> list[PhiSpan]:
    """Overlapping spans become one, typed by the longest; sorted by position."""
    merged: list[PhiSpan] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            if span.end > last.end:
                longest = last if last.end - last.start >= span.end - span.start else span
                merged[-1] = PhiSpan(last.start, span.end, longest.entity, "", longest.source)
            continue
        merged.append(span)
    return merged


def _parse_date(match: re.Match[str]) -> dt.date | None:
    kind = next(k for k, p in _DATE_PATTERNS if p is match.re)
    a, b, c = match.groups()
    try:
        if kind in ("zh", "iso", "slash", "dot"):
            return dt.date(int(a), int(b), int(c))
        if kind == "dmy":
            return dt.date(int(c), int(b), int(a))
        if kind == "mdy_en":
            return dt.date(int(c), _month(a), int(b))
        return dt.date(int(c), _month(b), int(a))
    except ValueError:
        return None


def _month(name: str) -> int:
    return next(i for i, m in enumerate(_MONTHS, 1) if m.startswith(name.rstrip(".").lower()))


_TAGS_ZH = {"NAME": "[姓名]", "ID_NUMBER": "[身份证号]", "PHONE": "[电话]", "ADDRESS": "[地址]",
            "MRN": "[病案号]", "EMAIL": "[邮箱]", "DATE": "[日期]"}  # fmt: skip


def scrub_text(text: str, *, shift_days: int | None = None,
               known: KnownIdentifiers | None = None) -> tuple[str, list[PhiSpan]]:  # fmt: skip
    """``text`` with its PHI replaced, and the spans found (offsets into ``text``).

    Dates move by ``shift_days`` and keep their format; without a shift they become a
    tag. Tags are Chinese when the text holds more hanzi than Latin letters, else
    English (``[NAME]``).
    """
    spans = [_retyped(text, span) for span in find_phi(text, known)]
    chinese = len(re.findall(_HAN, text)) >= len(re.findall("[A-Za-z]", text))
    pieces: list[str] = []
    position = 0
    for span in spans:
        pieces.append(text[position : span.start])
        pieces.append(_replacement(text[span.start : span.end], span.entity, shift_days, chinese))
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces), spans


def _retyped(text: str, span: PhiSpan) -> PhiSpan:
    return PhiSpan(span.start, span.end, span.entity, text[span.start : span.end], span.source)


def _replacement(value: str, entity: str, shift_days: int | None, chinese: bool) -> str:
    if entity == "DATE" and shift_days is not None:
        shifted = shift_date_text(value, shift_days)
        if shifted is not None:
            return shifted
    return _TAGS_ZH[entity] if chinese else f"[{entity}]"


def shift_date_text(value: str, days: int) -> str | None:
    """``value`` (one date in a format :func:`find_phi` knows) moved by ``days``, same format."""
    for kind, pattern in _DATE_PATTERNS:
        match = pattern.fullmatch(value)
        if match is None:
            continue
        day = _parse_date(match)
        if day is None:
            return None
        new = day + dt.timedelta(days=days)
        month = _MONTHS[new.month - 1].capitalize()
        return {
            "zh": f"{new.year}年{new.month}月{new.day}日", "iso": new.isoformat(),
            "slash": f"{new.year}/{new.month}/{new.day}",
            "dot": f"{new.year}.{new.month:02d}.{new.day:02d}",
            "dmy": f"{new.day:02d}/{new.month:02d}/{new.year}",
            "mdy_en": f"{month} {new.day}, {new.year}", "dmy_en": f"{new.day} {month} {new.year}",
        }[kind]  # fmt: skip
    return None
