"""Mapping files in YAML, and Excel (.xlsx) exports read through a mapping.

The reference is the synthetic HIS read as CSV through its shipped TOML mapping: the
same mapping written in YAML must validate to the same spec, and the same exports saved
as workbooks (dates as real Excel date cells, where they parse) must stage the same
rows and quarantine the same records at the same rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import tomllib
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest
import yaml

from medlake.errors import InputError
from medlake.ingest.csv_mapping import CsvMappingReader
from medlake.ingest.excel_mapping import ExcelMappingReader
from medlake.ingest.formats import sniff_format
from medlake.ingest.mapping_spec import load_mapping
from medlake.ingest.staging import RECORD_HASH, ParsedChunk, SourceContext
from medlake.synth import generate_hospital
from medlake.synth.hospital import HIS_MAPPING

HIS_FILES = ("patients", "visits", "diagnoses", "prescriptions")
RECEIVED = dt.datetime(2024, 5, 1, 8, 0)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospital")
    generate_hospital(root, 120, 5, workers=1)
    return root


def as_yaml(toml_path: Path, to: Path, suffix: str = ".csv") -> Path:
    data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    for entry in data["file"]:
        match = entry["match"]
        entry["match"] = (
            match.replace(".csv", suffix)
            if isinstance(match, str)
            else [m.replace(".csv", suffix) for m in match]
        )
    to.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return to


def to_workbook(csv_path: Path, encoding: str, date_formats: dict[str, str], to: Path) -> Path:
    """The CSV as a workbook: text cells, and date cells where a column's date parses."""
    book = openpyxl.Workbook()
    sheet = book.active
    with csv_path.open(encoding=encoding, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    sheet.append(header)
    for row in rows[1:]:
        cells: list[object] = []
        for name, value in zip(header, row, strict=False):
            fmt = date_formats.get(name)
            if fmt and value:
                try:
                    cells.append(dt.datetime.strptime(value, fmt))
                    continue
                except ValueError:
                    pass  # a planted bad date stays text, and must still be quarantined
            cells.append(value)
        cells.extend(row[len(header):])
        sheet.append(cells)
    book.save(to)
    return to


def read(reader: object, path: Path, name: str, mapping: Path) -> list[ParsedChunk]:
    context = SourceContext("his", "b", path, name, RECEIVED, options={"mapping": mapping})
    return list(reader.read(context))  # type: ignore[attr-defined]


def staged(chunks: list[ParsedChunk]) -> pa.Table:
    tables = [t for c in chunks for t in c.patients]
    tables += [t for c in chunks for ts in c.tables.values() for t in ts]
    table = pa.concat_tables(tables)
    return table.drop_columns([RECORD_HASH])  # the hash is of the bytes as exported


def quarantined(chunks: list[ParsedChunk], suffix: str) -> list[tuple[str, str, str | None]]:
    return sorted(
        (q.location.replace(suffix, ""), q.reason, q.field) for c in chunks for q in c.quarantine
    )


def test_a_yaml_mapping_is_the_same_spec_as_its_toml(hospital: Path, tmp_path: Path) -> None:
    toml_path = hospital / HIS_MAPPING
    yaml_path = as_yaml(toml_path, tmp_path / "his.yaml")
    assert load_mapping(yaml_path) == load_mapping(toml_path)


def test_a_broken_yaml_mapping_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "m.yml"
    bad.write_text("file: [\n  - match: x\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"m\.yml: not valid YAML"):
        load_mapping(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(InputError, match="a mapping at the top level"):
        load_mapping(bad)


def test_excel_exports_stage_what_their_csv_stages(hospital: Path, tmp_path: Path) -> None:
    toml_path = hospital / HIS_MAPPING
    spec = load_mapping(toml_path)
    xlsx_mapping = as_yaml(toml_path, tmp_path / "his-xlsx.yaml", ".xlsx")
    for stem in HIS_FILES:
        csv_path = hospital / "his" / f"{stem}.csv"
        entry = next(e for e in spec.file if f"{stem}.csv" in e.patterns())
        formats = {k: (v if isinstance(v, str) else v[0]) for k, v in entry.date_formats.items()}
        book = to_workbook(csv_path, entry.encoding, formats, tmp_path / f"{stem}.xlsx")
        assert sniff_format(book) == "xlsx"
        want = read(CsvMappingReader(), csv_path, f"{stem}.csv", toml_path)
        got = read(ExcelMappingReader(), book, f"{stem}.xlsx", xlsx_mapping)
        assert staged(got).equals(staged(want)), stem
        assert quarantined(got, ".xlsx") == quarantined(want, ".csv"), stem
        assert sum(c.records_read for c in got) == sum(c.records_read for c in want)


def test_an_excel_entry_names_its_sheet(hospital: Path, tmp_path: Path) -> None:
    data = tomllib.loads((hospital / HIS_MAPPING).read_text(encoding="utf-8"))
    data["file"] = [e for e in data["file"] if e["match"] == "visits.csv"]
    data["file"][0]["match"] = "book.xlsx"
    data["file"][0]["sheet"] = "Visits"
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    book = openpyxl.Workbook()
    book.active.title = "Cover"
    book.active.append(["not the data"])
    sheet = book.create_sheet("Visits")
    with (hospital / "his" / "visits.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            sheet.append(row)
    book.save(tmp_path / "book.xlsx")
    got = read(ExcelMappingReader(), tmp_path / "book.xlsx", "book.xlsx", mapping)
    want = read(CsvMappingReader(), hospital / "his" / "visits.csv", "visits.csv",
                hospital / HIS_MAPPING)  # fmt: skip
    assert staged(got).equals(staged(want))
    data["file"][0]["sheet"] = "Missing"
    mapping.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(InputError, match="no worksheet 'Missing'"):
        read(ExcelMappingReader(), tmp_path / "book.xlsx", "book.xlsx", mapping)
