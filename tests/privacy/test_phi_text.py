"""PHI in free text: hand-labelled sentences the generator never wrote, negatives that
must stay readable, date shifting, known identifiers, and the scoring rules."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from medlake.privacy.phi_scoring import LabelledSpan, score_phi
from medlake.privacy.phi_text import (
    KnownIdentifiers,
    PhiSpan,
    find_phi,
    scrub_text,
    shift_date_text,
)
from medlake.resident_id import check_character

VALID_ID = "11010519850712" + "301"
VALID_ID += check_character(VALID_ID)
WRONG_CHECK = VALID_ID[:-1] + ("0" if VALID_ID[-1] != "0" else "1")

_MARK = re.compile(r"\[\[([A-Z_]+):(.+?)\]\]")


def labelled(marked: str) -> tuple[str, list[tuple[str, str]]]:
    """``[[TYPE:text]]`` markup -> plain text and the (type, text) pieces."""
    return _MARK.sub(lambda m: m.group(2), marked), _MARK.findall(marked)


# Written by hand, in formats and phrasings the synthetic notes do not use.
HELD_OUT = [
    "患者[[NAME:赵丽华]]于[[DATE:2023-11-02]]在我院行冠脉造影，术后恢复可。",
    "联系人：[[NAME:孙建国]]（丈夫） [[PHONE:0571-8823 4567]]",
    "住院号 [[MRN:ZY2023110201]]，门诊号：[[MRN:MZ00451287]]",
    "Seen by Dr. [[NAME:Liu Yang]] on [[DATE:12 January 2024]]; e-mail "
    "[[EMAIL:liu.yang@hospital.example.cn]].",
    f"身份证：[[ID_NUMBER:{WRONG_CHECK}]]（登记时录入）",
    f"证件号码 [[ID_NUMBER:{VALID_ID}]]",
    "住址：[[ADDRESS:上海市浦东新区张杨路1500号3号楼1202室]]，邮编200122。",
    "Patient [[NAME:Chen Jing]], tel [[PHONE:+86 186 0123 4567]], admitted [[DATE:March 3, 2022]].",
    "[[DATE:2021年12月30日]]复诊，[[NAME:王建军]]医生建议继续服药。",
    "陪同家属：[[NAME:黄敏]]，电话[[PHONE:(010)82345678]]。",
]

NEGATIVES = [
    "主诉：反复胸闷3年。既往史：高血压病史10年，血压最高180/110mmHg。",
    "检验：空腹血糖 13.8 mmol/L，糖化血红蛋白 9.1%，肌酐 86 μmol/L，ICD-10 E11.9。",
    "二甲双胍 0.5g 每日三次，阿托伐他汀 20mg 每晚一次，共 28 天。",
    f"订单号 {WRONG_CHECK} 已作废。",  # an 18-digit number that is no ID: bad check, no label
    "样本条码 2024031513812345678 已接收。",  # a mobile-like run inside a longer number
    "BP 142/88 mmHg, HR 76/min, SpO2 98 %, LDL 3.4 mmol/L, eGFR 62.",
    "Type 2 diabetes mellitus without complications (E11.9), follow up in 3 months.",
]


@pytest.mark.parametrize("marked", HELD_OUT)
def test_held_out_phi_is_found_with_its_type(marked: str) -> None:
    text, pieces = labelled(marked)
    spans = find_phi(text)
    for entity, piece in pieces:
        start = text.index(piece)
        covering = [s for s in spans if s.start <= start and start + len(piece) <= s.end]
        assert covering, f"{entity} {piece!r} not found in {text!r}: {spans}"
        assert covering[0].entity == entity, (piece, covering)


@pytest.mark.parametrize("text", NEGATIVES)
def test_clinical_text_without_phi_is_left_alone(text: str) -> None:
    assert find_phi(text) == []
    assert scrub_text(text, shift_days=30)[0] == text


def test_dates_move_by_the_shift_and_keep_their_format() -> None:
    text = "入院日期：2024年2月27日  出院日期：2024-03-02  复诊 2024/3/16, seen 5 March 2024"
    scrubbed, spans = scrub_text(text, shift_days=3)
    assert "2024年3月1日" in scrubbed  # leap year: Feb 27 + 3 days
    assert "2024-03-05" in scrubbed
    assert "2024/3/19" in scrubbed
    assert "8 March 2024" in scrubbed
    assert sum(s.entity == "DATE" for s in spans) == 4


def test_shifting_preserves_intervals_between_dates() -> None:
    first, second = dt.date(2019, 12, 20), dt.date(2020, 1, 9)
    for shift in (-400, -1, 17, 365):
        a = shift_date_text(f"{first.year}年{first.month}月{first.day}日", shift)
        b = shift_date_text(second.isoformat(), shift)
        assert a is not None
        assert b is not None
        year, rest = a.split("年")
        month, day = rest.rstrip("日").split("月")
        moved = dt.date(int(year), int(month), int(day))
        assert dt.date.fromisoformat(b) - moved == second - first


def test_without_a_shift_dates_become_a_tag_in_the_text_language() -> None:
    assert scrub_text("于2024-01-02入院")[0] == "于[日期]入院"
    assert scrub_text("admitted 2024-01-02")[0] == "admitted [DATE]"


def test_known_identifiers_are_removed_without_any_context() -> None:
    text = "欧阳娜娜今日复查，Nana Ouyang agrees; record MR99812 checked."
    assert not any(s.entity == "NAME" and "娜娜" in s.text for s in find_phi(text))
    known = KnownIdentifiers(names=["欧阳娜娜", "Ouyang Nana"], ids=["MR99812"])
    found = {(s.entity, s.text) for s in find_phi(text, known)}
    assert ("NAME", "欧阳娜娜") in found
    assert ("NAME", "Nana Ouyang") in found  # pinyin in the other order
    assert ("MRN", "MR99812") in found


def test_known_surname_with_a_title_is_a_name() -> None:
    known = KnownIdentifiers(names=["欧阳娜娜"])
    assert [s.text for s in find_phi("请欧阳女士明日空腹抽血", known)] == ["欧阳女士"]


def test_scoring_counts_partial_cover_as_missed_and_any_overlap_as_correct() -> None:
    truth = [LabelledSpan("d", "NAME", 0, 3), LabelledSpan("d", "PHONE", 10, 21)]
    detected = {"d": [PhiSpan(0, 2, "NAME", "ab"), PhiSpan(10, 21, "ID_NUMBER", "x"),
                      PhiSpan(30, 35, "DATE", "y")]}  # fmt: skip
    scores = score_phi(truth, detected)
    assert (scores["NAME"].found, scores["NAME"].labelled) == (0, 1)
    assert (scores["PHONE"].found, scores["PHONE"].labelled) == (1, 1)  # removed, mistyped
    assert (scores["ID_NUMBER"].correct, scores["ID_NUMBER"].detected) == (1, 1)
    assert (scores["DATE"].correct, scores["DATE"].detected) == (0, 1)
    assert scores["DATE"].precision == 0.0
