"""Diagnoses, drugs, procedures and departments the synthetic hospital draws from.

Every standard code here is listed in ``docs/synthetic-hospital-codes.md`` (the demo
vocabulary is built from the same list, and a test checks that every code the exports
carry is in it). The only codes that are not are the ``UNKNOWN_*`` ones, emitted solely
as planted "unknown code" defects: they look like what a real hospital sends that a
vocabulary does not know (Chinese national clinical-version ICD extensions, local drug
codes, LOINC-looking codes with a wrong check digit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    """An ICD-10-CM diagnosis with the department that usually treats it."""

    code: str
    department: str
    name_zh: str
    name_en: str


_DIAGNOSIS_ROWS = (
    (
        "E11.9",
        "内分泌科",
        "2型糖尿病不伴有并发症",
        "Type 2 diabetes mellitus without complications",
    ),
    ("E11.65", "内分泌科", "2型糖尿病伴高血糖", "Type 2 diabetes mellitus with hyperglycemia"),
    (
        "E11.22",
        "内分泌科",
        "2型糖尿病伴糖尿病性慢性肾病",
        "Type 2 diabetes mellitus with diabetic chronic kidney disease",
    ),
    (
        "E10.9",
        "内分泌科",
        "1型糖尿病不伴有并发症",
        "Type 1 diabetes mellitus without complications",
    ),
    ("E78.5", "心血管内科", "高脂血症", "Hyperlipidemia, unspecified"),
    ("E78.00", "心血管内科", "单纯性高胆固醇血症", "Pure hypercholesterolemia, unspecified"),
    ("E66.9", "内分泌科", "肥胖症", "Obesity, unspecified"),
    ("E03.9", "内分泌科", "甲状腺功能减退症", "Hypothyroidism, unspecified"),
    ("I10", "心血管内科", "原发性高血压", "Essential (primary) hypertension"),
    (
        "I25.10",
        "心血管内科",
        "冠状动脉粥样硬化性心脏病",
        "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    ),
    ("I21.9", "心血管内科", "急性心肌梗死", "Acute myocardial infarction, unspecified"),
    ("I48.91", "心血管内科", "心房颤动", "Unspecified atrial fibrillation"),
    ("I50.9", "心血管内科", "心力衰竭", "Heart failure, unspecified"),
    ("I63.9", "神经内科", "脑梗死", "Cerebral infarction, unspecified"),
    ("J45.909", "呼吸内科", "哮喘", "Unspecified asthma, uncomplicated"),
    ("J44.9", "呼吸内科", "慢性阻塞性肺疾病", "Chronic obstructive pulmonary disease, unspecified"),
    ("J18.9", "呼吸内科", "肺炎", "Pneumonia, unspecified organism"),
    ("N18.9", "肾内科", "慢性肾脏病", "Chronic kidney disease, unspecified"),
    ("K21.9", "消化内科", "胃食管反流病", "Gastro-esophageal reflux disease without esophagitis"),
    ("B18.1", "感染科", "慢性乙型病毒性肝炎", "Chronic viral hepatitis B without delta-agent"),
    ("K74.60", "消化内科", "肝硬化", "Unspecified cirrhosis of liver"),
    (
        "C34.90",
        "肿瘤科",
        "肺恶性肿瘤",
        "Malignant neoplasm of unspecified part of unspecified bronchus or lung",
    ),
    ("C18.9", "肿瘤科", "结肠恶性肿瘤", "Malignant neoplasm of colon, unspecified"),
    ("C16.9", "肿瘤科", "胃恶性肿瘤", "Malignant neoplasm of stomach, unspecified"),
    ("C22.0", "肿瘤科", "肝细胞癌", "Liver cell carcinoma"),
    ("F32.9", "精神心理科", "抑郁症", "Major depressive disorder, single episode, unspecified"),
    ("M81.0", "骨科", "骨质疏松", "Age-related osteoporosis without current pathological fracture"),
    ("M10.9", "风湿免疫科", "痛风", "Gout, unspecified"),
    ("D64.9", "血液科", "贫血", "Anemia, unspecified"),
    ("U07.1", "感染科", "新型冠状病毒感染", "COVID-19"),
)

DIAGNOSES: dict[str, Diagnosis] = {row[0]: Diagnosis(*row) for row in _DIAGNOSIS_ROWS}


@dataclass(frozen=True)
class Drug:
    """An ATC level-5 drug with the usual adult order as a Chinese HIS prints it."""

    atc: str
    name_zh: str
    name_en: str
    strength: str  # 规格, as printed on the HIS order
    dose: float
    dose_unit: str  # UCUM
    frequency: str  # HIS abbreviation: qd bid tid qn qw prn
    route: str  # 给药途径


_DRUG_ROWS = (
    ("A10BA02", "二甲双胍", "metformin", "0.5g*20片", 0.5, "g", "tid", "口服"),
    ("A10BB12", "格列美脲", "glimepiride", "2mg*15片", 2, "mg", "qd", "口服"),
    ("A10AE04", "甘精胰岛素", "insulin glargine", "300U/3ml", 16, "[iU]", "qn", "皮下注射"),
    ("A10BH01", "西格列汀", "sitagliptin", "100mg*14片", 100, "mg", "qd", "口服"),
    ("C10AA05", "阿托伐他汀", "atorvastatin", "20mg*7片", 20, "mg", "qn", "口服"),
    ("C10AA07", "瑞舒伐他汀", "rosuvastatin", "10mg*7片", 10, "mg", "qn", "口服"),
    ("C09AA02", "依那普利", "enalapril", "10mg*16片", 10, "mg", "qd", "口服"),
    ("C09CA01", "氯沙坦", "losartan", "50mg*7片", 50, "mg", "qd", "口服"),
    ("C08CA01", "氨氯地平", "amlodipine", "5mg*7片", 5, "mg", "qd", "口服"),
    ("C07AB02", "美托洛尔", "metoprolol", "47.5mg*7片", 47.5, "mg", "qd", "口服"),
    ("C03AA03", "氢氯噻嗪", "hydrochlorothiazide", "25mg*100片", 25, "mg", "qd", "口服"),
    ("B01AC06", "阿司匹林", "acetylsalicylic acid", "100mg*30片", 100, "mg", "qd", "口服"),
    ("B01AC04", "氯吡格雷", "clopidogrel", "75mg*7片", 75, "mg", "qd", "口服"),
    ("B01AA03", "华法林", "warfarin", "3mg*80片", 3, "mg", "qd", "口服"),
    ("B01AF01", "利伐沙班", "rivaroxaban", "20mg*7片", 20, "mg", "qd", "口服"),
    ("R03AC02", "沙丁胺醇", "salbutamol", "100ug*200揿", 200, "ug", "prn", "吸入"),
    ("R03BA02", "布地奈德", "budesonide", "200ug*100揿", 200, "ug", "bid", "吸入"),
    ("J01CA04", "阿莫西林", "amoxicillin", "0.5g*24粒", 0.5, "g", "tid", "口服"),
    ("J01DD04", "头孢曲松", "ceftriaxone", "1g/支", 2, "g", "qd", "静脉滴注"),
    ("A02BC01", "奥美拉唑", "omeprazole", "20mg*14粒", 20, "mg", "qd", "口服"),
    ("H03AA01", "左甲状腺素钠", "levothyroxine sodium", "50ug*100片", 50, "ug", "qd", "口服"),
    ("M04AA01", "别嘌醇", "allopurinol", "0.1g*100片", 0.1, "g", "bid", "口服"),
    ("N06AB06", "舍曲林", "sertraline", "50mg*14片", 50, "mg", "qd", "口服"),
    ("J05AF07", "替诺福韦", "tenofovir disoproxil", "300mg*30片", 300, "mg", "qd", "口服"),
    ("L01BC06", "卡培他滨", "capecitabine", "0.5g*12片", 1.5, "g", "bid", "口服"),
    ("M05BA04", "阿仑膦酸", "alendronic acid", "70mg*4片", 70, "mg", "qw", "口服"),
    ("B03AA07", "硫酸亚铁", "ferrous sulfate", "0.3g*100片", 0.3, "g", "tid", "口服"),
    ("C01DA02", "硝酸甘油", "glyceryl trinitrate", "0.5mg*100片", 0.5, "mg", "prn", "舌下含服"),
)

DRUGS: dict[str, Drug] = {row[0]: Drug(*row) for row in _DRUG_ROWS}

#: Times per day (or per week for ``qw``) of each HIS frequency, for FHIR timing.
FREQUENCY_TIMING: dict[str, tuple[int, int, str, str]] = {
    # code: (frequency, period, periodUnit, Chinese text)
    "qd": (1, 1, "d", "每日一次"),
    "bid": (2, 1, "d", "每日两次"),
    "tid": (3, 1, "d", "每日三次"),
    "qn": (1, 1, "d", "每晚一次"),
    "qw": (1, 1, "wk", "每周一次"),
    "prn": (1, 1, "d", "必要时"),
}

#: Long-term regimens: for each chronic diagnosis, alternative drug lists and weights.
REGIMENS: dict[str, tuple[tuple[tuple[str, ...], float], ...]] = {
    "E11": (
        (("A10BA02",), 0.5),
        (("A10BA02", "A10BB12"), 0.2),
        (("A10BA02", "A10BH01"), 0.15),
        (("A10AE04", "A10BA02"), 0.1),
        ((), 0.05),
    ),
    "E10.9": ((("A10AE04",), 1.0),),
    "I10": (
        (("C08CA01",), 0.3),
        (("C09CA01",), 0.2),
        (("C09AA02",), 0.1),
        (("C08CA01", "C09CA01"), 0.2),
        (("C07AB02", "C03AA03"), 0.1),
        ((), 0.1),
    ),
    "E78": ((("C10AA05",), 0.55), (("C10AA07",), 0.35), ((), 0.1)),
    "I25.10": (
        (("B01AC06", "C10AA05", "C07AB02"), 0.6),
        (("B01AC06", "C10AA07"), 0.3),
        (("B01AC06", "C01DA02"), 0.1),
    ),
    "I21.9": ((("B01AC06", "B01AC04", "C10AA05", "C07AB02"), 1.0),),
    "I48.91": ((("B01AF01", "C07AB02"), 0.6), (("B01AA03", "C07AB02"), 0.4)),
    "I50.9": ((("C07AB02", "C09AA02", "C03AA03"), 0.7), (("C07AB02", "C09CA01"), 0.3)),
    "I63.9": ((("B01AC06", "C10AA05"), 0.7), (("B01AC04", "C10AA07"), 0.3)),
    "J45.909": ((("R03AC02", "R03BA02"), 0.7), (("R03AC02",), 0.3)),
    "J44.9": ((("R03BA02", "R03AC02"), 1.0),),
    "N18.9": ((("C09CA01",), 0.6), ((), 0.4)),
    "K21.9": ((("A02BC01",), 1.0),),
    "B18.1": ((("J05AF07",), 0.8), ((), 0.2)),
    "K74.60": ((("A02BC01",), 0.5), ((), 0.5)),
    "C18.9": ((("L01BC06",), 0.8), ((), 0.2)),
    "C16.9": ((("L01BC06",), 0.6), ((), 0.4)),
    "F32.9": ((("N06AB06",), 0.9), ((), 0.1)),
    "M81.0": ((("M05BA04",), 0.8), ((), 0.2)),
    "M10.9": ((("M04AA01",), 0.85), ((), 0.15)),
    "D64.9": ((("B03AA07",), 0.9), ((), 0.1)),
    "E03.9": ((("H03AA01",), 1.0),),
}

#: Short-course drugs for acute episodes (ordered in the admitting visit only).
ACUTE_DRUGS: dict[str, tuple[str, ...]] = {
    "J18.9": ("J01DD04", "J01CA04"),
    "U07.1": (),
    "I21.9": ("B01AC06", "B01AC04", "C01DA02"),
    "I63.9": ("B01AC06", "B01AC04"),
}

STATINS = frozenset({"C10AA05", "C10AA07"})

# ---------------------------------------------------------------------------------------
# Procedures (ICD-9-CM volume 3) and what prompts them.

PROCEDURES: dict[str, tuple[str, str]] = {
    "36.07": ("Insertion of drug-eluting coronary artery stent(s)", "冠状动脉药物洗脱支架置入"),
    "88.56": ("Coronary arteriography using two catheters", "冠状动脉造影"),
    "45.23": ("Colonoscopy", "结肠镜检查"),
    "44.13": ("Other gastroscopy", "胃镜检查"),
    "87.44": ("Routine chest x-ray, so described", "胸部X线检查"),
    "88.01": ("Computerized axial tomography of abdomen", "腹部CT"),
    "89.52": ("Electrocardiogram", "心电图"),
    "39.95": ("Hemodialysis", "血液透析"),
    "99.04": ("Transfusion of packed cells", "输注浓缩红细胞"),
}

#: Procedures done in a visit for a diagnosis: (code, probability).
PROCEDURES_FOR_DIAGNOSIS: dict[str, tuple[tuple[str, float], ...]] = {
    "I21.9": (("88.56", 0.9), ("36.07", 0.7), ("89.52", 1.0)),
    "I25.10": (("88.56", 0.15), ("89.52", 0.4)),
    "I48.91": (("89.52", 0.6),),
    "I50.9": (("89.52", 0.4), ("87.44", 0.3)),
    "J18.9": (("87.44", 0.9),),
    "U07.1": (("87.44", 0.5),),
    "C18.9": (("45.23", 0.6), ("88.01", 0.3)),
    "C16.9": (("44.13", 0.6), ("88.01", 0.3)),
    "C22.0": (("88.01", 0.6),),
    "K74.60": (("88.01", 0.3), ("44.13", 0.2)),
    "N18.9": (("39.95", 0.08),),
    "D64.9": (("99.04", 0.15),),
    "K21.9": (("44.13", 0.2),),
}

# ---------------------------------------------------------------------------------------
# Departments and visit types.

CHECKUP_DEPARTMENT = "体检中心"
GENERAL_DEPARTMENT = "全科医学科"
EMERGENCY_DEPARTMENT = "急诊科"

#: Visit kinds: code used internally -> (HIS label, HIS visit-number prefix, FHIR class).
VISIT_KINDS: dict[str, tuple[str, str, str, str]] = {
    # kind: (HIS 就诊类型, visit number prefix, v3 ActCode, ActCode display)
    "O": ("门诊", "MZ", "AMB", "ambulatory"),
    "I": ("住院", "ZY", "IMP", "inpatient encounter"),
    "E": ("急诊", "JZ", "EMER", "emergency"),
}

# ---------------------------------------------------------------------------------------
# Planted unknown codes (defects): realistic codes our vocabulary does not have.

UNKNOWN_ICD10: tuple[tuple[str, str], ...] = (
    ("I10.x00x002", "高血压病"),  # Chinese national clinical version 2.0 extension
    ("E11.900x001", "2型糖尿病"),
    ("J18.900x002", "社区获得性肺炎"),
    ("E78.500x001", "混合型高脂血症"),
    ("K29.700x001", "慢性胃炎"),
)
UNKNOWN_ATC: tuple[tuple[str, str], ...] = (
    ("YP0031427", "复方丹参滴丸"),  # local HIS drug code, no ATC
    ("YP0088215", "银杏叶片"),
)
#: Lab codes that look like LOINC but carry a wrong check digit (so exist nowhere).
UNKNOWN_LOINC: tuple[tuple[str, str], ...] = (
    ("4548-0", "糖化血红蛋白(HPLC)"),
    ("14749-2", "葡萄糖(急)"),
    ("2345-1", "葡萄糖"),
)


def diagnosis_family(code: str) -> str:
    """The key :data:`REGIMENS` and :data:`PANELS_FOR_DIAGNOSIS` use for a code."""
    if code.startswith("E11"):
        return "E11"
    if code.startswith("E78"):
        return "E78"
    return code
