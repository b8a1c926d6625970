"""Omics readers on the synthetic hospital's biobank files: PLINK, counts, manifest."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from medlake.errors import InputError
from medlake.ingest.omics import (
    CountsReader,
    PgenReader,
    PlinkBedReader,
    SampleManifestReader,
    VcfReader,
)
from medlake.ingest.omics_store import sha256_file
from medlake.ingest.staging import OMICS_SAMPLE_COLUMNS, ParsedChunk, SourceContext
from medlake.synth import generate_hospital

RECEIVED = dt.datetime(2026, 1, 1)
READERS = (PlinkBedReader(), PgenReader(), VcfReader(), CountsReader(), SampleManifestReader())


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital") / "h"
    generate_hospital(out, 300, 11, workers=1)
    return out


def context(path: Path, omics: Path, **companions: Path) -> SourceContext:
    return SourceContext(
        "biobank", "batch-1", path, path.name, RECEIVED, companions=companions, omics_dir=omics
    )


def plink_context(hospital: Path, omics: Path, **extra: Path) -> SourceContext:
    o = hospital / "omics"
    companions = {"bim": o / "genotypes.bim", "fam": o / "genotypes.fam"} | extra
    return context(o / "genotypes.bed", omics, **companions)


def read_all(reader: object, ctx: SourceContext) -> list[ParsedChunk]:
    return list(reader.read(ctx))  # type: ignore[attr-defined]


def samples_of(chunks: list[ParsedChunk]) -> pa.Table:
    return pa.concat_tables([t for c in chunks for t in c.omics_samples])


def csv_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def sniffed(path: Path) -> list[str]:
    head = path.open("rb").read(1024)
    return [r.format for r in READERS if r.sniff(path, head)]


def test_each_biobank_file_is_sniffed_as_its_format_only(hospital: Path) -> None:
    o = hospital / "omics"
    assert sniffed(o / "genotypes.bed") == ["plink"]
    assert sniffed(o / "rnaseq_counts.tsv.gz") == ["counts"]
    assert sniffed(o / "samples.csv") == ["sample-manifest"]
    for companion in ("genotypes.bim", "genotypes.fam", "genes.tsv", "rnaseq_samples.tsv"):
        assert sniffed(o / companion) == [], companion


def test_plink_fileset_is_stored_byte_identical(hospital: Path, tmp_path: Path) -> None:
    rows = samples_of(read_all(PlinkBedReader(), plink_context(hospital, tmp_path)))
    uri = rows.column("file_uri")[0].as_py()
    stored = tmp_path / uri
    assert uri.startswith("genotypes/")
    assert uri.endswith("/genotypes.bed")
    for ext in ("bed", "bim", "fam"):
        original = hospital / "omics" / f"genotypes.{ext}"
        assert stored.with_suffix(f".{ext}").read_bytes() == original.read_bytes()
    assert set(rows.column("sha256").to_pylist()) == {sha256_file(stored)}
    assert set(rows.column("file_format").to_pylist()) == {"bed"}
    sums = (stored.parent / "SHA256SUMS").read_text().splitlines()
    assert [line.split()[1] for line in sums] == ["genotypes.bed", "genotypes.bim", "genotypes.fam"]


def test_every_fam_sample_is_registered_with_the_manifest_patient(
    hospital: Path, tmp_path: Path
) -> None:
    o = hospital / "omics"
    ctx = plink_context(hospital, tmp_path, manifest=o / "samples.csv")
    chunks = read_all(PlinkBedReader(), ctx)
    rows = samples_of(chunks)
    assert rows.schema == pa.schema([pa.field(n, t) for n, t in OMICS_SAMPLE_COLUMNS.items()])
    fam_ids = [line.split()[1] for line in (o / "genotypes.fam").read_text().splitlines()]
    assert rows.column("sample_id").to_pylist() == fam_ids
    assert set(rows.column("assay").to_pylist()) == {"genotype"}
    manifest = {r["sample_id"]: r for r in csv_rows(o / "samples.csv") if r["assay"] == "genotype"}
    truth = {r["sample_id"] for r in csv_rows(hospital / "truth" / "omics_samples.csv")}
    assert set(fam_ids) == set(manifest)
    assert set(fam_ids) <= truth
    for row in rows.to_pylist():
        expected = manifest[row["sample_id"]]
        assert row["source_patient_id"] == expected["source_patient_id"]
        assert row["source_system"] == expected["source_system"]
        assert row["collected_date"].isoformat() == expected["collected_date"]
    assert sum(c.records_read for c in chunks) == len(fam_ids)
    assert not [q for c in chunks for q in c.quarantine]


def test_without_manifest_samples_have_no_patient_link(hospital: Path, tmp_path: Path) -> None:
    rows = samples_of(read_all(PlinkBedReader(), plink_context(hospital, tmp_path)))
    assert set(rows.column("source_patient_id").to_pylist()) == {None}
    assert set(rows.column("source_system").to_pylist()) == {"biobank"}


def test_rereading_the_same_input_registers_the_same_rows(hospital: Path, tmp_path: Path) -> None:
    o = hospital / "omics"
    ctx = plink_context(hospital, tmp_path, manifest=o / "samples.csv")
    first = samples_of(read_all(PlinkBedReader(), ctx))
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    second = samples_of(read_all(PlinkBedReader(), ctx))
    assert second.equals(first)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    counts = context(o / "rnaseq_counts.tsv.gz", tmp_path, manifest=o / "samples.csv")
    assert samples_of(read_all(CountsReader(), counts)).equals(
        samples_of(read_all(CountsReader(), counts))
    )


def test_truncated_bed_is_rejected_naming_it(hospital: Path, tmp_path: Path) -> None:
    o = hospital / "omics"
    bed = tmp_path / "in" / "genotypes.bed"
    bed.parent.mkdir()
    bed.write_bytes((o / "genotypes.bed").read_bytes()[:-5])
    ctx = context(bed, tmp_path / "omics", bim=o / "genotypes.bim", fam=o / "genotypes.fam")
    with pytest.raises(InputError, match=r"genotypes\.bed: .*bytes, expected"):
        read_all(PlinkBedReader(), ctx)
    assert not any(p.is_file() for p in (tmp_path / "omics").rglob("*"))


def test_fam_of_another_fileset_is_rejected(hospital: Path, tmp_path: Path) -> None:
    o = hospital / "omics"
    fam = tmp_path / "other.fam"
    lines = (o / "genotypes.fam").read_text().splitlines()
    fam.write_text("\n".join(lines[:-4]) + "\n")  # 4 samples fewer: one byte less per row
    ctx = plink_context(hospital, tmp_path / "omics", fam=fam)
    with pytest.raises(InputError, match=r"genotypes\.bed: .*\.bim/\.fam of another fileset"):
        read_all(PlinkBedReader(), ctx)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("A A 0 0 1 -9\nB B 0 0 1\n", r"genotypes\.fam:2: .*5 fields"),
        ("A A 0 0 1 -9\nA A 0 0 2 -9\n", r"genotypes\.fam:2: sample 'A' repeats"),
    ],
)
def test_malformed_fam_is_rejected_naming_its_line(
    hospital: Path, tmp_path: Path, content: str, message: str
) -> None:
    fam = tmp_path / "x.fam"
    fam.write_text(content)
    with pytest.raises(InputError, match=message):
        read_all(PlinkBedReader(), plink_context(hospital, tmp_path / "omics", fam=fam))


def test_missing_companion_is_named(hospital: Path, tmp_path: Path) -> None:
    ctx = context(hospital / "omics" / "genotypes.bed", tmp_path, bim=hospital / "x.bim")
    with pytest.raises(InputError, match=r"genotypes\.bed: needs its \.fam"):
        read_all(PlinkBedReader(), ctx)


def test_counts_parquet_equals_the_tsv(hospital: Path, tmp_path: Path) -> None:
    o = hospital / "omics"
    ctx = context(
        o / "rnaseq_counts.tsv.gz",
        tmp_path,
        manifest=o / "samples.csv",
        samples=o / "rnaseq_samples.tsv",
        genes=o / "genes.tsv",
    )
    rows = samples_of(read_all(CountsReader(), ctx))
    uri = rows.column("file_uri")[0].as_py()
    assert uri.startswith("expression/")
    assert uri.endswith("/counts.parquet")
    stored = pq.read_table(tmp_path / uri)
    with gzip.open(o / "rnaseq_counts.tsv.gz", "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    tsv = pa_csv.read_csv(
        o / "rnaseq_counts.tsv.gz",
        parse_options=pa_csv.ParseOptions(delimiter="\t"),
        convert_options=pa_csv.ConvertOptions(
            column_types={"gene_id": pa.string()} | {s: pa.int64() for s in header[1:]}
        ),
    )
    assert stored.column_names == header
    assert stored.equals(tsv)
    assert rows.column("sample_id").to_pylist() == header[1:]
    assert set(rows.column("assay").to_pylist()) == {"rnaseq"}
    assert set(rows.column("sha256").to_pylist()) == {sha256_file(tmp_path / uri)}
    manifest = {r["sample_id"]: r for r in csv_rows(o / "samples.csv") if r["assay"] == "rnaseq"}
    for row in rows.to_pylist():
        assert row["source_patient_id"] == manifest[row["sample_id"]]["source_patient_id"]
    folder = (tmp_path / uri).parent
    assert (folder / "samples.tsv").read_bytes() == (o / "rnaseq_samples.tsv").read_bytes()
    assert (folder / "genes.tsv").read_bytes() == (o / "genes.tsv").read_bytes()


def test_sample_sheet_gives_collection_dates_without_a_manifest(
    hospital: Path, tmp_path: Path
) -> None:
    o = hospital / "omics"
    ctx = context(o / "rnaseq_counts.tsv.gz", tmp_path, samples=o / "rnaseq_samples.tsv")
    rows = samples_of(read_all(CountsReader(), ctx)).to_pylist()
    sheet = {r["sample_id"]: r["collection_date"] for r in csv_rows(o / "rnaseq_samples.tsv", "\t")}
    assert {r["sample_id"]: r["collected_date"].isoformat() for r in rows} == sheet


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gene_id\ta\tb\ng1\t1\t2\ng2\t3\t-1\n", r"counts\.tsv:3: column 'b': '-1' is not a count"),
        ("gene_id\ta\tb\ng1\t1\t2.5\n", r"counts\.tsv:2: column 'b': '2\.5'"),
        ("gene_id\ta\tb\ng1\t1\t\n", r"counts\.tsv:2: column 'b': '' is not a count"),
        ("gene_id\ta\tb\ng1\t1\tNA\n", r"counts\.tsv:2: column 'b': 'NA'"),
        ("gene_id\ta\tb\ng1\t1\t2\ng1\t3\t4\n", r"counts\.tsv:3: gene 'g1' repeated"),
        ("gene_id\ta\ta\ng1\t1\t2\n", r"counts\.tsv:1: sample column 3 repeated"),
        ("gene_id\ta\tb\ng1\t1\t2\ng2\t3\n", r"counts\.tsv:3: 2 fields, the header has 3"),
        ("gene\ta\tb\ng1\t1\t2\n", r"counts\.tsv:1: first column must be gene_id"),
        ("gene_id\ta\tb\n", r"counts\.tsv: count matrix without genes"),
    ],
)
def test_bad_count_matrix_is_rejected_naming_line_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    ctx = context(write(tmp_path / "counts.tsv", text), tmp_path / "omics")
    with pytest.raises(InputError, match=message):
        read_all(CountsReader(), ctx)
    assert not any(p.is_file() for p in (tmp_path / "omics").rglob("*"))


def test_counts_csv_and_featurecounts_layouts(tmp_path: Path) -> None:
    plain = write(tmp_path / "c.csv", '"gene_id","s1","s2"\n"g1",0,7\n"g2",12,3\n')
    fc = write(
        tmp_path / "fc.txt",
        "# Program:featureCounts v2.0.6\n"
        "Geneid\tChr\tStart\tEnd\tStrand\tLength\t/data/s1.bam\t/data/s2.bam\n"
        "g1\tchr1\t1\t100\t+\t100\t0\t7\n"
        "g2\tchr1\t200\t300\t-\t101\t12\t3\n",
    )
    expected = pa.table(
        {"gene_id": ["g1", "g2"], "s1": pa.array([0, 12], pa.int64()), "s2": [7, 3]}
    )
    for path in (plain, fc):
        assert CountsReader().sniff(path, path.read_bytes()[:1024])
        rows = samples_of(read_all(CountsReader(), context(path, tmp_path / "omics")))
        assert rows.column("sample_id").to_pylist() == ["s1", "s2"]
        assert pq.read_table(tmp_path / "omics" / rows.column("file_uri")[0].as_py()).equals(
            expected
        )


def test_large_counts_are_written_in_fixed_row_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 10_000, size=(5000, 3))
    lines = ["gene_id\ta\tb\tc"] + [
        f"g{i}\t" + "\t".join(map(str, row)) for i, row in enumerate(counts.tolist())
    ]
    path = write(tmp_path / "big.tsv", "\n".join(lines) + "\n")
    rows = samples_of(read_all(CountsReader(), context(path, tmp_path / "omics")))
    table = pq.read_table(tmp_path / "omics" / rows.column("file_uri")[0].as_py())
    assert np.array_equal(np.column_stack([table[c].to_numpy() for c in "abc"]), counts)


def test_manifest_alone_gives_link_updates(hospital: Path, tmp_path: Path) -> None:
    manifest = hospital / "omics" / "samples.csv"
    chunks = read_all(SampleManifestReader(), context(manifest, tmp_path))
    rows = samples_of(chunks).to_pylist()
    expected = csv_rows(manifest)
    assert [(r["sample_id"], r["assay"]) for r in rows] == [
        (r["sample_id"], r["assay"]) for r in expected
    ]
    assert {r["file_uri"] for r in rows} == {None}
    assert {r["sha256"] for r in rows} == {None}
    assert [r["source_patient_id"] for r in rows] == [r["source_patient_id"] for r in expected]
    assert not any(tmp_path.iterdir())


def test_bad_manifest_rows_go_to_quarantine(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "samples.csv",
        "sample_id,assay,source_system,source_patient_id,collected_date\n"
        "S1,genotype,HIS,P1,2021-02-03\n"
        "S2,genotype,HIS,,2021-02-03\n"
        "S3,genotype,HIS,P3,03/02/2021\n"
        "S1,genotype,HIS,P9,2021-02-03\n"
        "S4,rnaseq,,P4,20210203\n",
    )
    chunk = read_all(SampleManifestReader(), context(manifest, tmp_path / "omics"))[0]
    assert [(q.location, q.field) for q in chunk.quarantine] == [
        ("samples.csv:3", "source_patient_id"),
        ("samples.csv:4", "collected_date"),
        ("samples.csv:5", "sample_id"),
    ]
    rows = samples_of([chunk]).to_pylist()
    assert [(r["sample_id"], r["source_system"], r["collected_date"]) for r in rows] == [
        ("S1", "HIS", dt.date(2021, 2, 3)),
        ("S4", "biobank", dt.date(2021, 2, 3)),
    ]
    assert chunk.records_read == 5


def test_a_copied_fileset_goes_to_the_same_folder(hospital: Path, tmp_path: Path) -> None:
    o = hospital / "omics"
    copy = tmp_path / "in"
    copy.mkdir()
    for ext in ("bed", "bim", "fam"):
        shutil.copy(o / f"genotypes.{ext}", copy / f"renamed.{ext}")
    ctx = context(
        copy / "renamed.bed", tmp_path / "omics", bim=copy / "renamed.bim", fam=copy / "renamed.fam"
    )
    a = samples_of(read_all(PlinkBedReader(), ctx))
    b = samples_of(read_all(PlinkBedReader(), plink_context(hospital, tmp_path / "omics")))
    assert a.equals(b)
    assert len(list((tmp_path / "omics" / "genotypes").iterdir())) == 1
