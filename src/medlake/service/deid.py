"""De-identification of free text: scrub a text, and score the scrubber on a synthetic
hospital's notes against the PHI its generator labelled (``truth/note_phi.ndjson``).

The scrubber itself is :mod:`medlake.privacy.phi_text`; this module reads the inputs.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import orjson

from medlake.errors import InputError
from medlake.privacy.phi_scoring import EntityScore, LabelledSpan, score_phi
from medlake.privacy.phi_text import KnownIdentifiers, PhiSpan, find_phi, scrub_text

__all__ = ["NoteScores", "ScrubResult", "score_hospital_notes", "scrub"]


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
