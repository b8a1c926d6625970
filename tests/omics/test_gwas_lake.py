"""Lake mode: phenotypes from cohorts, covariates from the person table and genotypes.

The reference is standalone mode (itself checked against PLINK 2) run on phenotype and
covariate files this test builds with pandas from the lake: cohort members, each
person's birth date and sex, and the PCs of the same samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from medlake.config import open_workspace
from medlake.errors import InputError
from medlake.omics.gwas.plink_io import GenotypeFile
from medlake.omics.gwas.qc import VariantFilter
from medlake.service.cohort import cohort_members, parse_definition
from medlake.service.gwas import run_gwas_files
from medlake.service.gwas_lake import (
    LakePhenotype,
    _pcs,
    genotype_samples,
    run_gwas_lake,
)
from medlake.service.workspace import open_lake

T2D = {
    "name": "t2d",
    "concept_sets": [
        {
            "id": 1,
            "name": "t2d",
            "items": [
                {"vocabulary_id": "ICD10CM", "concept_code": "E11", "include_descendants": True}
            ],
        }
    ],
    "primary_criteria": {
        "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
    },
}


# a feature spec whose feature becomes a covariate: hypertension diagnosed by the
# genotype sample's collection
HYPERTENSION = {
    "concept_sets": [
        {
            "id": 1,
            "name": "hypertension",
            "items": [
                {"vocabulary_id": "ICD10CM", "concept_code": "I10", "include_descendants": True}
            ],
        }
    ],
    "conditions": [{"name": "htn", "codeset_id": 1, "window": {"start": None, "end": 0}}],
}


def _hypertension_by(workspace: Path, samples: pd.DataFrame) -> np.ndarray:
    """The HYPERTENSION feature with pandas: 1 when the person has a condition of I10 or
    below on or before the sample's collection date."""
    with open_lake(open_workspace(workspace)) as engine:
        concept = engine.execute(engine.table("concept")).to_pandas()
        ancestor = engine.execute(engine.table("concept_ancestor")).to_pandas()
        events = engine.execute(
            engine.table("condition_occurrence").select(
                "person_id", "condition_concept_id", "condition_start_date"
            )
        ).to_pandas()
    top = concept.loc[(concept.vocabulary_id == "ICD10CM") & (concept.concept_code == "I10"),
                      "concept_id"]  # fmt: skip
    ids = set(top) | set(ancestor.loc[ancestor.ancestor_concept_id.isin(top),
                                      "descendant_concept_id"])  # fmt: skip
    events = events[events.condition_concept_id.isin(ids)]
    first = pd.to_datetime(events.groupby("person_id").condition_start_date.min())
    when = first.reindex(samples["person_id"]).to_numpy()
    collected = pd.to_datetime(samples["collected_date"]).to_numpy()
    return (when <= collected).astype(float)  # NaT compares False: 0


