"""Laboratory tests, LIS order panels and vital signs of the synthetic hospital.

LOINC codes and UCUM units as listed in ``docs/synthetic-hospital-codes.md``; reference
ranges are the adult ranges Chinese hospital laboratories commonly print (WS/T 404).
Panels are the LIS's own order items (检验项目) with local codes, as LIS systems have.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabTest:
    """One analyte: key used inside the generator, LOINC code, unit, reference range."""

    key: str
    loinc: str
    name_zh: str
    unit: str  # UCUM; "" for qualitative tests
    low: float | None
    high: float | None
    decimals: int
    name_en: str


_LAB_ROWS = (
    (
        "HBA1C",
        "4548-4",
        "糖化血红蛋白",
        "%",
        4.0,
        6.0,
        1,
        "Hemoglobin A1c/Hemoglobin.total in Blood",
    ),
    (
        "GLU",
        "14749-6",
        "葡萄糖",
        "mmol/L",
        3.9,
        6.1,
        2,
        "Glucose [Moles/volume] in Serum or Plasma",
    ),
    (
        "TC",
        "14647-2",
        "总胆固醇",
        "mmol/L",
        2.8,
        5.2,
        2,
        "Cholesterol [Moles/volume] in Serum or Plasma",
    ),
    (
        "LDL",
        "22748-8",
        "低密度脂蛋白胆固醇",
        "mmol/L",
        0.0,
        3.4,
        2,
        "Cholesterol in LDL [Moles/volume] in Serum or Plasma",
    ),
    (
        "HDL",
        "14646-4",
        "高密度脂蛋白胆固醇",
        "mmol/L",
        1.0,
        1.9,
        2,
        "Cholesterol in HDL [Moles/volume] in Serum or Plasma",
    ),
    (
        "TG",
        "14927-8",
        "甘油三酯",
        "mmol/L",
        0.45,
        1.7,
        2,
        "Triglyceride [Moles/volume] in Serum or Plasma",
    ),
    (
        "CREA",
        "14682-9",
        "肌酐",
        "umol/L",
        44.0,
        133.0,
        0,
        "Creatinine [Moles/volume] in Serum or Plasma",
    ),
    (
        "EGFR",
        "62238-1",
        "估算肾小球滤过率",
        "mL/min/{1.73_m2}",
        90.0,
        None,
        0,
        "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum,"
         " Plasma or Blood by Creatinine-based formula (CKD-EPI)",
    ),
    ("UA", "14933-6", "尿酸", "umol/L", 155.0, 428.0, 0, "Urate [Moles/volume] in Serum or Plasma"),
    (
        "ALT",
        "1742-6",
        "丙氨酸氨基转移酶",
        "U/L",
        7.0,
        40.0,
        0,
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    (
        "AST",
        "1920-8",
        "天门冬氨酸氨基转移酶",
        "U/L",
        13.0,
        35.0,
        0,
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    ("HB", "718-7", "血红蛋白", "g/L", 115.0, 175.0, 0, "Hemoglobin [Mass/volume] in Blood"),
    (
        "WBC",
        "6690-2",
        "白细胞计数",
        "10*9/L",
        3.5,
        9.5,
        2,
        "Leukocytes [#/volume] in Blood by Automated count",
    ),
    (
        "PLT",
        "777-3",
        "血小板计数",
        "10*9/L",
        125.0,
        350.0,
        0,
        "Platelets [#/volume] in Blood by Automated count",
    ),
    ("K", "2823-3", "钾", "mmol/L", 3.5, 5.3, 2, "Potassium [Moles/volume] in Serum or Plasma"),
    ("NA", "2951-2", "钠", "mmol/L", 137.0, 147.0, 1, "Sodium [Moles/volume] in Serum or Plasma"),
    (
        "TSH",
        "3016-3",
        "促甲状腺激素",
        "m[IU]/L",
        0.27,
        4.2,
        2,
        "Thyrotropin [Units/volume] in Serum or Plasma",
    ),
    (
        "CRP",
        "1988-5",
        "C反应蛋白",
        "mg/L",
        0.0,
        10.0,
        1,
        "C reactive protein [Mass/volume] in Serum or Plasma",
    ),
    (
        "HBSAG",
        "5195-3",
        "乙型肝炎病毒表面抗原",
        "",
        None,
        None,
        0,
        "Hepatitis B virus surface Ag [Presence] in Serum",
    ),
    (
        "COV2",
        "94500-6",
        "新型冠状病毒核酸",
        "",
        None,
        None,
        0,
        "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory system specimen"
        " by NAA with probe detection",
    ),
)


LAB_TESTS: dict[str, LabTest] = {row[0]: LabTest(*row) for row in _LAB_ROWS}

#: LOINC answer codes of the qualitative tests: (abnormal answer, normal answer).
QUALITATIVE_ANSWERS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    # key: ((code, English, 中文) when present, (code, English, 中文) when absent)
    "HBSAG": (("LA6576-8", "Positive", "阳性"), ("LA6577-6", "Negative", "阴性")),
    "COV2": (("LA11882-0", "Detected", "阳性"), ("LA11883-8", "Not detected", "阴性")),
}


@dataclass(frozen=True)
class LabPanel:
    """A LIS order item (检验项目): a local code, its tests and the specimen it needs."""

    local_code: str
    name_zh: str
    tests: tuple[str, ...]
    specimen_hl7: str  # HL7 table 0487
    specimen_zh: str
    specimen_en: str


LAB_PANELS: dict[str, LabPanel] = {
    p.local_code: p
    for p in (
        LabPanel("XCG", "血常规", ("HB", "WBC", "PLT"), "BLD", "全血", "whole blood"),
        LabPanel("GGN", "肝功能", ("ALT", "AST"), "SER", "血清", "serum"),
        LabPanel("SGN", "肾功能", ("CREA", "EGFR", "UA"), "SER", "血清", "serum"),
        LabPanel("DJZ", "电解质", ("K", "NA"), "SER", "血清", "serum"),
        LabPanel("XZ4", "血脂四项", ("TC", "TG", "HDL", "LDL"), "SER", "血清", "serum"),
        LabPanel("KFXT", "空腹血糖", ("GLU",), "PLAS", "血浆", "plasma"),
        LabPanel("THXHDB", "糖化血红蛋白", ("HBA1C",), "BLD", "全血", "whole blood"),
        LabPanel("JG", "甲状腺功能", ("TSH",), "SER", "血清", "serum"),
        LabPanel("CRP", "C反应蛋白", ("CRP",), "SER", "血清", "serum"),
        LabPanel("YGBMKY", "乙肝表面抗原", ("HBSAG",), "SER", "血清", "serum"),
        LabPanel("XGHS", "新型冠状病毒核酸检测", ("COV2",), "THRT", "咽拭子", "respiratory swab"),
    )
}

#: Panels ordered when a diagnosis is the reason for the visit.
PANELS_FOR_DIAGNOSIS: dict[str, tuple[str, ...]] = {
    "E11": ("THXHDB", "KFXT", "SGN"),
    "E10.9": ("THXHDB", "KFXT"),
    "E78": ("XZ4", "GGN"),
    "I10": ("SGN", "DJZ"),
    "I25.10": ("XZ4",),
    "I21.9": ("XCG", "XZ4", "SGN", "DJZ"),
    "I48.91": ("DJZ",),
    "I50.9": ("SGN", "DJZ"),
    "I63.9": ("XZ4", "KFXT"),
    "N18.9": ("SGN", "DJZ", "XCG"),
    "B18.1": ("YGBMKY", "GGN"),
    "K74.60": ("GGN", "XCG"),
    "C22.0": ("GGN", "YGBMKY"),
    "J18.9": ("XCG", "CRP"),
    "U07.1": ("XGHS", "XCG", "CRP"),
    "M10.9": ("SGN",),
    "D64.9": ("XCG",),
    "E03.9": ("JG",),
}

#: What a health check (体检) orders.
CHECKUP_PANELS: tuple[str, ...] = ("XCG", "GGN", "SGN", "XZ4", "KFXT")

# ---------------------------------------------------------------------------------------
# Vital signs (EMR only): LOINC code, name, UCUM unit, decimals.

VITALS: dict[str, tuple[str, str, str, int]] = {
    "SBP": ("8480-6", "Systolic blood pressure", "mm[Hg]", 0),
    "DBP": ("8462-4", "Diastolic blood pressure", "mm[Hg]", 0),
    "BP": ("85354-9", "Blood pressure panel with all children optional", "", 0),
    "WEIGHT": ("29463-7", "Body weight", "kg", 1),
    "HEIGHT": ("8302-2", "Body height", "cm", 1),
    "BMI": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 1),
    "HR": ("8867-4", "Heart rate", "/min", 0),
}
