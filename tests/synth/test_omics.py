"""The synthetic biobank files: PLINK genotypes, RNA-seq counts, manifest and truth."""

from __future__ import annotations

import csv
import gzip
import hashlib
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bed_reader import open_bed

from medlake.errors import UsageError
from medlake.synth.genetics import PLANTED_VARIANTS, draw_causal_genotypes, ldl_shift_mmol
from medlake.synth.omics import (
    MISSING_CALL,
    OmicsSubject,
    OmicsWriter,
    genotype_sample_id,
    pack_bed_block,
    rna_sample_id,
)

N_SUBJECTS = 800
N_RNA = 300
N_VARIANTS = 3_000
N_GENES = 1_000


def make_subjects(n: int = N_SUBJECTS, n_rna: int = N_RNA, seed: int = 0) -> list[OmicsSubject]:
    rng = np.random.default_rng(seed)
    causal = draw_causal_genotypes(rng, n)
    return [
        OmicsSubject(
            person_key=f"person-{i}",
            genotype_sample_id=genotype_sample_id(i + 1),
            rna_sample_id=rna_sample_id(2023, i + 1) if i < n_rna else None,
            sex="M" if rng.random() < 0.5 else "F",
            birth_year=int(rng.integers(1940, 2000)),
            population=i % 2,
            has_t2d=i % 2 == 0 if i < n_rna else bool(rng.random() < 0.2),
            causal_genotypes=causal[i],
            source_system="HIS",
            source_patient_id=f"H{100_000 + i}",
        )
        for i in range(n)
    ]


def write(out: Path, subjects: list[OmicsSubject], seed: int = 1, chunk: int = 250, **kw):
    writer = OmicsWriter(out, seed, n_variants=N_VARIANTS, n_genes=N_GENES, n_populations=2, **kw)
    for start in range(0, len(subjects), chunk):
        writer.add(subjects[start : start + chunk])
    return writer, writer.finish()


@pytest.fixture(scope="module")
def subjects() -> list[OmicsSubject]:
    return make_subjects()


@pytest.fixture(scope="module")
def written(tmp_path_factory, subjects):
    out = tmp_path_factory.mktemp("omics")
    writer, summary = write(out, subjects, block_variants=64)
    with open_bed(out / "omics" / "genotypes.bed") as bed:
        calls = bed.read(dtype="int8")
        props = {"sid": bed.sid, "iid": bed.iid, "fid": bed.fid, "sex": bed.sex,
                 "chrom": bed.chromosome, "pos": bed.bp_position, "a1": bed.allele_1}
    blocks = list(writer.genotype_simulator().blocks())
    return out, writer, summary, calls, props, blocks


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_bed_reads_back_as_the_simulated_blocks(written) -> None:
    _, _, summary, calls, props, blocks = written
    assert calls.shape == (N_SUBJECTS, N_VARIANTS) == (summary.n_genotyped, summary.n_variants)
    assert all(b.calls.shape[0] <= 64 for b in blocks)
    expected = np.concatenate([b.calls for b in blocks], axis=0).T
    assert np.array_equal(calls, expected)
    assert list(props["sid"]) == [v for b in blocks for v in b.variant_ids]
    assert list(props["a1"]) == [a for b in blocks for a in b.alt]


def test_fam_and_bim_follow_plink_conventions(written, subjects) -> None:
    _, _, _, _, props, _ = written
    assert list(props["iid"]) == [s.genotype_sample_id for s in subjects]
    assert list(props["fid"]) == list(props["iid"])
    assert list(props["sex"]) == [1 if s.sex == "M" else 2 for s in subjects]
    chrom = props["chrom"].astype(int)
    assert set(chrom) == set(range(1, 23))
    assert np.all(np.diff(chrom) >= 0)
    for c in range(1, 23):
        assert np.all(np.diff(props["pos"][chrom == c]) > 0)


def test_planted_variants_carry_the_subjects_causal_genotypes(written, subjects) -> None:
    _, _, _, calls, props, _ = written
    sids = list(props["sid"])
    causal = np.array([s.causal_genotypes for s in subjects])
    for j, v in enumerate(PLANTED_VARIANTS):
        col = sids.index(v.variant_id)
        assert props["chrom"][col] == v.chrom
        assert props["pos"][col] == v.pos
        observed = calls[:, col] != MISSING_CALL
        assert observed.mean() > 0.98
        assert np.array_equal(calls[observed, col], causal[observed, j])


def test_missing_calls_are_rare_with_a_few_poorly_called_variants(written) -> None:
    _, _, _, calls, _, blocks = written
    missing = calls == MISSING_CALL
    assert 0.003 < missing.mean() < 0.008
    per_variant = missing.mean(axis=0)
    assert 0.005 < (per_variant > 0.02).mean() < 0.05
    planned = np.concatenate([b.missing_rate for b in blocks])
    assert np.corrcoef(planned, per_variant)[0, 1] > 0.8


