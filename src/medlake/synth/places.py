"""Places synthetic people live in: real districts with their area codes and postcodes.

The hospital is in Beijing, so most of its patients live there; the rest come from the
other cities below. Area codes are the GB/T 2260 codes of the districts (as the first six
digits of a resident ID number), postcodes are real ones of the district's centre. Each
city has a region (0 north, 1 south) the omics writer uses as the person's population.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class District:
    """One district (区): where a person is registered and lives."""

    province: str
    city: str
    district: str
    area_code: str
    postcode: str
    region: int  # 0 north, 1 south
    streets: tuple[str, ...]


DISTRICTS: tuple[District, ...] = (
    District("北京市", "北京市", "东城区", "110101", "100010", 0,
             ("东长安街", "王府井大街", "东四北大街", "和平里东街")),
    District("北京市", "北京市", "西城区", "110102", "100032", 0,
             ("西单北大街", "金融大街", "德胜门外大街", "白纸坊东街")),
    District("北京市", "北京市", "朝阳区", "110105", "100020", 0,
             ("建国路", "朝阳北路", "望京街", "安立路", "劲松路")),
    District("北京市", "北京市", "丰台区", "110106", "100071", 0,
             ("丰台北路", "南苑路", "马家堡东路", "科学城路")),
    District("北京市", "北京市", "海淀区", "110108", "100080", 0,
             ("中关村大街", "学院路", "西三环北路", "上地十街")),
    District("天津市", "天津市", "和平区", "120101", "300041", 0,
             ("南京路", "滨江道", "成都道")),
    District("河北省", "石家庄市", "长安区", "130102", "050011", 0,
             ("中山东路", "建设北大街", "胜利北街")),
    District("山东省", "济南市", "历下区", "370102", "250011", 0,
             ("泉城路", "经十路", "解放路")),
    District("辽宁省", "沈阳市", "和平区", "210102", "110001", 0,
             ("中华路", "太原街", "南京北街")),
    District("上海市", "上海市", "黄浦区", "310101", "200001", 1,
             ("南京东路", "淮海中路", "西藏南路")),
    District("上海市", "上海市", "徐汇区", "310104", "200030", 1,
             ("漕溪北路", "肇嘉浜路", "天钥桥路")),
    District("江苏省", "南京市", "玄武区", "320102", "210018", 1,
             ("中山路", "北京东路", "珠江路")),
    District("浙江省", "杭州市", "西湖区", "330106", "310013", 1,
             ("文三路", "天目山路", "曙光路")),
    District("广东省", "广州市", "天河区", "440106", "510620", 1,
             ("天河路", "体育西路", "中山大道西")),
    District("四川省", "成都市", "武侯区", "510107", "610041", 1,
             ("人民南路", "武侯祠大街", "科华北路")),
)  # fmt: skip

#: Share of patients living in each district (same order as DISTRICTS): Beijing's five
#: districts take 80 %, the nearby north 8 %, the south 12 %.
DISTRICT_WEIGHTS: tuple[float, ...] = (
    0.12, 0.14, 0.22, 0.14, 0.18, 0.025, 0.02, 0.02, 0.015,
    0.025, 0.02, 0.02, 0.02, 0.02, 0.015,
)  # fmt: skip

#: Estates (小区) and building-unit-room patterns make an address look lived in.
ESTATES: tuple[str, ...] = (
    "阳光小区", "幸福家园", "锦绣花园", "和谐家园", "翠苑小区", "金色家园", "绿城花园",
    "富力城", "万科城市花园", "华润橡树湾", "东方明珠苑", "世纪新城", "碧桂园", "龙湖花园",
)  # fmt: skip

#: Mobile number prefixes (1[3-9]x) of the three carriers.
MOBILE_PREFIXES: tuple[str, ...] = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
    "153", "155", "156", "157", "158", "159", "166", "170", "176", "177", "178", "180",
    "181", "182", "183", "185", "186", "187", "188", "189", "191", "198", "199",
)  # fmt: skip
