"""GWAS in the lake: genotypes registered in ``omics_sample``, phenotypes from the
clinical data, covariates age, sex and genotype principal components.

Phenotypes (:class:`LakePhenotype`):

* **case/control** from cohorts: members of the case cohort are cases; members of the
  control cohort (or, without one, every other genotyped person) controls; a person in
  both is left out;
* **quantitative**: a measurement (``measurement_source_value``, e.g. the LOINC code
  ``22748-8`` of LDL cholesterol, or a ``measurement_concept_id``), each person's
  latest value in an optional date window, optionally rank-based inverse-normal
  transformed (Blom offsets).

One genotype sample per linked person (the latest collected); age in years at that
sample's collection (or today when unknown), sex from ``person.gender_concept_id``
(8507 male = 1, 8532 female = 2, as PLINK codes it), and ``n_pcs`` principal components
of common variants (MAF ≥ 5 %, thinned to at most 20,000) over the analysed samples.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from medlake.access import Permission
from medlake.cohort.model import CohortDefinition
from medlake.config import open_workspace
from medlake.errors import InputError, UsageError
from medlake.log import get_logger
from medlake.omics.gwas.association import BackendName, FirthMode, GlmOptions
from medlake.omics.gwas.plink_io import GenotypeFile
from medlake.omics.gwas.qc import VariantFilter, principal_components
from medlake.quality.catalogue import plausible_values
from medlake.service.cohort import load_definition, members_for_service
from medlake.service.extract_features import clinical_features
from medlake.service.extract_spec import FeatureSpec, load_feature_spec
from medlake.service.gwas import GwasRun, Progress, run_association, shifted_progress
from medlake.service.policy import authorized, record_read
from medlake.service.workspace import open_lake

log = get_logger(__name__)

GENOTYPE_ASSAY = "genotype"
MALE, FEMALE = 8507, 8532
PC_MAX_VARIANTS = 20_000


@dataclass(frozen=True)
class LakePhenotype:
    """What to associate: a case/control pair of cohorts, or a measurement."""

    name: str
    case_cohort: Path | CohortDefinition | None = None
    control_cohort: Path | CohortDefinition | None = None
    measurement: str | int | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    inverse_normal: bool = False

    def __post_init__(self) -> None:
        if (self.case_cohort is None) == (self.measurement is None):
            raise UsageError("a lake phenotype is a case cohort or a measurement, not both")
        if self.control_cohort is not None and self.case_cohort is None:
            raise UsageError("a control cohort needs a case cohort")


@authorized(Permission.READ_IDENTIFIED)
def genotype_samples(workspace_dir: Path | None) -> tuple[Path, pd.DataFrame]:
    """(genotype fileset prefix, linked samples: sample_id, person_id, collected_date).

    One sample per person, the latest collected; all must be in one registered fileset.
    Real ids and dates: stewards (GWAS uses :func:`_genotype_samples` inside its check).
    """
    return _genotype_samples(workspace_dir)


def _genotype_samples(workspace_dir: Path | None) -> tuple[Path, pd.DataFrame]:
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        registry = engine.table("omics_sample")
        rows = engine.execute(
            registry.filter(
                (registry.assay == GENOTYPE_ASSAY) & registry.person_id.notnull()
            ).select("sample_id", "file_uri", "file_format", "person_id", "collected_date")
        ).to_pandas()
    if rows.empty:
        raise InputError(f"{workspace.root}: no genotype sample is registered and linked")
    files = rows["file_uri"].unique()
    if len(files) > 1:
        raise InputError(f"genotypes are registered in {len(files)} filesets; merge them first")
    rows = rows.sort_values(["person_id", "collected_date", "sample_id"], na_position="first")
    rows = rows.drop_duplicates("person_id", keep="last")
    data = workspace.omics_dir / files[0]
    return data.with_suffix(""), rows[["sample_id", "person_id", "collected_date"]]


def _cohort_persons(workspace_dir: Path | None, cohort: Path | CohortDefinition) -> set[int]:
    definition = load_definition(cohort) if isinstance(cohort, Path) else cohort
    return set(members_for_service(workspace_dir, definition).column("person_id").to_pylist())


def _measurement_values(workspace_dir: Path | None, pheno: LakePhenotype) -> pd.Series:
    """Each person's latest value of the measurement (in the window), by person_id."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        m = engine.table("measurement")
        if isinstance(pheno.measurement, int):
            where = m.measurement_concept_id == pheno.measurement
        else:
            where = m.measurement_source_value == str(pheno.measurement)
        where &= m.value_as_number.notnull()
        if pheno.start is not None:
            where &= m.measurement_date >= ibis.literal(pheno.start)
        if pheno.end is not None:
            where &= m.measurement_date <= ibis.literal(pheno.end)
        rows = engine.execute(
            m.filter(where).select("person_id", "measurement_date", "measurement_datetime",
                                   "value_as_number")
        ).to_pandas()  # fmt: skip
    if rows.empty:
        raise InputError(f"no measurement {pheno.measurement!r} with a value in the lake")
    rows = _plausible_only(rows, pheno.measurement)
    rows = rows.sort_values(["person_id", "measurement_date", "measurement_datetime"])
    return (
        rows.drop_duplicates("person_id", keep="last")
        .set_index("person_id")["value_as_number"]
        .astype(np.float64)
    )