def test_allele_frequencies_match_each_population_target(written, subjects) -> None:
    _, _, _, calls, _, blocks = written
    target = np.concatenate([b.pop_alt_freq for b in blocks], axis=1)
    pops = np.array([s.population for s in subjects])
    for k in (0, 1):
        g = calls[pops == k].astype(float)
        g[g == MISSING_CALL] = np.nan
        observed = np.nanmean(g, axis=0) / 2
        assert np.abs(observed - target[k]).mean() < 0.015
        assert np.corrcoef(observed, target[k])[0, 1] > 0.99
    maf = np.minimum(target.mean(axis=0), 1 - target.mean(axis=0))
    assert 0.1 < (maf < 0.01).mean() < 0.35
    assert 0.05 < np.median(maf) < 0.3


def test_a_few_variants_are_out_of_hardy_weinberg(written) -> None:
    _, _, _, calls, _, blocks = written
    hwe_f = np.concatenate([b.hwe_f for b in blocks])
    p = np.concatenate([b.pop_alt_freq.mean(axis=0) for b in blocks])
    observed = calls != MISSING_CALL
    het = (calls == 1).sum(axis=0) / observed.sum(axis=0)
    expected = 2 * p * (1 - p)
    polymorphic = expected > 0.05
    bad = (hwe_f > 0) & polymorphic
    assert 0 < (hwe_f > 0).sum() < 0.01 * N_VARIANTS
    assert bad.sum() >= 2
    # inbreeding-like F estimated from the heterozygote deficit
    f_hat = 1 - het / expected
    assert f_hat[bad].mean() == pytest.approx(hwe_f[bad].mean(), abs=0.15)
    assert np.median(f_hat[~bad & polymorphic]) == pytest.approx(0, abs=0.03)


def test_populations_separate_on_the_first_principal_component(written, subjects) -> None:
    _, _, _, calls, _, _ = written
    g = calls.astype(float)
    g[g == MISSING_CALL] = np.nan
    mean = np.nanmean(g, axis=0)
    sd = np.nanstd(g, axis=0)
    keep = sd > 0.1
    z = np.nan_to_num((g[:, keep] - mean[keep]) / sd[keep])
    u, _, _ = np.linalg.svd(z, full_matrices=False)
    pc1 = u[:, 0]
    pops = np.array([s.population for s in subjects])
    assert abs(np.corrcoef(pc1, pops)[0, 1]) > 0.95


def test_a_regression_on_the_bed_recovers_the_ldl_effect(written, subjects) -> None:
    _, _, _, calls, props, _ = written
    rng = np.random.default_rng(3)
    causal = np.array([s.causal_genotypes for s in subjects])
    ldl = 3.2 + ldl_shift_mmol(causal) + rng.normal(0, 0.8, len(subjects))
    sids = list(props["sid"])
    for v in (v for v in PLANTED_VARIANTS if v.trait == "ldl"):
        x = calls[:, sids.index(v.variant_id)].astype(float)
        ok = x != MISSING_CALL
        slope, _ = np.polyfit(x[ok], ldl[ok], 1)
        assert slope == pytest.approx(v.effect, abs=0.12)


