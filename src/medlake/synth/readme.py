"""The ``README.txt`` written at the root of every synthetic hospital."""

from __future__ import annotations

README_TEXT = """\
Synthetic hospital written by medlake.synth (all persons, records and codes are invented;
nothing here describes a real patient). See truth/manifest.json for the seed and counts.

his/  HIS (医院信息系统) CSV exports, CRLF line ends
  patients.csv       UTF-8. BRID 病人ID (H + 8 digits), XM 姓名 (hanzi), XB 性别 (男/女),
                     CSRQ 出生日期 (YYYY-MM-DD), SFZH 身份证号, LXDH 联系电话, JTDZ 家庭地址,
                     YZBM 邮政编码, JDRQ 建档日期, SWRQ 死亡日期
  visits.csv         UTF-8. JZH 就诊号 (MZ/ZY/JZ + patient number + 就诊次数), BRID,
                     JZLX 就诊类型 (门诊/住院/急诊), KSMC 科室名称,
                     JZRQ 就诊日期 (YYYY-MM-DD HH:MM:SS), CYRQ 出院日期
  diagnoses.csv      UTF-8. JZH, BRID, ZDXH 诊断序号, ZDLB 诊断类别 (主要诊断/其他诊断),
                     ZDDM ICD-10 code, ZDMC 诊断名称, ZDRQ 诊断日期
  prescriptions.csv  GB18030 with Chinese column headers (the pharmacy system's export):
                     处方号, 就诊号, 病人ID, 开方时间 (YYYY/MM/DD HH:MM), ATC编码, 药品名称, 规格,
                     单次剂量, 剂量单位, 频次 (qd/bid/tid/qn/qw/prn), 给药途径, 用药天数
  medlake-mapping.toml  medlake's mapping file for these exports, the worked example of
                     docs/mapping.md: medlake ingest his/ --mapping his/medlake-mapping.toml

lis/  LIS (实验室信息系统) HL7 v2.5, UTF-8, one file per day: lis/YYYY/YYYYMMDD.hl7 holds
      messages with bare CR segment separators, lis/YYYY/YYYYMMDD.mllp holds MLLP-framed
      messages (0x0B ... 0x1C 0x0D). ADT^A01 registers a patient, ADT^A08 updates address or
      phone, ORU^R01 carries one order (OBR, local panel code, system 99LIS) and its results
      (OBX: LOINC code, value, UCUM unit, reference range, H/L/N/A flag). PID-3 holds the LIS
      patient number (and the resident ID as NNCHN when known); PID-5 is mostly pinyin.
      PV1-19 carries the HIS visit number the order came from.

emr/  EMR (电子病历) FHIR R4 bulk export: Patient, Encounter, Condition (problem list),
      MedicationRequest, Observation (laboratory and vital signs, blood pressure as a panel
      with components), Procedure, Specimen as NDJSON, and the bulk-data manifest.json
      (file urls relative to this folder).

omics/  biobank genotypes (PLINK .bed/.bim/.fam), RNA-seq counts and the sample manifest.

truth/  never to be ingested: persons.csv (true identities), source_records.csv (source
        patient id -> person_key, duplicates, identity noise per record), conditions.csv,
        defects.csv (every planted defect: file, record id, line — CSV lines count the
        header as line 1, LIS lines are 1-based message numbers within the day file —,
        kind, field, detail), omics truth, manifest.json (seed, rates, counts per file).
"""
