"""De-identification of free text: scrub a text; release the lake's notes de-identified;
score the scrubber on a synthetic hospital's notes against the PHI its generator
labelled (``truth/note_phi.ndjson``).

The scrubber itself is :mod:`medlake.privacy.phi_text`; this module reads the inputs.
Notes from the lake are scrubbed with each person's known identifiers (every name, id,
address and phone of their source records in ``pii_person`` and ``source_patient``) and
their dates move by the person's date shift, the same as in extracted datasets, with
``person_id`` replaced by the same keyed pseudonym.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import InputError
from medlake.privacy import date_shifts, pseudonym
from medlake.privacy.phi_scoring import EntityScore, LabelledSpan, score_phi
from medlake.privacy.phi_text import KnownIdentifiers, PhiSpan, find_phi, scrub_text
from medlake.service.policy import authorized, record_read
from medlake.service.workspace import open_lake, pseudonym_secret

__all__ = ["NoteScores", "ScrubResult", "deidentified_notes", "score_hospital_notes", "scrub"]

NOTE_COLUMNS = ("note_id", "person_id", "note_date", "note_title", "note_text",
                "note_source_value")  # fmt: skip


@dataclass(frozen=True)
class ScrubResult:
    text: str
    spans: list[PhiSpan]


def scrub(text: str, *, shift_days: int | None = None) -> ScrubResult:
    """``text`` with its PHI replaced (dates moved by ``shift_days`` when given)."""
    scrubbed, spans = scrub_text(text, shift_days=shift_days)
    return ScrubResult(scrubbed, spans)


@dataclass(frozen=True)
class NoteScores:
    documents: int
    scores: dict[str, EntityScore]


def score_hospital_notes(hospital_dir: Path, *, use_known: bool = False) -> NoteScores:
    """Recall and precision per entity type on a synthetic hospital's EMR notes.

    With ``use_known`` the scrubber also gets each note's patient's identifiers from the
    EMR's Patient resource (name, MRN, ID number, address, phone), as it does in the
    lake from ``pii_person``.

    Raises:
        InputError: the folder is not a synthetic hospital with notes and their truth.
    """
    documents_path = hospital_dir / "emr" / "DocumentReference.ndjson"
    truth_path = hospital_dir / "truth" / "note_phi.ndjson"
    for path in (documents_path, truth_path):
        if not path.is_file():
            raise InputError(f"{path}: not found; is {hospital_dir} a synthetic hospital?")
    patients = _patients(hospital_dir / "emr" / "Patient.ndjson") if use_known else {}
    detected: dict[str, list[PhiSpan]] = {}
    for number, line in enumerate(documents_path.read_bytes().splitlines(), 1):
        resource = orjson.loads(line)
        text = _note_text(resource, f"{documents_path}:{number}")
        subject = resource["subject"]["reference"].rpartition("/")[2]
        detected[resource["id"]] = find_phi(text, patients.get(subject))
    labelled = [
        LabelledSpan(item["document_id"], item["entity"], item["start"], item["end"])
        for item in map(orjson.loads, truth_path.read_bytes().splitlines())
    ]
    return NoteScores(len(detected), score_phi(labelled, detected))


def _note_text(resource: dict, where: str) -> str:
    try:
        data = resource["content"][0]["attachment"]["data"]
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (KeyError, IndexError, binascii.Error, UnicodeDecodeError) as error:
        raise InputError(f"{where}: no readable inline note text ({error})") from None


def _patients(path: Path) -> dict[str, KnownIdentifiers]:
    known: dict[str, KnownIdentifiers] = {}
    for line in path.read_bytes().splitlines():
        patient = orjson.loads(line)
        known[patient["id"]] = KnownIdentifiers(
            names=[n.get("text", "") for n in patient.get("name", ())],
            ids=[i.get("value", "") for i in patient.get("identifier", ())],
            addresses=[a.get("text", "") for a in patient.get("address", ())],
            phones=[t.get("value", "") for t in patient.get("telecom", ())],
        )
    return known


# Stewards: the scrubber reads identified data, and free text is released only after a
# steward's review (its recall is measured on synthetic notes; docs/deidentification.md).
@authorized(Permission.READ_IDENTIFIED)
def deidentified_notes(
    workspace_dir: Path | Workspace | None,
    *,
    person_ids: list[int] | None = None,
    pseudonym_context: str = "",
) -> pa.Table:
    """The lake's notes (of ``person_ids``, else all) with PHI removed and dates shifted.

    Columns: ``person_pseudonym`` (as in extracts with the same ``pseudonym_context``),
    ``note_date`` shifted, ``note_title`` and ``note_text`` scrubbed, ``note_source_value``,
    and ``phi_found`` (spans replaced). Note ids are dropped: they identify the record.
    """
    workspace = as_workspace(workspace_dir)
    key = pseudonym_secret(workspace)
    max_days = workspace.settings.privacy.date_shift_max_days
    with open_lake(workspace) as engine:
        notes = engine.table("note")
        if person_ids is not None:
            notes = notes.filter(notes.person_id.isin(person_ids))
        rows = engine.execute(notes.select(*NOTE_COLUMNS).order_by("note_id")).to_pylist()
        known = _known_identifiers(engine, sorted({row["person_id"] for row in rows}))
        record_read(engine, "note", "deidentified", person_ids=[row["person_id"] for row in rows],
                    detail={"notes": len(rows)})  # fmt: skip
    shifts = date_shifts(key, [row["person_id"] for row in rows], max_days)
    out: dict[str, list[object]] = {name: [] for name in (
        "person_pseudonym", "note_date", "note_title", "note_text", "note_source_value",
        "phi_found")}  # fmt: skip
    for row in rows:
        person = row["person_id"]
        shift = shifts[person]
        text, spans = scrub_text(row["note_text"] or "", shift_days=shift, known=known.get(person))
        title, title_spans = scrub_text(row["note_title"] or "", shift_days=shift,
                                        known=known.get(person))  # fmt: skip
        out["person_pseudonym"].append(pseudonym(key, person, pseudonym_context))
        out["note_date"].append(row["note_date"] + _days(shift) if row["note_date"] else None)
        out["note_title"].append(title or None)
        out["note_text"].append(text)
        out["note_source_value"].append(row["note_source_value"])
        out["phi_found"].append(len(spans) + len(title_spans))
    return pa.table(out)


def _days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def _known_identifiers(engine: Engine, person_ids: list[int]) -> dict[int, KnownIdentifiers]:
    """Every identifier the lake holds for each person, over all their source records."""
    if not person_ids:
        return {}
    pii = engine.table("pii_person")
    rows = engine.execute(pii.filter(pii.person_id.isin(person_ids))).to_pylist()
    by_person: dict[int, dict[str, set[str]]] = {}
    for row in rows:
        empty: dict[str, set[str]] = {"names": set(), "ids": set(), "addresses": set(),
                                      "phones": set()}  # fmt: skip
        entry = by_person.setdefault(row["person_id"], empty)
        for column in ("name_hanzi", "name_pinyin", "name_latin"):
            if row.get(column):
                entry["names"].add(row[column])
        if row.get("family_name") and row.get("given_name"):
            entry["names"].add(f"{row['family_name']}{row['given_name']}")
            entry["names"].add(f"{row['family_name']} {row['given_name']}")
        for column, kind in (("resident_id", "ids"), ("source_patient_id", "ids"),
                             ("mrn", "ids"), ("address", "addresses"), ("phone", "phones"),
                             ("email", "ids")):  # fmt: skip
            if row.get(column):
                entry[kind].add(str(row[column]))
    return {
        person: KnownIdentifiers(
            sorted(v["names"]), sorted(v["ids"]), sorted(v["addresses"]), sorted(v["phones"])
        )
        for person, v in by_person.items()
    }
