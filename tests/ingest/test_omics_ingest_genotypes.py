"""VCF conversion and PLINK 2 .pgen filesets, checked against known genotype matrices."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from bed_reader import open_bed

from medlake.errors import InputError
from medlake.ingest import omics_vcf
from medlake.ingest.omics import PgenReader, VcfReader
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.synth import generate_hospital

RECEIVED = dt.datetime(2026, 1, 1)
HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=2>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"
)


def context(path: Path, omics: Path, **companions: Path) -> SourceContext:
    return SourceContext(
        "biobank", "b1", path, path.name, RECEIVED, companions=companions, omics_dir=omics
    )


def read_all(reader: object, ctx: SourceContext) -> list[ParsedChunk]:
    return list(reader.read(ctx))  # type: ignore[attr-defined]


def samples_of(chunks: list[ParsedChunk]) -> pa.Table:
    return pa.concat_tables([t for c in chunks for t in c.omics_samples])


def gt(count: int, phased: bool, flip: bool) -> str:
    """A diploid GT for an ALT count (-1: missing), phased or not."""
    if count < 0:
        return "./."
    alleles = {0: ("0", "0"), 1: ("1", "0") if flip else ("0", "1"), 2: ("1", "1")}[count]
    return ("|" if phased else "/").join(alleles)


def write_vcf(path: Path, samples: list[str], calls: np.ndarray, extra: str = "") -> None:
    """A VCF of ``calls`` (variants × samples ALT counts, -1 missing) on chromosome 1."""
    rng = np.random.default_rng(0)
    lines = [HEADER + "\t" + "\t".join(samples)]
    for v, row in enumerate(calls.tolist()):
        fields = [gt(c, bool(rng.integers(2)), bool(rng.integers(2))) for c in row]
        vid = f"rs{v}" if v % 2 else "."
        lines.append(f"1\t{100 + v}\t{vid}\tA\tG\t.\tPASS\t.\tGT\t" + "\t".join(fields))
    text = "\n".join(lines) + "\n" + extra
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)


def known_matrix(n_variants: int, n_samples: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    calls = rng.integers(0, 3, size=(n_variants, n_samples))
    calls[rng.random(calls.shape) < 0.05] = -1
    return calls


def dosages(bed: Path) -> np.ndarray:
    """Variants × samples ALT dosages from the stored .bed, -1 for missing."""
    with open_bed(bed) as reader:
        values = reader.read(dtype="float32").T
    return np.where(np.isnan(values), -1, values).astype(np.int64)


@pytest.mark.parametrize("name", ["calls.vcf", "calls.vcf.gz"])
def test_vcf_conversion_round_trips_the_genotypes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(omics_vcf, "CALLS_PER_BLOCK", 7 * 13)  # blocks of 7: many, one partial
    samples = [f"S{i}" for i in range(13)]  # not a multiple of 4: padded bytes
    calls = known_matrix(40, 13)
    vcf = tmp_path / name
    write_vcf(vcf, samples, calls)
    assert VcfReader().sniff(vcf, vcf.read_bytes()[:1024])
    chunks = read_all(VcfReader(), context(vcf, tmp_path / "omics"))
    rows = samples_of(chunks)
    assert rows.column("sample_id").to_pylist() == samples
    assert set(rows.column("assay").to_pylist()) == {"genotype"}
    assert set(rows.column("file_format").to_pylist()) == {"bed"}
    bed = tmp_path / "omics" / rows.column("file_uri")[0].as_py()
    assert np.array_equal(dosages(bed), calls)
    bim = [line.split("\t") for line in bed.with_suffix(".bim").read_text().splitlines()]
    assert [b[1] for b in bim[:3]] == ["1:100:A:G", "rs1", "1:102:A:G"]
    assert {(b[4], b[5]) for b in bim} == {("G", "A")}  # A1 = ALT
    fam = bed.with_suffix(".fam").read_text().splitlines()
    assert fam[0] == "S0\tS0\t0\t0\t0\t-9"


def test_vcf_edge_calls_and_skipped_variants(tmp_path: Path) -> None:
    extra = (
        "1\t500\tm1\tA\tG,T\t.\t.\t.\tGT\t0/1\t1/2\t0/0\t0/0\n"
        "1\t600\tm2\tA\t.\t.\t.\t.\tGT\t0/0\t0/0\t0/0\t0/0\n"
        "2\t700\th1\tC\tT\t.\t.\t.\tGT\t./1\t1\t0\t1|1\n"
    )
    vcf = tmp_path / "edge.vcf"
    write_vcf(vcf, ["a", "b", "c", "d"], np.array([[0, 1, 2, -1]]), extra)
    chunks = read_all(VcfReader(), context(vcf, tmp_path / "omics"))
    assert chunks[0].skipped == {"multiallelic variants": 1, "variants without ALT": 1}
    bed = tmp_path / "omics" / samples_of(chunks).column("file_uri")[0].as_py()
    # half-call ./1 is missing; haploid 1 and 0 count as homozygous
    assert dosages(bed).tolist() == [[0, 1, 2, -1], [-1, 2, 0, 2]]


def test_vcf_with_a_broken_record_is_rejected_naming_its_line(tmp_path: Path) -> None:
    vcf = tmp_path / "broken.vcf"
    write_vcf(
        vcf, ["a", "b"], np.array([[0, 1], [1, 1]]), "1\tabc\t.\tA\tG\t.\t.\t.\tGT\t0/0\t0/1\n"
    )
    with pytest.raises(InputError, match=r"broken\.vcf:8: unreadable VCF record"):
        read_all(VcfReader(), context(vcf, tmp_path / "omics"))
    assert not any(p.is_file() for p in (tmp_path / "omics").rglob("*"))


def test_not_a_vcf_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "x.vcf"
    bad.write_text("hello\n")
    with pytest.raises(InputError, match=r"x\.vcf: not a readable VCF"):
        read_all(VcfReader(), context(bad, tmp_path / "omics"))


def test_vcf_of_the_synthetic_biobank_converts_to_its_bed_byte_for_byte(
    tmp_path: Path,
) -> None:
    """The biobank's .bed as VCF, converted back, gives the same .bed and .bim bytes."""
    out = tmp_path / "h"
    generate_hospital(out, 120, 5, workers=1)
    o = out / "omics"
    with open_bed(o / "genotypes.bed") as reader:
        values = reader.read(dtype="int8").T  # variants × samples, -127 missing
        samples = list(reader.iid)
    bim = [line.split("\t") for line in (o / "genotypes.bim").read_text().splitlines()]
    lines = [HEADER.replace("##contig=<ID=2>\n", "") + "\t" + "\t".join(samples)]
    codes = {0: "0/0", 1: "0/1", 2: "1/1", -127: "./."}
    for (chrom, vid, _, pos, alt, ref), row in zip(bim, values.tolist(), strict=True):
        fields = "\t".join(codes[c] for c in row)
        lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t.\t.\t.\tGT\t{fields}")
    vcf = tmp_path / "biobank.vcf.gz"
    vcf.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    rows = samples_of(read_all(VcfReader(), context(vcf, tmp_path / "omics")))
    bed = tmp_path / "omics" / rows.column("file_uri")[0].as_py()
    assert bed.read_bytes() == (o / "genotypes.bed").read_bytes()
    assert bed.with_suffix(".bim").read_bytes() == (o / "genotypes.bim").read_bytes()