def _plausible_only(rows: pd.DataFrame, code: str | int | None) -> pd.DataFrame:
    """Drop values outside the data-quality checks' plausible range for the code.

    An impossible value (a negative LDL, a unit slip of 100x) as a person's latest one
    would be an extreme phenotype that rare variants "explain" by chance; the checks
    already flag such rows, so the phenotype takes each person's latest plausible value.
    """
    ranges = {row["concept_code"]: (float(row["low"]), float(row["high"]))
              for row in plausible_values()}  # fmt: skip
    if str(code) not in ranges:
        return rows
    low, high = ranges[str(code)]
    keep = rows["value_as_number"].between(low, high)
    if not keep.all():
        log.info("phenotype %s: %d implausible values left out (outside %g-%g)", code,
                 int((~keep).sum()), low, high)  # fmt: skip
    if not keep.any():
        raise InputError(f"no plausible value of measurement {code!r} in the lake")
    return rows[keep]


def inverse_normal(values: np.ndarray) -> np.ndarray:
    """Rank-based inverse-normal transform (Blom 1958: ``(r - 3/8) / (n + 1/4)``); NaN kept."""
    out = np.full(values.shape, np.nan)
    ok = ~np.isnan(values)
    ranks = stats.rankdata(values[ok])
    out[ok] = stats.norm.ppf((ranks - 0.375) / (ok.sum() + 0.25))
    return out


def _demographics(workspace_dir: Path | None, persons: list[int]) -> pd.DataFrame:
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        p = engine.table("person")
        return engine.execute(
            p.filter(p.person_id.isin(persons)).select(
                "person_id", "year_of_birth", "month_of_birth", "day_of_birth",
                "gender_concept_id")
        ).to_pandas().set_index("person_id")  # fmt: skip


