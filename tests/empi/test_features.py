"""Features and comparison levels: hanzi ↔ pinyin, name order, dates, ID typos."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from pypinyin import lazy_pinyin
from splink import DuckDBAPI, Linker

from medlake.empi.features import (
    feature_table,
    fuzzy_pinyin,
    name_parts,
    normal_sex,
    split_hanzi,
    with_derived,
)
from medlake.empi.model import base_settings, comparison_labels
from medlake.resident_id import check_character, has_valid_check_character


def _features(**columns: list) -> pa.Table:
    n = len(next(iter(columns.values())))
    # As Splink sees them: with the derived comparison columns.
    return with_derived(
        feature_table(pa.table({"unique_id": [str(i) for i in range(n)], **columns}))
    )


def test_hanzi_name_has_the_pinyin_key_of_its_spellings() -> None:
    f = _features(
        name_hanzi=["张三丰", None, None, None],
        name_pinyin=[None, "ZHANG SANFENG", "Sanfeng Zhang", "zhang san feng"],
    )
    keys = f.column("name_py").to_pylist()
    assert keys[0] == keys[1] == "zhangsanfeng"  # pinyin in the written order
    assert keys[2] == "sanfengzhang"
    # Either order and either spacing of the given name: the sorted parts agree.
    sorted_keys = f.column("name_sorted").to_pylist()
    assert sorted_keys[0] == sorted_keys[1] == sorted_keys[2]
    assert keys[3] == keys[0]


def test_transliteration_matches_pypinyin_and_knows_surname_readings() -> None:
    assert name_parts("王小明") == ["".join(lazy_pinyin("王")), "".join(lazy_pinyin("小明"))]
    assert split_hanzi("欧阳修") == ("欧阳", "修")
    assert name_parts("欧阳修") == ["ouyang", "xiu"]
    # 曾 reads zeng as a surname (ceng elsewhere); 单 reads shan.
    assert name_parts("曾云")[0] == "zeng"
    assert name_parts("单雄信")[0] == "shan"


def test_sex_phone_birth_date_normalised() -> None:
    assert [normal_sex(v) for v in ("男", "female", "F", "2", "x", None)] == [
        "M", "F", "F", "F", None, None,
    ]  # fmt: skip
    f = _features(
        phone=["+86 138-0013-8000", "13800138000"],
        birth_date=pa.array([dt.date(1980, 3, 7), dt.date(1980, 7, 3)], pa.date32()),
    )
    assert f.column("phone").to_pylist() == ["13800138000", "13800138000"]
    assert f.column("birth_date_swapped").to_pylist() == ["1980-07-03", "1980-03-07"]


def _valid_id(first17: str) -> str:
    return first17 + check_character(first17)


def _score(left: dict, right: dict) -> dict:
    """One pair through Splink with the untrained model: the comparison vector."""
    features = _features(**{k: [left.get(k), right.get(k)] for k in {*left, *right}})
    api = DuckDBAPI()
    linker = Linker(api.register(features), base_settings(), log_level=None)
    rows = features.to_pylist()
    result = linker.inference.score_pair(rows[0], rows[1])
    record = result.as_record_list()[0] if hasattr(result, "as_record_list") else result
    return record


def _label(record: dict, comparison: str) -> str:
    labels = comparison_labels(base_settings())[comparison]
    return labels[record[f"gamma_{comparison}"]]


def test_hanzi_name_meets_its_pinyin_in_the_name_comparison() -> None:
    record = _score({"name_hanzi": "李小龙"}, {"name_pinyin": "LI XIAOLONG"})
    assert _label(record, "name") == "same pinyin"
    record = _score({"name_hanzi": "李小龙"}, {"name_pinyin": "Xiaolong Li"})
    assert _label(record, "name") == "same parts, other order"
    record = _score({"name_hanzi": "李小龙"}, {"name_hanzi": "李小龙"})
    assert _label(record, "name") == "same hanzi"


@pytest.mark.parametrize("position", [3, 10, 16])
def test_one_mistyped_id_digit_is_its_own_strong_level(position: int) -> None:
    good = _valid_id("11010119800307123")
    digit = str((int(good[position]) + 1) % 10)
    typo = good[:position] + digit + good[position + 1 :]
    assert has_valid_check_character(good)
    assert not has_valid_check_character(typo)
    record = _score({"resident_id": good}, {"resident_id": typo})
    assert _label(record, "resident_id") == "one character apart, one fails the check digit (typo)"
    # The check digit catches every single-digit error: two valid numbers differ in
    # at least two characters, so they are different people.
    other = _valid_id(good[:position] + digit + good[position + 1 : 17])
    assert has_valid_check_character(other)
    record = _score({"resident_id": good}, {"resident_id": other})
    assert _label(record, "resident_id") == "different"


def test_day_month_swap_is_recognised() -> None:
    record = _score(
        {"birth_date": pa.scalar(dt.date(1975, 4, 9)).as_py()},
        {"birth_date": pa.scalar(dt.date(1975, 9, 4)).as_py()},
    )
    assert _label(record, "birth_date") == "day and month swapped"


@pytest.mark.parametrize(
    ("spelt", "meant"),
    [
        ("ZANG NING", "张宁"),  # zh → z, and -ng kept: still the same fuzzy key
        ("Zhang Lin", "张宁"),  # n/l and -n/-ng, the southern merges
        ("Lin Zhang", "张宁"),  # and given name first
        ("Hu Hang", "胡芳"),  # f/h
        ("Niu San", "刘珊"),  # l/n and s/sh
    ],
)
def test_accent_merged_pinyin_meets_the_hanzi_at_the_fuzzy_level(spelt: str, meant: str) -> None:
    # The key itself: the fuzzy-pinyin merges of input methods, applied to each part.
    assert fuzzy_pinyin(" ".join(sorted(name_parts(spelt)))) == fuzzy_pinyin(
        " ".join(sorted(name_parts(meant)))
    )
    record = _score({"name_hanzi": meant}, {"name_pinyin": spelt})
    assert _label(record, "name") == "same fuzzy pinyin (z/zh, n/l, -n/-ng …)"


def test_different_names_stay_apart_at_the_fuzzy_level() -> None:
    record = _score({"name_hanzi": "张宁"}, {"name_pinyin": "Wang Ning"})
    assert _label(record, "name") != "same fuzzy pinyin (z/zh, n/l, -n/-ng …)"


def test_a_move_counts_once_against_a_pair() -> None:
    # Address and postcode are one comparison: a new address with its new postcode is
    # one level ("different"), not two independent disagreements.
    record = _score(
        {"address": "北京市海淀区中关村大街1号", "postcode": "100080"},
        {"address": "浙江省杭州市西湖区文三路7号", "postcode": "310013"},
    )
    assert _label(record, "address") == "different"
    record = _score(
        {"address": "北京市海淀区中关村大街1号", "postcode": "100080"},
        {"address": "北京市海淀区学院路9号", "postcode": "100080"},
    )
    assert _label(record, "address") == "other address, same postcode"
    assert "postcode" not in comparison_labels(base_settings())


def test_a_model_is_retrained_when_its_definition_or_the_lake_changed() -> None:
    import copy

    from medlake.empi.model import is_current
    from medlake.empi.run import LinkOptions, needs_training
    from medlake.empi.store import StoredModel

    settings = base_settings()
    assert is_current(settings)
    older = copy.deepcopy(settings)  # a model from before the fuzzy-pinyin blocking rule
    older["blocking_rules_to_generate_predictions"].pop()
    assert not is_current(older)
    stored = StoredModel("m", settings, dt.datetime(2026, 1, 1), records=1000)
    assert not needs_training(stored, 1999, LinkOptions())
    assert needs_training(stored, 2000, LinkOptions())  # the lake doubled
    assert not needs_training(stored, 10**6, LinkOptions(retrain_growth=0))
    assert needs_training(StoredModel("m", older, dt.datetime(2026, 1, 1), 1000), 1000,
                          LinkOptions())  # fmt: skip
    assert needs_training(None, 10, LinkOptions())


def test_nothing_to_train_on_is_said_before_splink_runs() -> None:
    from medlake.empi.model import TrainingError, check_trainable

    apart = _features(
        name_pinyin=["WANG WEI", "LI NA", "ZHAO LEI"],
        birth_date=pa.array([dt.date(1980, 1, 1), dt.date(1980, 1, 1), None], pa.date32()),
        phone=["13800138000", "13900139000", None],
    )
    with pytest.raises(TrainingError, match="no two records share"):
        check_trainable(apart)
    shared = _features(phone=["13800138000", "+86 138 0013 8000"])
    check_trainable(shared)  # one shared phone is enough for an EM session
