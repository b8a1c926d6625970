"""Clinical notes with labelled PHI: discharge summaries (出院小结) and outpatient notes.

The EMR exports each note as a FHIR ``DocumentReference`` (text inline, base64) and
``truth/note_phi.ndjson`` lists every piece of protected health information planted in
it — entity type, character offsets, text — so de-identification can be scored for
recall and precision per entity type. Most notes are Chinese, about a quarter English
(international department, pinyin names). What they carry: the patient's name as the
EMR recorded it (and the surname with a title: 王先生, Mr. Wang), resident ID number,
mobile and landline numbers, the home address, admission/discharge/follow-up dates in
several formats, the MRN and the inpatient number, a family member's and the attending
doctor's names, the doctor's e-mail. Clinical numbers that are *not* PHI (doses,
laboratory values, blood pressure, ICD codes, durations) are there too, so a scrubber
that deletes every number loses precision.

Notes draw from their own random stream, seeded by the encounter's id, so adding them
left every other export of a seed unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from typing import Any

from medlake.synth.care import Visit
from medlake.synth.catalogue import DIAGNOSES, DRUGS
from medlake.synth.dates import fhir_datetime
from medlake.synth.exports import ChunkExports
from medlake.synth.identity import SourcePatient
from medlake.synth.names import GIVEN_CHARACTERS, SURNAMES

NOTE_PHI = "truth/note_phi.ndjson"
DOCUMENT_PATH = "emr/DocumentReference.ndjson"
#: Entity types of the labelled PHI.
ENTITIES = ("NAME", "ID_NUMBER", "PHONE", "ADDRESS", "DATE", "MRN", "EMAIL")
#: Share of outpatient and emergency visits with a note (every inpatient stay has one).
OUTPATIENT_NOTE_RATE = 0.12
ENGLISH_RATE = 0.25
_LOINC = "http://loinc.org"
_DISCHARGE = ("18842-5", "Discharge summary", "出院小结")
_OUTPATIENT = ("11506-3", "Progress note", "门诊病历")
_AREA_CODES = ("010", "022", "021", "0571", "020", "0755", "028", "027", "0311")
_MAIL_HOSTS = ("bjyy.example.cn", "hospital.example.cn")
_RELATIONS = (("配偶", "spouse"), ("儿子", "son"), ("女儿", "daughter"), ("母亲", "mother"))
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


class _Text:
    """A note being written: plain pieces and labelled PHI pieces, with offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[tuple[str, int, int, str]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def phi(self, entity: str, text: str) -> None:
        self.spans.append((entity, self.length, self.length + len(text), text))
        self.add(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _date(ordinal: int) -> dt.date:
    return dt.date.fromordinal(ordinal)


def _zh_date(r: random.Random, day: dt.date) -> str:
    return r.choice((f"{day.year}年{day.month}月{day.day}日", day.isoformat(),
                     f"{day.year}/{day.month}/{day.day}",
                     f"{day.year}.{day.month:02d}.{day.day:02d}"))  # fmt: skip


def _en_date(r: random.Random, day: dt.date) -> str:
    month = _MONTHS[day.month - 1]
    return r.choice((f"{month} {day.day}, {day.year}", f"{day.day} {month} {day.year}",
                     day.isoformat(), f"{day.day:02d}/{day.month:02d}/{day.year}"))  # fmt: skip


def _mobile(r: random.Random, number: str) -> str:
    return r.choice((number, f"{number[:3]}-{number[3:7]}-{number[7:]}",
                     f"{number[:3]} {number[3:7]} {number[7:]}", f"+86 {number}"))  # fmt: skip


def _landline(r: random.Random) -> str:
    area = r.choice(_AREA_CODES)
    digits = 7 - (len(area) == 4)
    local = str(r.randint(2, 8)) + "".join(str(r.randint(0, 9)) for _ in range(digits))
    return r.choice((f"{area}-{local}", f"({area}){local}", f"{area} {local[:4]} {local[4:]}"))


def _hanzi_name(r: random.Random) -> tuple[str, str, str]:
    """(hanzi, pinyin, surname pinyin) of a random other person (doctor, relative)."""
    surname, surname_pinyin, _ = r.choice(SURNAMES[:40])
    chars = r.sample(GIVEN_CHARACTERS, r.choice((1, 2)))
    given = "".join(c for c, _, _ in chars)
    given_pinyin = "".join(p for _, p, _ in chars)
    return surname + given, f"{surname_pinyin} {given_pinyin.capitalize()}", surname_pinyin


Span = tuple[str, int, int, str]  # entity, start, end, text


def note_for(patient: SourcePatient, visit: Visit, encounter_id: str,
             patient_ref: str) -> tuple[dict[str, Any], list[Span]] | None:  # fmt: skip
    """The visit's note as a DocumentReference and its PHI spans, or ``None`` (no note)."""
    seed = hashlib.blake2b(f"note:{encounter_id}".encode(), digest_size=8).digest()
    r = random.Random(int.from_bytes(seed, "big"))
    if visit.after_death or (visit.kind != "I" and r.random() >= OUTPATIENT_NOTE_RATE):
        return None
    english = r.random() < ENGLISH_RATE
    note = (_english if english else _chinese)(r, patient, visit)
    kind = _DISCHARGE if visit.kind == "I" else _OUTPATIENT
    day = visit.discharge_ord or visit.ordinal
    note_id = hashlib.blake2b(f"document:{encounter_id}".encode(), digest_size=16).hexdigest()
    resource = {
        "resourceType": "DocumentReference", "id": note_id, "status": "current",
        "type": {"coding": [{"system": _LOINC, "code": kind[0], "display": kind[1]}],
                 "text": kind[1] if english else kind[2]},
        "subject": {"reference": patient_ref},
        "date": fhir_datetime(day, 600 if visit.kind == "I" else min(visit.minute + 20, 1439)),
        "content": [{"attachment": {
            "contentType": "text/plain; charset=utf-8", "language": "en" if english else "zh",
            "data": base64.b64encode(note.text.encode()).decode("ascii")}}],
        "context": {"encounter": [{"reference": f"Encounter/{encounter_id}"}]},
    }  # fmt: skip
    return resource, note.spans


def write_note(out: ChunkExports, resource: dict[str, Any],
               spans: list[tuple[str, int, int, str]]) -> None:  # fmt: skip
    out.ndjson(DOCUMENT_PATH, resource)
    for entity, start, end, text in spans:
        out.ndjson(NOTE_PHI, {"document_id": resource["id"], "entity": entity,
                              "start": start, "end": end, "text": text})  # fmt: skip


def _chinese(r: random.Random, patient: SourcePatient, visit: Visit) -> _Text:
    t = _Text()
    person = patient.person
    admitted, left = _date(visit.ordinal), _date(visit.discharge_ord or visit.ordinal)
    diagnosis = DIAGNOSES[visit.diagnoses[0]].name_zh if visit.diagnoses else "健康查体"
    doctor, _, doctor_surname = _hanzi_name(r)
    title = "先生" if person.sex == "M" else "女士"
    t.add("出院小结\n" if visit.kind == "I" else "门诊病历\n")
    t.add("姓名：")
    t.phi("NAME", patient.name)
    t.add(f"  性别：{'男' if person.sex == 'M' else '女'}  病案号：")
    t.phi("MRN", patient.patient_id)
    if visit.kind == "I":
        t.add("  住院号：")
        t.phi("MRN", f"ZY{visit.ordinal % 100000:05d}{visit.seq:02d}")
    t.add("\n")
    if patient.resident_id and r.random() < 0.8:
        t.add("身份证号：")
        t.phi("ID_NUMBER", patient.resident_id)
        t.add("\n")
    if patient.phone:
        t.add("联系电话：")
        t.phi("PHONE", _mobile(r, patient.phone))
        t.add("  ")
    if patient.address and r.random() < 0.85:
        t.add("现住址：")
        t.phi("ADDRESS", patient.address.text)
    t.add("\n")
    if visit.kind == "I":
        t.add("入院日期：")
        t.phi("DATE", _zh_date(r, admitted))
        t.add("  出院日期：")
        t.phi("DATE", _zh_date(r, left))
        t.add(f"  住院{(left - admitted).days or 1}天\n")
    else:
        t.add("就诊日期：")
        t.phi("DATE", _zh_date(r, admitted))
        t.add(f"  科室：{visit.department}\n")
    t.add(f"诊断：{diagnosis}（{visit.diagnoses[0] if visit.diagnoses else 'Z00.0'}）\n")
    t.add("病史：患者")
    t.phi("NAME", patient.family + title if patient.script == "hanzi" else patient.name)
    t.add(f"，{r.randint(2, 30)}年前诊断{diagnosis}，近{r.randint(1, 8)}周症状加重。")
    if visit.vitals:
        t.add(f"查体：血压{r.randint(110, 160)}/{r.randint(65, 95)}mmHg，"
              f"心率{r.randint(60, 100)}次/分。")  # fmt: skip
    t.add(f"糖化血红蛋白{r.uniform(5.2, 9.8):.1f}%，"
          f"低密度脂蛋白{r.uniform(1.8, 5.2):.2f}mmol/L。\n")  # fmt: skip
    if visit.drugs:
        drug = DRUGS[visit.drugs[0][0]]
        t.add(f"出院带药：{drug.name_zh} {drug.strength}，每日{r.choice('一二三')}次，"
              f"共{visit.drugs[0][1]}天。\n")  # fmt: skip
    if r.random() < 0.6:
        relative, _, _ = _hanzi_name(r)
        relation, _ = r.choice(_RELATIONS)
        t.add("陪同家属：")
        t.phi("NAME", relative)
        t.add(f"（{relation}），电话")
        t.phi("PHONE", _landline(r) if r.random() < 0.5 else _mobile(r, _random_mobile(r)))
        t.add("。\n")
    t.add("医嘱：")
    t.phi("DATE", _zh_date(r, left + dt.timedelta(days=r.choice((7, 14, 28, 90)))))
    t.add("门诊复诊，如有不适请联系")
    t.phi("NAME", doctor)
    t.add("医生")
    if r.random() < 0.4:
        t.add("（")
        t.phi("EMAIL", f"{doctor_surname.lower()}{r.randint(1, 99)}@{r.choice(_MAIL_HOSTS)}")
        t.add("）")
    t.add("。\n主治医师：")
    t.phi("NAME", doctor)
    t.add("\n")
    return t


def _english(r: random.Random, patient: SourcePatient, visit: Visit) -> _Text:
    t = _Text()
    person = patient.person
    admitted, left = _date(visit.ordinal), _date(visit.discharge_ord or visit.ordinal)
    diagnosis = DIAGNOSES[visit.diagnoses[0]].name_en if visit.diagnoses else "health check"
    _, doctor, doctor_surname = _hanzi_name(r)
    name = person.pinyin if patient.script == "hanzi" else patient.name
    t.add("DISCHARGE SUMMARY\n" if visit.kind == "I" else "OUTPATIENT NOTE\n")
    t.add("Patient: ")
    t.phi("NAME", name)
    t.add(f" ({'male' if person.sex == 'M' else 'female'}), MRN ")
    t.phi("MRN", patient.patient_id)
    if patient.resident_id and r.random() < 0.7:
        t.add(", ID No. ")
        t.phi("ID_NUMBER", patient.resident_id)
    t.add("\n")
    if patient.phone:
        t.add("Tel: ")
        t.phi("PHONE", _mobile(r, patient.phone))
        t.add(". ")
    if patient.address and r.random() < 0.8:
        t.add("Home address: ")
        t.phi("ADDRESS", patient.address.text)
        t.add(".")
    t.add("\n")
    if visit.kind == "I":
        t.add("Admitted on ")
        t.phi("DATE", _en_date(r, admitted))
        t.add(" and discharged on ")
        t.phi("DATE", _en_date(r, left))
        t.add(f" after {(left - admitted).days or 1} days.\n")
    else:
        t.add("Seen on ")
        t.phi("DATE", _en_date(r, admitted))
        t.add(f" in {visit.department}.\n")
    code = visit.diagnoses[0] if visit.diagnoses else "Z00.0"
    t.add(f"Diagnosis: {diagnosis} ({code}).\n")
    t.add("Mr. " if person.sex == "M" else "Ms. ")
    t.phi("NAME", name.split()[0])
    t.add(f" reports {r.randint(1, 8)} weeks of worsening symptoms. HbA1c "
          f"{r.uniform(5.2, 9.8):.1f} %, LDL {r.uniform(1.8, 5.2):.2f} mmol/L, BP "
          f"{r.randint(110, 160)}/{r.randint(65, 95)} mmHg.\n")  # fmt: skip
    if visit.drugs:
        drug = DRUGS[visit.drugs[0][0]]
        t.add(f"Medication: {drug.name_en} {drug.strength} for {visit.drugs[0][1]} days.\n")
    if r.random() < 0.5:
        _, relative, _ = _hanzi_name(r)
        _, relation = r.choice(_RELATIONS)
        t.add(f"Accompanied by {relation} ")
        t.phi("NAME", relative)
        t.add(", reachable at ")
        t.phi("PHONE", _landline(r) if r.random() < 0.5 else _mobile(r, _random_mobile(r)))
        t.add(".\n")
    t.add("Follow-up on ")
    t.phi("DATE", _en_date(r, left + dt.timedelta(days=r.choice((7, 14, 28, 90)))))
    t.add(". Attending physician: Dr. ")
    t.phi("NAME", doctor)
    if r.random() < 0.4:
        t.add(" (")
        t.phi("EMAIL", f"{doctor_surname.lower()}.{r.randint(1, 99)}@{r.choice(_MAIL_HOSTS)}")
        t.add(")")
    t.add(".\n")
    return t


def _random_mobile(r: random.Random) -> str:
    prefix = r.choice(("130", "135", "138", "139", "150", "158", "186", "189"))
    return prefix + "".join(str(r.randint(0, 9)) for _ in range(8))