def test_planted_de_genes_stand_out_between_cases_and_controls(written, subjects) -> None:
    out, _, summary, _, _, _ = written
    with gzip.open(out / "omics" / "rnaseq_counts.tsv.gz", "rt") as f:
        header = f.readline().rstrip("\n").split("\t")
        genes, rows = [], []
        for line in f:
            gid, *values = line.rstrip("\n").split("\t")
            genes.append(gid)
            rows.append(values)
    counts = np.array(rows, dtype=np.int64)
    rna = [s for s in subjects if s.rna_sample_id]
    assert header == ["gene_id", *(s.rna_sample_id for s in rna)]
    assert counts.shape == (N_GENES, N_RNA)
    assert counts.min() >= 0
    genes_tsv = read_csv(out / "omics" / "genes.tsv", "\t")
    assert [g["gene_id"] for g in genes_tsv] == genes
    assert all(g.startswith("ENSG9") and len(g) == 15 for g in genes)
    de = {r["gene_id"]: float(r["log2_fold_change"])
          for r in read_csv(out / "truth" / "de_genes.csv")}
    assert len(de) == summary.n_de_genes == 50
    assert all(0.5 <= abs(lfc) <= 2.0 for lfc in de.values())

    case = np.array([s.has_t2d for s in rna])
    norm = counts / (counts.sum(axis=0) / counts.sum(axis=0).mean())
    ratio = np.log2((norm[:, case].mean(axis=1) + 1) / (norm[:, ~case].mean(axis=1) + 1))
    is_de = np.array([g in de for g in genes])
    # rank AUC of |log2 ratio|: DE genes against the rest
    ranks = np.argsort(np.argsort(np.abs(ratio))) + 1
    n1, n0 = is_de.sum(), (~is_de).sum()
    auc = (ranks[is_de].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    assert auc > 0.9
    signs = np.sign([ratio[genes.index(g)] for g in de])
    assert (signs == np.sign(list(de.values()))).mean() > 0.9


def test_counts_are_overdispersed_like_rnaseq(written, subjects) -> None:
    out, _, _, _, _, _ = written
    with gzip.open(out / "omics" / "rnaseq_counts.tsv.gz", "rt") as f:
        f.readline()
        counts = np.array([line.split("\t")[1:] for line in f], dtype=np.int64)
    controls = counts[:, [not s.has_t2d for s in subjects[:N_RNA]]]
    mean, var = controls.mean(axis=1), controls.var(axis=1)
    high = mean > 100
    assert high.sum() > 50
    assert np.median(var[high] / mean[high]) > 5  # Poisson would give 1
    assert 1 < np.log10(np.median(mean)) < 2.5
    assert (mean < 1).mean() > 0.01


def test_manifest_and_truth_link_samples_to_patients(written, subjects) -> None:
    out, _, _, _, _, _ = written
    manifest = read_csv(out / "omics" / "samples.csv")
    assert len(manifest) == N_SUBJECTS + N_RNA
    by_id = {s.genotype_sample_id: s for s in subjects} | {
        s.rna_sample_id: s for s in subjects if s.rna_sample_id
    }
    for row in manifest:
        s = by_id[row["sample_id"]]
        assert row["source_patient_id"] == s.source_patient_id
        assert row["source_system"] == "HIS"
        assert row["file_name"] == ("genotypes.bed" if row["assay"] == "genotype"
                                    else "rnaseq_counts.tsv.gz")
        assert "2018-01-01" <= row["collected_date"] <= "2024-12-31"
        if row["assay"] == "rnaseq":
            assert row["collected_date"].startswith("2023-")
    truth = read_csv(out / "truth" / "omics_samples.csv")
    assert {(r["sample_id"], r["person_key"]) for r in truth} == {
        (k, s.person_key) for k, s in by_id.items()
    }
    planted = read_csv(out / "truth" / "planted_variants.csv")
    assert [r["variant_id"] for r in planted] == [v.variant_id for v in PLANTED_VARIANTS]
    rna_meta = read_csv(out / "omics" / "rnaseq_samples.tsv", "\t")
    assert [r["batch"] for r in rna_meta[:97:96]] == ["RB001", "RB002"]


def test_same_seed_and_subjects_give_identical_bytes_however_chunked(
    tmp_path, written, subjects
) -> None:
    out, *_ = written
    write(tmp_path / "a", subjects, chunk=77, block_variants=7)
    assert digests(tmp_path / "a") == digests(out)
    write(tmp_path / "b", subjects, seed=2)
    other = digests(tmp_path / "b")
    for name in ("omics/genotypes.bed", "omics/genotypes.bim", "omics/rnaseq_counts.tsv.gz"):
        assert other[name] != digests(out)[name]


def test_genotype_memory_is_bounded_by_the_block(tmp_path) -> None:
    subjects = make_subjects(n=1_000, n_rna=0)
    writer = OmicsWriter(tmp_path, 5, n_variants=20_000, n_genes=10, n_populations=2,
                         block_variants=32)
    writer.add(subjects)
    tracemalloc.start()
    try:
        writer.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_matrix = 1_000 * 20_000  # bytes as int8
    assert peak < full_matrix / 8
    assert (tmp_path / "omics" / "genotypes.bed").stat().st_size == 3 + 20_000 * 250


def test_caps_keep_the_first_samples_and_count_the_rest(tmp_path, subjects) -> None:
    _, summary = write(tmp_path, subjects[:100], max_genotyped=30, max_rnaseq=10)
    assert (summary.n_genotyped, summary.dropped_genotyped) == (30, 70)
    assert (summary.n_rnaseq, summary.dropped_rnaseq) == (10, 90)
    fam = (tmp_path / "omics" / "genotypes.fam").read_text().splitlines()
    assert [line.split("\t")[1] for line in fam] == [
        s.genotype_sample_id for s in subjects[:30]
    ]


def test_bed_packing_puts_the_first_sample_in_the_low_bits() -> None:
    calls = np.array([[2, 1, 0, MISSING_CALL, 0]], dtype=np.int8)
    assert pack_bed_block(calls) == bytes([0b01_11_10_00, 0b00_00_00_11])


def test_bad_subjects_are_refused(tmp_path, subjects) -> None:
    writer = OmicsWriter(tmp_path, 1, n_populations=2)
    with pytest.raises(UsageError):
        writer.add([replace(subjects[0], population=2)])
    with pytest.raises(UsageError):
        writer.add([replace(subjects[0], causal_genotypes=np.zeros(2, dtype=np.int8))])
    writer.add([subjects[0]])
    with pytest.raises(UsageError):
        writer.add([subjects[0]])