@pytest.mark.slow
@pytest.mark.parametrize("with_features", [False, True])
def test_cohort_phenotype_equals_standalone_on_files_built_from_the_lake(
    hospital_lake, tmp_path: Path, with_features: bool
) -> None:
    from medlake.service.extract_spec import parse_feature_spec

    workspace = hospital_lake.workspace
    definition = parse_definition(T2D)
    run = run_gwas_lake(
        workspace,
        LakePhenotype("T2D", case_cohort=definition),
        tmp_path / "lake",
        plots=False,
        filters=VariantFilter(maf=0.05),
        features=parse_feature_spec(HYPERTENSION) if with_features else None,
    )
    # the reference inputs, from the lake with pandas
    prefix, samples = genotype_samples(workspace)
    samples = samples.reset_index(drop=True)
    cases = set(cohort_members(workspace, definition).column("person_id").to_pylist())
    with open_lake(open_workspace(workspace)) as engine:
        person = engine.execute(engine.table("person")).to_pandas().set_index("person_id")
    samples = samples.assign(
        T2D=np.where(samples["person_id"].isin(cases), 2, 1),
        birth=pd.to_datetime(
            {
                "year": person.loc[samples["person_id"], "year_of_birth"].values,
                "month": person.loc[samples["person_id"], "month_of_birth"].values,
                "day": person.loc[samples["person_id"], "day_of_birth"].values,
            }
        ),
        SEX=person.loc[samples["person_id"], "gender_concept_id"].map({8507: 1, 8532: 2}).values,
    )
    collected = pd.to_datetime(samples["collected_date"])
    samples["AGE"] = (collected - samples["birth"]).dt.days / 365.25
    with GenotypeFile(prefix, "bed") as geno:
        order = {s: i for i, s in enumerate(geno.samples.iid)}
        where = np.array([order[s] for s in samples["sample_id"]])
        pcs = _pcs(geno, where, 4)
    pheno = pd.DataFrame({"#IID": samples["sample_id"], "T2D": samples["T2D"]})
    covar = pd.DataFrame(
        {"#IID": samples["sample_id"], "AGE": samples["AGE"], "SEX": samples["SEX"]}
    )
    if with_features:
        covar["HTN"] = _hypertension_by(workspace, samples)
        assert 0 < covar["HTN"].sum() < len(covar)  # a covariate that varies
    for i in range(4):
        covar[f"PC{i + 1}"] = pcs[:, i]
    pheno.to_csv(tmp_path / "pheno.tsv", sep="\t", index=False)
    covar.to_csv(tmp_path / "covar.tsv", sep="\t", index=False)
    (reference,) = run_gwas_files(
        prefix,
        "bed",
        tmp_path / "pheno.tsv",
        tmp_path / "ref",
        covar=tmp_path / "covar.tsv",
        plots=False,
        filters=VariantFilter(maf=0.05),
    )
    ours = pq.read_table(run.files["parquet"]).to_pandas()
    ref = pq.read_table(reference.files["parquet"]).to_pandas()
    assert run.samples == reference.samples == len(samples) > 50
    assert 0 < len(cases & set(samples["person_id"])) < len(samples)
    assert list(ours["id"]) == list(ref["id"])
    assert np.allclose(ours["beta"], ref["beta"], rtol=1e-8, equal_nan=True)
    assert np.allclose(ours["se"], ref["se"], rtol=1e-8, equal_nan=True)


def test_measurement_without_values_is_one_clear_error(hospital_lake, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no measurement 'NO-SUCH-CODE'"):
        run_gwas_lake(
            hospital_lake.workspace,
            LakePhenotype("X", measurement="NO-SUCH-CODE"),
            tmp_path / "x",
            plots=False,
        )


@pytest.mark.slow
def test_gwas_command_in_lake_mode(hospital_lake, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from medlake.service import access

    (tmp_path / "t2d.json").write_text(json.dumps(T2D))
    env = {k: v for k, v in os.environ.items() if k != "MEDLAKE_WORKSPACE"}
    # analyses on the lake are for researchers and stewards, not the workspace's admin
    workspace = hospital_lake.copy(tmp_path / "ws")
    access.add_user(workspace, "steward1", "steward", as_user=access.login_name())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medlake.cli.main",
            "--as",
            "steward1",
            "gwas",
            "-w",
            str(workspace),
            "--case-cohort",
            str(tmp_path / "t2d.json"),
            "--name",
            "T2D",
            "--pcs",
            "2",
            "--no-plots",
            "--out",
            str(tmp_path / "cli"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert run["model"] == "logistic"
    assert run["samples"] > 50
    report = pd.read_csv(tmp_path / "cli.T2D.glm.logistic.hybrid", sep="\t")
    assert len(report) == run["variants"] > 1000


@pytest.mark.slow
def test_lake_run_reports_both_passes_and_a_cancelled_run_leaves_nothing(
    hospital_lake, tmp_path: Path
) -> None:
    from medlake.errors import JobCancelledError

    calls: list[tuple[int, int]] = []
    phenotype = LakePhenotype("T2D", case_cohort=parse_definition(T2D))
    run_gwas_lake(hospital_lake.workspace, phenotype, tmp_path / "full" / "run", plots=False,
                  progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    prefix, _ = genotype_samples(hospital_lake.workspace)
    with GenotypeFile(prefix, "bed" if Path(f"{prefix}.bed").exists() else "pgen") as geno:
        variants = len(geno.variants)
    # the principal components' pass over the file, then the association's
    assert {total for _, total in calls} == {2 * variants}
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert variants in done
    assert done[-1] == 2 * variants

    for cancel_at in (1, len(calls)):  # in the PC pass; at the association's last block
        seen: list[int] = []

        def cancel(done: int, total: int, seen: list[int] = seen, at: int = cancel_at) -> None:
            seen.append(done)
            if len(seen) == at:
                raise JobCancelledError("cancelled by the test")

        out = tmp_path / f"cancel{cancel_at}"
        out.mkdir()
        with pytest.raises(JobCancelledError):
            run_gwas_lake(hospital_lake.workspace, phenotype, out / "run", progress=cancel)
        assert list(out.iterdir()) == []
