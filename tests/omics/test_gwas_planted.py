"""The synthetic hospital's planted causal variants are found again (scored on truth/).

A 5,000-patient hospital (~1,000 genotyped, as the demo) is synthesized once. The LDL
phenotype is each person's latest LDL cholesterol (LOINC 22748-8) in the EMR's FHIR
Observations, joined to genotype samples through truth/ (the person behind each EMR
patient and each genotype sample); T2D cases are the persons truth/ gives an E11
diagnosis. The GWAS then runs in standalone mode on the biobank's PLINK files with sex
and 4 genotype PCs as covariates, on variants with MAF >= 1 %.

Expected: the three LDL variants at P < 5e-8; the T2D variants at P < 1e-3 (the
generator plants them for suggestive significance at this size, see
medlake.synth.genetics); no other variant at P < 5e-8 (expected false positives:
20,000 × 5e-8 = 0.001).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from medlake.omics.gwas.plink_io import GenotypeFile
from medlake.omics.gwas.qc import VariantFilter, principal_components
from medlake.service.gwas import run_gwas_files

PATIENTS = 5000
SEED = 1
GENOME_WIDE = 5e-8


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medlake.synth import generate_hospital

    root = tmp_path_factory.mktemp("gwas-hospital") / "hospital"
    generate_hospital(root, PATIENTS, SEED)
    return root


def _latest_ldl_by_person(hospital: Path) -> dict[str, float]:
    """Latest EMR LDL value per person_key (the reference phenotype, from the export)."""
    mrn_person = {}
    with (hospital / "truth" / "source_records.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["system"] == "EMR":
                mrn_person[row["source_patient_id"]] = row["person_key"]
    uuid_person = {}
    for line in (hospital / "emr" / "Patient.ndjson").open(encoding="utf-8"):
        patient = json.loads(line)
        for ident in patient.get("identifier", []):
            if ident["value"] in mrn_person:
                uuid_person[patient["id"]] = mrn_person[ident["value"]]
    latest: dict[str, tuple[str, float]] = {}
    for line in (hospital / "emr" / "Observation.ndjson").open(encoding="utf-8"):
        if '"22748-8"' not in line:
            continue
        obs = json.loads(line)
        person = uuid_person.get(obs["subject"]["reference"].removeprefix("Patient/"))
        when, value = obs["effectiveDateTime"], obs["valueQuantity"]["value"]
        if person and (person not in latest or when > latest[person][0]):
            latest[person] = (when, float(value))
    return {p: v for p, (_, v) in latest.items()}


def _write_inputs(hospital: Path, out: Path) -> tuple[Path, Path, Path]:
    """PLINK 2 phenotype (LDL, T2D 1/2) and covariate (SEX, PC1-4) files."""
    prefix = hospital / "omics" / "genotypes"
    samples = pd.read_csv(hospital / "truth" / "omics_samples.csv")
    person_of = dict(zip(samples["sample_id"], samples["person_key"], strict=True))
    conditions = pd.read_csv(hospital / "truth" / "conditions.csv")
    t2d = set(conditions.loc[conditions["icd10"].str.startswith("E11"), "person_key"])
    ldl = _latest_ldl_by_person(hospital)
    with GenotypeFile(prefix, "bed") as geno:
        iids = geno.samples.iid
        pcs = principal_components((c for _, _, c in geno.blocks(4096)), len(iids), 4)
        sex = geno.samples.sex
    persons = [person_of.get(s) for s in iids]
    pheno = pd.DataFrame({
        "#FID": iids, "IID": iids,
        "LDL": [ldl.get(p, np.nan) if p else np.nan for p in persons],
        "T2D": [2 if p in t2d else 1 for p in persons],
    })  # fmt: skip
    covar = pd.DataFrame({"#FID": iids, "IID": iids, "SEX": sex})
    for i in range(4):
        covar[f"PC{i + 1}"] = pcs[:, i]
    pheno.to_csv(out / "pheno.tsv", sep="\t", index=False, na_rep="NA")
    covar.to_csv(out / "covar.tsv", sep="\t", index=False)
    return prefix, out / "pheno.tsv", out / "covar.tsv"


@pytest.mark.slow
def test_planted_variants_are_found_with_no_false_positives(hospital: Path, tmp_path: Path):
    prefix, pheno, covar = _write_inputs(hospital, tmp_path)
    # MAF >= 1 %, as GWAS practice: a variant carried by 2 people is outlier-driven
    # (seen here: MAC 2, beta -3.7 mmol/L, P 1e-8), and its P is not calibrated
    flt = VariantFilter(maf=0.01)
    runs = run_gwas_files(prefix, "bed", pheno, tmp_path / "gwas", covar=covar, filters=flt,
                          plots=False)  # fmt: skip
    truth = pd.read_csv(hospital / "truth" / "planted_variants.csv")
    by_trait = {"LDL": "ldl", "T2D": "t2d"}
    for run in runs:
        results = pq.read_table(run.files["parquet"]).to_pandas().set_index("id")
        planted = truth.loc[truth["trait"] == by_trait[run.phenotype], "variant_id"]
        assert run.samples > 400
        threshold = GENOME_WIDE if run.phenotype == "LDL" else 1e-3
        assert (results.loc[planted, "p"] < threshold).all(), results.loc[planted, "p"]
        hits = set(results.index[results["p"] < GENOME_WIDE])
        assert hits <= set(truth["variant_id"]), hits - set(truth["variant_id"])
        assert 0.9 < run.lambda_gc < 1.1  # PCs and sex leave no inflation