def write_pgen(folder: Path, samples: list[str], calls: np.ndarray) -> dict[str, Path]:
    import pgenlib

    paths = {ext: folder / f"g.{ext}" for ext in ("pgen", "pvar", "psam")}
    writer = pgenlib.PgenWriter(bytes(paths["pgen"]), len(samples), calls.shape[0], False)
    for row in calls:
        writer.append_biallelic(np.where(row < 0, -9, row).astype(np.int8))
    writer.close()
    paths["pvar"].write_text(
        "#CHROM\tPOS\tID\tREF\tALT\n"
        + "".join(f"1\t{100 + v}\tv{v}\tA\tG\n" for v in range(calls.shape[0]))
    )
    paths["psam"].write_text("#IID\tSEX\n" + "".join(f"{s}\tNA\n" for s in samples))
    return paths


def test_pgen_fileset_is_stored_and_registered(tmp_path: Path) -> None:
    samples = [f"P{i}" for i in range(9)]
    paths = write_pgen(tmp_path, samples, known_matrix(25, 9))
    assert PgenReader().sniff(paths["pgen"], paths["pgen"].read_bytes()[:1024])
    ctx = context(paths["pgen"], tmp_path / "omics", pvar=paths["pvar"], psam=paths["psam"])
    rows = samples_of(read_all(PgenReader(), ctx))
    assert rows.column("sample_id").to_pylist() == samples
    assert set(rows.column("file_format").to_pylist()) == {"pgen"}
    stored = tmp_path / "omics" / rows.column("file_uri")[0].as_py()
    for ext, original in paths.items():
        assert stored.with_suffix(f".{ext}").read_bytes() == original.read_bytes()


def test_pgen_with_a_psam_of_another_fileset_is_rejected(tmp_path: Path) -> None:
    paths = write_pgen(tmp_path, ["a", "b", "c"], known_matrix(5, 3))
    paths["psam"].write_text("#IID\na\nb\n")
    ctx = context(paths["pgen"], tmp_path / "omics", pvar=paths["pvar"], psam=paths["psam"])
    with pytest.raises(InputError, match=r"g\.pgen: unreadable \.pgen"):
        read_all(PgenReader(), ctx)


def test_truncated_pgen_is_rejected(tmp_path: Path) -> None:
    paths = write_pgen(tmp_path, [f"s{i}" for i in range(40)], known_matrix(30, 40))
    paths["pgen"].write_bytes(paths["pgen"].read_bytes()[:-20])
    ctx = context(paths["pgen"], tmp_path / "omics", pvar=paths["pvar"], psam=paths["psam"])
    with pytest.raises(InputError, match=r"g\.pgen: unreadable \.pgen"):
        read_all(PgenReader(), ctx)