@authorized(Permission.ANALYZE)
def run_gwas_lake(
    workspace_dir: Path | None,
    phenotype: LakePhenotype,
    out: Path,
    *,
    n_pcs: int = 4,
    firth: FirthMode = "fallback",
    filters: VariantFilter | None = None,
    backend: BackendName = "auto",
    plots: bool = True,
    progress: Progress | None = None,
    features: Path | FeatureSpec | None = None,
) -> GwasRun:
    """GWAS of ``phenotype`` on the lake's genotypes, adjusted for age, sex and PCs.

    Writes the same files as standalone mode under ``out`` (a prefix) and returns the
    run's summary. ``filters`` default to MAF >= 1 %. ``features``: a feature spec (as
    ``medlake extract`` takes) whose clinical features (conditions, drugs,
    measurements) become covariates too, with each person's sample collection date as
    the index date of their windows; a person without a value (e.g. no measurement in
    the window) is left out, as PLINK leaves out a sample with a missing covariate.
    """
    prefix, samples = _genotype_samples(workspace_dir)
    kind = "pgen" if Path(f"{prefix}.pgen").exists() else "bed"
    persons = samples["person_id"].astype(np.int64).to_numpy()
    from medlake.service.mirror import refuse_if_frozen

    refuse_if_frozen(workspace_dir)  # its outputs are writes
    if phenotype.case_cohort is not None:
        cases = _cohort_persons(workspace_dir, phenotype.case_cohort)
        controls = (
            _cohort_persons(workspace_dir, phenotype.control_cohort)
            if phenotype.control_cohort is not None
            else set(persons.tolist()) - cases
        )
        value = np.where(np.isin(persons, list(cases)), 1.0, np.nan)
        value[np.isin(persons, list(controls - cases))] = 0.0
        model = "logistic"
    else:
        latest = _measurement_values(workspace_dir, phenotype)
        value = latest.reindex(persons).to_numpy(dtype=np.float64)
        if phenotype.inverse_normal:
            value = inverse_normal(value)
        model = "linear"
    demo = _demographics(workspace_dir, persons.tolist()).reindex(persons)
    collected = pd.to_datetime(samples["collected_date"]).fillna(pd.Timestamp.today())
    birth = pd.to_datetime(
        {"year": demo["year_of_birth"], "month": demo["month_of_birth"].fillna(7),
         "day": demo["day_of_birth"].fillna(1)}, errors="coerce")  # fmt: skip
    age = (collected.to_numpy() - birth.to_numpy()) / np.timedelta64(1, "D") / 365.25
    sex = demo["gender_concept_id"].map({MALE: 1.0, FEMALE: 2.0}).to_numpy(dtype=np.float64)
    with open_lake(open_workspace(workspace_dir)) as engine:  # the persons whose data it reads
        record_read(engine, "gwas", phenotype.name, person_ids=persons[~np.isnan(value)].tolist(),
                    detail={"out": str(out)})  # fmt: skip
    with GenotypeFile(prefix, kind) as geno:
        position = {s: i for i, s in enumerate(geno.samples.iid)}
        where = np.array([position.get(s, -1) for s in samples["sample_id"]])
        if (where < 0).any():
            raise InputError(f"{prefix}: registered samples missing from the fileset")
        n_all = len(geno.samples)
        pheno_all = np.full(n_all, np.nan)
        pheno_all[where] = value
        extra = (np.zeros((persons.size, 0)) if features is None
                 else _feature_covariates(workspace_dir, features, persons, collected))  # fmt: skip
        n_fixed = 2 + extra.shape[1]
        covariates = np.full((n_all, n_fixed + n_pcs), np.nan)
        covariates[where, 0] = age
        covariates[where, 1] = sex
        covariates[where, 2:n_fixed] = extra
        complete = ~np.isnan(value) & ~np.isnan(age) & ~np.isnan(sex) & ~np.isnan(extra).any(1)
        analysed = where[complete]
        if analysed.size < 10 + n_pcs:
            raise InputError(f"only {analysed.size} genotyped persons have the phenotype")
        # progress: the principal components' pass over the file, then the association's
        passes = 2 if n_pcs else 1
        total = passes * len(geno.variants)
        if n_pcs:
            covariates[analysed, n_fixed:] = _pcs(geno, analysed, n_pcs, progress, total)
        # default MAF >= 1 %: rarer variants' P values are outlier-driven, not calibrated
        options = GlmOptions(model=model, firth=firth, filters=filters or VariantFilter(maf=0.01))
        association = (None if progress is None
                       else shifted_progress(progress, (passes - 1) * len(geno.variants), total))
        return run_association(geno, phenotype.name, pheno_all, covariates, options, out,
                               backend=backend, plots=plots, progress=association)  # fmt: skip


def _feature_covariates(
    workspace_dir: Path | None,
    features: Path | FeatureSpec,
    persons: np.ndarray,
    collected: pd.Series,
) -> np.ndarray:
    """``(persons, features)`` float64 clinical features at each sample's collection date
    (NaN where a person has no value)."""
    spec = load_feature_spec(features) if isinstance(features, Path) else features
    if spec.genotypes or spec.expression:
        raise UsageError("feature spec: genotype and expression features are not GWAS "
                         "covariates (use conditions, drugs or measurements)")  # fmt: skip
    columns = spec.feature_columns()
    if not columns:
        raise UsageError("feature spec: no condition, drug or measurement feature")
    members = pa.table({
        "person_id": pa.array(persons, pa.int64()),
        "cohort_start_date": pa.array(pd.to_datetime(collected).dt.date.to_list(), pa.date32()),
    })  # fmt: skip
    with open_lake(open_workspace(workspace_dir)) as engine:
        table = clinical_features(engine, members, spec, spec.concept_sets)
    return np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in columns]
    )


def _pcs(
    geno: GenotypeFile,
    samples: np.ndarray,
    n_pcs: int,
    progress: Progress | None = None,
    total: int = 0,
) -> np.ndarray:
    """Principal components of the analysed samples from common, thinned variants;
    ``progress(variants read, total)`` after each block read."""
    step = max(1, len(geno.variants) // PC_MAX_VARIANTS)

    def blocks():  # common variants only, every step-th one
        for _, stop, calls in geno.blocks(4096):
            sub = calls[::step, samples] if step > 1 else calls[:, samples]
            present = sub >= 0
            p = np.where(present, sub, 0).sum(1) / np.maximum(2 * present.sum(1), 1)
            yield sub[np.minimum(p, 1 - p) >= 0.05]
            if progress is not None:
                progress(stop, total)

    return principal_components(blocks(), samples.size, n_pcs)
