"""Chinese names for synthetic people: surnames by frequency, given-name characters, pinyin.

Surname shares follow the 2020 household-registration statistics (王 李 张 刘 陈 together
about 30 %). Given names are one character (about 15 %) or two. Pinyin is written as
Chinese registration desks write it for systems without hanzi: no tones, surname first,
the two given syllables joined (``Zhang Xiaoming``), ``ü`` as ``v`` (``Lv``). We keep our
own table rather than depend on a pinyin library because we only ever use these
characters, and the homophone table below needs them anyway.
"""

from __future__ import annotations

#: (surname, pinyin, share in percent of the population)
SURNAMES: tuple[tuple[str, str, float], ...] = (
    ("王", "Wang", 7.25), ("李", "Li", 7.19), ("张", "Zhang", 6.83), ("刘", "Liu", 5.38),
    ("陈", "Chen", 4.53), ("杨", "Yang", 3.08), ("黄", "Huang", 2.20), ("赵", "Zhao", 2.00),
    ("吴", "Wu", 1.80), ("周", "Zhou", 1.70), ("徐", "Xu", 1.45), ("孙", "Sun", 1.38),
    ("马", "Ma", 1.29), ("朱", "Zhu", 1.23), ("胡", "Hu", 1.15), ("郭", "Guo", 1.14),
    ("何", "He", 1.06), ("高", "Gao", 1.00), ("林", "Lin", 0.97), ("罗", "Luo", 0.86),
    ("郑", "Zheng", 0.82), ("梁", "Liang", 0.81), ("谢", "Xie", 0.72), ("宋", "Song", 0.63),
    ("唐", "Tang", 0.62), ("许", "Xu", 0.60), ("韩", "Han", 0.58), ("冯", "Feng", 0.56),
    ("邓", "Deng", 0.55), ("曹", "Cao", 0.53), ("彭", "Peng", 0.52), ("曾", "Zeng", 0.50),
    ("肖", "Xiao", 0.48), ("田", "Tian", 0.46), ("董", "Dong", 0.45), ("袁", "Yuan", 0.43),
    ("潘", "Pan", 0.42), ("于", "Yu", 0.41), ("蒋", "Jiang", 0.40), ("蔡", "Cai", 0.39),
    ("余", "Yu", 0.38), ("杜", "Du", 0.37), ("叶", "Ye", 0.36), ("程", "Cheng", 0.35),
    ("苏", "Su", 0.34), ("魏", "Wei", 0.33), ("吕", "Lv", 0.32), ("丁", "Ding", 0.31),
    ("任", "Ren", 0.30), ("沈", "Shen", 0.29), ("欧阳", "Ouyang", 0.05),
)  # fmt: skip

#: Given-name characters: (character, pinyin, lean) with lean "M", "F" or "" (either).
GIVEN_CHARACTERS: tuple[tuple[str, str, str], ...] = (
    ("伟", "wei", "M"), ("强", "qiang", "M"), ("磊", "lei", "M"), ("军", "jun", "M"),
    ("勇", "yong", "M"), ("杰", "jie", "M"), ("涛", "tao", "M"), ("斌", "bin", "M"),
    ("超", "chao", "M"), ("明", "ming", "M"), ("刚", "gang", "M"), ("辉", "hui", "M"),
    ("鹏", "peng", "M"), ("飞", "fei", "M"), ("鑫", "xin", "M"), ("波", "bo", "M"),
    ("浩", "hao", "M"), ("凯", "kai", "M"), ("健", "jian", "M"), ("俊", "jun", "M"),
    ("帆", "fan", "M"), ("旭", "xu", "M"), ("龙", "long", "M"), ("峰", "feng", "M"),
    ("建", "jian", "M"), ("国", "guo", "M"), ("志", "zhi", "M"), ("海", "hai", "M"),
    ("东", "dong", "M"), ("文", "wen", "M"), ("宇", "yu", "M"), ("成", "cheng", "M"),
    ("芳", "fang", "F"), ("娜", "na", "F"), ("敏", "min", "F"), ("静", "jing", "F"),
    ("丽", "li", "F"), ("艳", "yan", "F"), ("娟", "juan", "F"), ("霞", "xia", "F"),
    ("秀", "xiu", "F"), ("玲", "ling", "F"), ("桂", "gui", "F"), ("英", "ying", "F"),
    ("燕", "yan", "F"), ("红", "hong", "F"), ("梅", "mei", "F"), ("琳", "lin", "F"),
    ("婷", "ting", "F"), ("雪", "xue", "F"), ("慧", "hui", "F"), ("颖", "ying", "F"),
    ("洁", "jie", "F"), ("佳", "jia", "F"), ("欣", "xin", "F"), ("怡", "yi", "F"),
    ("萍", "ping", "F"), ("兰", "lan", "F"), ("倩", "qian", "F"), ("晶", "jing", "F"),
    ("晓", "xiao", ""), ("春", "chun", ""), ("玉", "yu", ""), ("金", "jin", ""),
    ("云", "yun", ""), ("子", "zi", ""), ("思", "si", ""), ("雨", "yu", ""),
    ("嘉", "jia", ""), ("新", "xin", ""), ("立", "li", ""), ("永", "yong", ""),
    ("华", "hua", ""), ("平", "ping", ""), ("林", "lin", ""), ("宁", "ning", ""),
)  # fmt: skip

#: Characters a registration clerk types instead (same or near-same sound, or similar
#: shape): the hanzi typo noise. Keys must be in GIVEN_CHARACTERS or SURNAMES.
HOMOPHONES: dict[str, str] = {
    "伟": "玮韦炜", "明": "铭鸣", "静": "晶婧", "丽": "莉俐", "军": "君钧", "杰": "洁捷",
    "华": "花骅", "林": "琳霖", "玲": "铃龄", "红": "宏虹", "艳": "燕彦", "敏": "民闽",
    "娟": "鹃涓", "磊": "垒蕾", "涛": "滔焘", "斌": "彬滨", "鹏": "朋", "峰": "锋丰",
    "婷": "亭庭", "颖": "影莹", "慧": "惠蕙", "佳": "家嘉", "欣": "鑫新", "萍": "平苹",
    "霞": "侠夏", "勇": "永湧", "刚": "钢岗", "辉": "晖徽", "宇": "雨羽", "浩": "皓昊",
    "俊": "骏峻", "帆": "凡", "旭": "煦", "宁": "凝", "龙": "隆", "建": "健剑", "国": "帼",
    "文": "雯", "志": "智致", "海": "凯", "东": "冬", "晓": "小筱", "春": "淳", "玉": "钰",
    "云": "芸", "思": "丝", "雨": "语", "新": "欣", "立": "力丽", "英": "瑛", "梅": "媚",
    "张": "章", "王": "汪", "刘": "柳", "杨": "阳", "徐": "许", "吴": "伍",
    "黄": "簧", "陈": "程", "李": "黎", "周": "舟", "孙": "荪", "胡": "湖", "高": "郜",
}  # fmt: skip

#: Pinyin mistakes made when a name is typed from sound: southern-accent merges
#: (zh→z, sh→s, ch→c, -ng→-n, l↔n, h↔f) and slips.
PINYIN_CONFUSIONS: tuple[tuple[str, str], ...] = (
    ("zh", "z"), ("sh", "s"), ("ch", "c"), ("ng", "n"), ("l", "n"), ("n", "l"),
    ("f", "h"), ("h", "f"), ("x", "s"), ("ui", "ei"), ("iu", "ou"), ("v", "u"),
)  # fmt: skip
