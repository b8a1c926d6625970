"""Extraction: every feature of the de-identified dataset equals an independent pandas
computation over the lake tables (and a hand decoding of the PLINK .bed), and the
release is pseudonymous, date-shifted, generalized, k-anonymous, hashed and audited.

Members are built by hand (persons with a type 2 diabetes code, index at the first one),
so the extraction is tested apart from the cohort compiler.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medlake import __version__
from medlake.config import open_workspace
from medlake.errors import UsageError
from medlake.privacy import date_shift_days, pseudonym
from medlake.service.extract import ExtractResult, extract_members
from medlake.service.extract_spec import parse_feature_spec
from medlake.service.workspace import open_lake, pseudonym_secret

WINDOW_DRUG = (-365, 30)
WINDOW_LAB = (-730, 0)


@dataclass
class Extracted:
    workspace: Path
    lake: dict[str, pd.DataFrame]
    members: pd.DataFrame
    spec: dict
    result: ExtractResult
    dataset: pd.DataFrame
    key: bytes
    variants: list[tuple[str, str, str]]  # (id, allele counted, column)
    gene: str


def _tables(workspace: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    with open_lake(open_workspace(workspace)) as engine:
        return {n: engine.execute(engine.table(n)).to_pandas() for n in names}


def _concepts(lake: dict[str, pd.DataFrame], vocabulary: str, codes: list[str]) -> set[int]:
    c = lake["concept"]
    return set(c[(c.vocabulary_id == vocabulary) & c.concept_code.isin(codes)].concept_id)


def _hand_members(lake: dict[str, pd.DataFrame]) -> pd.DataFrame:
    c = lake["concept"]
    t2d = set(c[(c.vocabulary_id == "ICD10CM") & c.concept_code.str.startswith("E11")].concept_id)
    co = lake["condition_occurrence"]
    hits = co[co.condition_concept_id.isin(t2d)]
    members = hits.groupby("person_id").condition_start_date.agg(["min", "max"]).reset_index()
    return members.rename(columns={"min": "cohort_start_date", "max": "cohort_end_date"})


def _bim(workspace: Path) -> tuple[Path, pd.DataFrame]:
    bed = next((workspace / "omics").rglob("*.bed"))
    bim = pd.read_csv(bed.with_suffix(".bim"), sep=r"\s+", header=None, dtype=str)
    return bed, bim


def _run(tmp: Path, workspace: Path, spec: dict, members: pd.DataFrame, name: str) -> ExtractResult:
    table = pa.Table.from_pandas(members, preserve_index=False).cast(
        pa.schema(
            [
                ("person_id", pa.int64()),
                ("cohort_start_date", pa.date32()),
                ("cohort_end_date", pa.date32()),
            ]
        )
    )
    return extract_members(
        workspace, table, parse_feature_spec(spec), tmp / name, definition={"name": "t2d by hand"}
    )


@pytest.fixture(scope="module")
def extracted(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Extracted:
    tmp = tmp_path_factory.mktemp("extract")
    workspace = hospital_lake.copy(tmp / "workspace")
    lake = _tables(
        workspace,
        [
            "concept",
            "condition_occurrence",
            "drug_exposure",
            "measurement",
            "person",
            "omics_sample",
        ],
    )
    members = _hand_members(lake)
    _, bim = _bim(workspace)
    variants = [
        (bim.iloc[0, 1], bim.iloc[0, 4], "first_a1"),
        (bim.iloc[1, 1], bim.iloc[1, 5], "second_a2"),
    ]
    counts = next((workspace / "omics").rglob("counts.parquet"))
    gene = pq.read_table(counts, columns=["gene_id"]).column(0)[3].as_py()
    spec = {
        "concept_sets": [
            {"id": 1, "items": [{"vocabulary_id": "ICD10CM", "concept_code": "I10"}]},
            {
                "id": 2,
                "items": [
                    {"vocabulary_id": "ATC", "concept_code": "C10AA05"},
                    {"vocabulary_id": "ATC", "concept_code": "C10AA07"},
                ],
            },
            {"id": 3, "items": [{"vocabulary_id": "LOINC", "concept_code": "14682-9"}]},
        ],
        "conditions": [{"name": "hypertension", "codeset_id": 1}],
        "drugs": [
            {
                "name": "statin",
                "codeset_id": 2,
                "window": {"start": WINDOW_DRUG[0], "end": WINDOW_DRUG[1]},
            }
        ],
        "measurements": [
            {
                "name": "creatinine",
                "codeset_id": 3,
                "window": {"start": WINDOW_LAB[0], "end": WINDOW_LAB[1]},
                "stats": ["latest", "latest_day", "min", "max", "mean", "count"],
            }
        ],
        "genotypes": [{"variant": v, "allele": a, "name": n} for v, a, n in variants],
        "expression": [{"gene": gene, "name": "gene_count"}],
        "k": 1,
    }
    result = _run(tmp, workspace, spec, members, "k1")
    dataset = pd.read_parquet(result.out_dir / "dataset.parquet")
    key = pseudonym_secret(open_workspace(workspace))
    ids = {pseudonym(key, p): p for p in members.person_id}
    dataset["person_id"] = dataset.person_pseudonym.map(ids)
    return Extracted(workspace, lake, members, spec, result, dataset, key, variants, gene)


def _by_person(extracted: Extracted) -> pd.DataFrame:
    return extracted.dataset.set_index("person_id")


def _days(events: pd.DataFrame, members: pd.DataFrame, date: str) -> pd.DataFrame:
    joined = events.merge(members[["person_id", "cohort_start_date"]], on="person_id")
    joined["day"] = (
        pd.to_datetime(joined[date]) - pd.to_datetime(joined.cohort_start_date)
    ).dt.days
    return joined


def test_one_row_per_member_with_a_pseudonym_of_each(extracted: Extracted) -> None:
    assert extracted.result.rows == len(extracted.members) == len(extracted.dataset)
    assert extracted.dataset.person_id.notna().all()
    assert "person_id" not in pq.read_schema(extracted.result.out_dir / "dataset.parquet").names
    # Rows are in pseudonym order, so the order of person ids does not survive.
    assert list(extracted.dataset.person_pseudonym) == sorted(extracted.dataset.person_pseudonym)


def test_condition_flags_match_pandas(extracted: Extracted) -> None:
    lake, members = extracted.lake, extracted.members
    ids = _concepts(lake, "ICD10CM", ["I10"])
    co = _days(lake["condition_occurrence"], members, "condition_start_date")
    expected = set(co[co.condition_concept_id.isin(ids) & (co.day <= 0)].person_id)
    got = _by_person(extracted).hypertension
    assert set(got[got == 1].index) == expected
    assert set(got.unique()) <= {0, 1}


def test_drug_exposures_match_pandas(extracted: Extracted) -> None:
    lake, members = extracted.lake, extracted.members
    ids = _concepts(lake, "ATC", ["C10AA05", "C10AA07"])
    de = _days(lake["drug_exposure"], members, "drug_exposure_start_date")
    de = de[de.drug_concept_id.isin(ids) & de.day.between(*WINDOW_DRUG)]
    counts = de.groupby("person_id").size()
    first = de.groupby("person_id").day.min()
    got = _by_person(extracted)
    assert counts.sum() > 0
    for person, row in got.iterrows():
        assert row.statin_count == counts.get(person, 0)
        assert row.statin_exposed == int(person in counts.index)
        if person in first.index:
            assert row.statin_first_day == first[person]
        else:
            assert pd.isna(row.statin_first_day)


def test_measurement_statistics_match_pandas(extracted: Extracted) -> None:
    lake, members = extracted.lake, extracted.members
    ids = _concepts(lake, "LOINC", ["14682-9"])
    m = _days(lake["measurement"], members, "measurement_date")
    m = m[
        m.measurement_concept_id.isin(ids) & m.day.between(*WINDOW_LAB) & m.value_as_number.notna()
    ]
    ordered = m.sort_values(["measurement_date", "measurement_datetime", "measurement_id"])
    latest = ordered.groupby("person_id").tail(1).set_index("person_id")
    stats = m.groupby("person_id").value_as_number.agg(["min", "max", "mean", "count"])
    got = _by_person(extracted)
    assert len(stats) > 5
    for person, row in got.iterrows():
        if person not in stats.index:
            assert row.creatinine_count == 0
            assert np.isnan(row.creatinine_mean)
            assert np.isnan(row.creatinine_latest)
            continue
        assert row.creatinine_min == stats.loc[person, "min"]
        assert row.creatinine_max == stats.loc[person, "max"]
        assert row.creatinine_mean == pytest.approx(stats.loc[person, "mean"], rel=1e-12)
        assert row.creatinine_count == stats.loc[person, "count"]
        assert row.creatinine_latest == latest.loc[person, "value_as_number"]
        assert row.creatinine_latest_day == latest.loc[person, "day"]


def _decode_bed(bed: Path, n_samples: int, index: int) -> np.ndarray:
    """Copies of A1 (fifth .bim column) per sample, -1 for missing: the .bed layout by hand."""
    data = bed.read_bytes()
    assert data[:3] == bytes([0x6C, 0x1B, 0x01])
    width = (n_samples + 3) // 4
    block = np.frombuffer(data[3 + index * width : 3 + (index + 1) * width], dtype=np.uint8)
    codes = np.stack([(block >> shift) & 3 for shift in (0, 2, 4, 6)], axis=1).ravel()[:n_samples]
    return np.choose(codes, [2, -1, 1, 0])


def _first_sample(lake: dict[str, pd.DataFrame], assay: str) -> pd.Series:
    s = lake["omics_sample"]
    s = s[(s.assay == assay) & s.person_id.notna()].copy()
    s["order_date"] = pd.to_datetime(s.collected_date).fillna(pd.Timestamp("2262-01-01"))
    return s.sort_values(["order_date", "sample_id"])


def test_genotype_dosages_match_a_hand_decoding_of_the_bed_file(extracted: Extracted) -> None:
    bed, bim = _bim(extracted.workspace)
    fam = pd.read_csv(bed.with_suffix(".fam"), sep=r"\s+", header=None, dtype=str)
    samples = _first_sample(extracted.lake, "genotype")
    got = _by_person(extracted)
    checked = 0
    for variant, allele, column in extracted.variants:
        index = int(np.flatnonzero(bim[1] == variant)[0])
        a1 = _decode_bed(bed, len(fam), index)
        copies = a1 if allele == bim.iloc[index, 4] else np.where(a1 >= 0, 2 - a1, -1)
        by_sample = dict(zip(fam[1], copies, strict=True))
        expected: dict[int, int] = {}
        for sample in samples.itertuples():
            value = by_sample.get(sample.sample_id, -1)
            if value >= 0 and sample.person_id not in expected:
                expected[int(sample.person_id)] = int(value)
        for person, row in got.iterrows():
            if person in expected:
                assert row[column] == expected[person]
                checked += 1
            else:
                assert pd.isna(row[column])
    assert checked > 0


def test_expression_matches_the_counts_matrix(extracted: Extracted) -> None:
    counts = pd.read_parquet(next((extracted.workspace / "omics").rglob("counts.parquet")))
    row = counts.set_index("gene_id").loc[extracted.gene]
    samples = _first_sample(extracted.lake, "rnaseq").drop_duplicates("person_id")
    expected = {int(s.person_id): float(row[s.sample_id]) for s in samples.itertuples()}
    got = _by_person(extracted)
    assert any(p in expected for p in got.index)
    for person, value in got.gene_count.items():
        assert (value == expected[person]) if person in expected else np.isnan(value)


def test_dates_are_shifted_by_each_persons_own_shift(extracted: Extracted) -> None:
    got = _by_person(extracted)
    members = extracted.members.set_index("person_id")
    moved = set()
    for person, row in got.iterrows():
        shift = date_shift_days(extracted.key, person, 365)
        assert shift != 0
        assert -365 <= shift <= 365
        assert row.index_date == members.loc[person, "cohort_start_date"] + dt.timedelta(days=shift)
        assert row.end_date - row.index_date == (
            members.loc[person, "cohort_end_date"] - members.loc[person, "cohort_start_date"]
        )
        moved.add(shift)
    assert len(moved) > len(got) // 2  # shifts differ between persons


def test_ages_and_birth_years_are_banded(extracted: Extracted) -> None:
    person = extracted.lake["person"].set_index("person_id")
    members = extracted.members.set_index("person_id")
    for pid, row in _by_person(extracted).iterrows():
        born = int(person.loc[pid, "year_of_birth"])
        age = members.loc[pid, "cohort_start_date"].year - born
        if age >= 90:
            assert row.age_band == "90+"
        else:
            low, high = (int(x) for x in row.age_band.split("-"))
            assert low <= age <= high
            assert high - low == 4
        low, high = (int(x) for x in row.birth_year.split("-"))
        assert low <= born <= high
        assert low % 5 == 0
        assert row.sex == {8507: "M", 8532: "F"}[person.loc[pid, "gender_concept_id"]]


def test_default_k_makes_the_release_5_anonymous(extracted: Extracted, tmp_path: Path) -> None:
    spec = dict(extracted.spec) | {"k": None}
    result = _run(tmp_path, extracted.workspace, spec, extracted.members, "k5")
    released = pd.read_parquet(result.out_dir / "dataset.parquet")
    qis = ["age_band", "sex", "birth_year", "region"]
    assert released.groupby(qis, dropna=False).size().min() >= 5
    assert result.k == 5
    assert result.k_achieved == released.groupby(qis, dropna=False).size().min()
    assert result.suppressed_rows > 0  # 400 patients, bands of 5 years: some classes are small
    assert result.rows + result.dropped_rows == len(extracted.members)


def test_manifest_records_definition_spec_version_counts_k_and_hashes(extracted: Extracted) -> None:
    out = extracted.result.out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["medlake_version"] == __version__
    assert manifest["definition"] == {"name": "t2d by hand"}
    assert manifest["feature_spec"] == parse_feature_spec(extracted.spec).model_dump(mode="json")
    assert manifest["rows"]["written"] == len(extracted.dataset)
    assert manifest["k_anonymity"]["k_achieved"] == extracted.result.k_achieved
    for name in ("dataset.parquet", "dataset.csv"):
        assert (
            manifest["files"][name]["sha256"]
            == hashlib.sha256((out / name).read_bytes()).hexdigest()
        )
    csv = pd.read_csv(out / "dataset.csv")
    assert list(csv.person_pseudonym) == list(extracted.dataset.person_pseudonym)
    assert np.allclose(csv.creatinine_mean, extracted.dataset.creatinine_mean, equal_nan=True)


def test_the_export_is_in_the_audit_trail_with_its_persons(extracted: Extracted) -> None:
    events = _tables(extracted.workspace, ["audit_event"])["audit_event"]
    event = events[events.event_id == extracted.result.audit_event_id].iloc[0]
    assert event.action == "export"
    detail = json.loads(event.detail) if isinstance(event.detail, str) else event.detail
    assert sorted(detail["person_ids"]) == sorted(extracted.members.person_id)
    assert detail["files"]["dataset.parquet"] == extracted.result.files["dataset.parquet"]


def test_an_extract_never_overwrites(extracted: Extracted) -> None:
    with pytest.raises(UsageError, match="never overwrite"):
        _run(
            extracted.result.out_dir.parent,
            extracted.workspace,
            extracted.spec,
            extracted.members,
            "k1",
        )
