"""medlake de finds the differentially expressed genes the synthetic hospital planted.

The generator plants 5 % of genes with |log2 fold change| 0.5–2 between type 2 diabetes
cases and the other RNA-sequenced persons (``truth/de_genes.csv``). The shared 400-patient
hospital has ~20 RNA-seq samples, too few to find effects of 0.5, so this builds a
5,000-patient hospital (~210 RNA-seq samples, ~30 cases), ingests its identities,
diagnoses and omics, and runs DE on the lake in both modes: groups from cohorts (type 2
diabetes diagnosed, ICD-10-CM E11 and below, vs everyone else) and groups from a sample
table. Recall of the planted genes at padj < 0.05 must be at least 0.9, and the share of
calls that are not planted at most twice the FDR asked for.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from medlake.service.de import DEReport, run_de, run_demo_de
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace
from medlake.synth import generate_hospital

PATIENTS, SEED = 5000, 7
T2D_CODES = {"E11.9", "E11.65", "E11.22"}  # what the generator diagnoses (synth.chunk)
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Biobank:
    hospital: Path
    workspace: Path

    @property
    def planted(self) -> set[str]:
        with (self.hospital / "truth" / "de_genes.csv").open(encoding="ascii") as handle:
            return {row["gene_id"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def biobank(tmp_path_factory: pytest.TempPathFactory) -> Biobank:
    root = tmp_path_factory.mktemp("de-biobank")
    hospital = root / "hospital"
    generate_hospital(hospital, PATIENTS, SEED)
    workspace = root / "workspace"
    init_workspace(workspace, name="de-recovery")
    # identities and diagnoses (HIS, EMR) then the biobank; lab messages are not needed
    ingest_paths(
        workspace,
        [hospital / "his"],
        source_system="his",
        options={"mapping": hospital / "his" / "medlake-mapping.toml"},
    )
    ingest_paths(workspace, [hospital / "emr"], source_system="emr")
    report = ingest_paths(workspace, [hospital / "omics"], source_system="biobank")
    assert not report.failed
    return Biobank(hospital, workspace)


def _score(report: DEReport, planted: set[str]) -> tuple[float, float]:
    called = set(report.table.index[report.table["padj"] < report.result.design.alpha])
    recall = len(called & planted) / len(planted)
    false_share = len(called - planted) / max(len(called), 1)
    return recall, false_share


def test_planted_genes_found_with_cohort_groups(biobank: Biobank, tmp_path: Path) -> None:
    """The demo's run: T2D diagnosed (a cohort) vs every other RNA-seq sample."""
    report = run_demo_de(biobank.workspace, tmp_path / "t2d")
    assert report.result.n_case >= 20
    assert report.result.n_control >= 100
    recall, false_share = _score(report, biobank.planted)
    assert recall >= 0.9, recall
    assert false_share <= 2 * report.result.design.alpha, false_share
    for name in ("tsv", "parquet", "volcano.png", "volcano.html", "ma.png", "ma.html"):
        assert report.files[name].stat().st_size > 0


def test_planted_genes_found_with_a_sample_table(biobank: Biobank, tmp_path: Path) -> None:
    """Groups from truth (who has T2D), the sequencing batch as a covariate."""
    truth = biobank.hospital / "truth"
    conditions = pd.read_csv(truth / "conditions.csv", dtype=str)
    diabetic = set(conditions.loc[conditions["icd10"].isin(T2D_CODES), "person_key"])
    samples = pd.read_csv(truth / "omics_samples.csv", dtype=str)
    samples = samples[samples["assay"] == "rnaseq"]
    sheet = pd.read_csv(biobank.hospital / "omics" / "rnaseq_samples.tsv", sep="\t", dtype=str)
    table = sheet.merge(samples[["sample_id", "person_key"]], on="sample_id")
    table["t2d"] = table["person_key"].isin(diabetic).map({True: "yes", False: "no"})
    path = tmp_path / "samples.tsv"
    table[["sample_id", "t2d", "batch"]].to_csv(path, sep="\t", index=False)
    report = run_de(
        out=None,
        workspace_dir=biobank.workspace,
        samples=path,
        condition="t2d",
        case="yes",
        control="no",
        covariates=["batch"],
    )
    assert report.result.n_case + report.result.n_control == len(table)
    recall, false_share = _score(report, biobank.planted)
    assert recall >= 0.9, recall
    assert false_share <= 2 * report.result.design.alpha, false_share
