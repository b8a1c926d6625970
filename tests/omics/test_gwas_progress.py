"""Progress and cancellation of the long GWAS and DE entry points (what the server's jobs
runner relies on): ``progress(done, total)`` per block or step, and an exception raised
from it stops the run, propagates unchanged and leaves no output file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from medlake.errors import JobCancelledError
from medlake.omics.gwas.association import Backend, GlmOptions, run_glm
from medlake.service.de import run_de
from medlake.service.gwas import run_gwas_files

from .gwas_helpers import FIXTURE, fixture_inputs

DE_FIXTURE = Path(__file__).parent / "fixtures" / "deseq2"


class Recorder:
    """A progress callback that records its calls and raises at call ``cancel_at``."""

    def __init__(self, cancel_at: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.cancel_at = cancel_at

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        if self.cancel_at is not None and len(self.calls) >= self.cancel_at:
            raise JobCancelledError("cancelled by the test")


def _standalone(out: Path, progress: Recorder | None) -> list:
    return run_gwas_files(
        FIXTURE / "small", "bed", FIXTURE / "pheno.tsv", out,
        covar=FIXTURE / "covar.tsv", plots=True, backend="numpy", progress=progress,
    )  # fmt: skip


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pheno", ["QT", "CC"])
def test_blocks_report_progress_and_threads_change_nothing(pheno: str, threads: int) -> None:
    geno, phenos, covariates = fixture_inputs()
    options = GlmOptions(model="linear" if pheno == "QT" else "logistic", block_variants=16)
    reference_options = GlmOptions(model=options.model, block_variants=240)
    with geno:
        total = len(geno.variants)
        progress = Recorder()
        backend = Backend("numpy", "cpu", threads=threads)
        got = pa.Table.from_batches(
            list(run_glm(geno, phenos[pheno], covariates, options, backend, progress))
        )
        one = Backend("numpy", "cpu", threads=1)
        whole = pa.Table.from_batches(
            list(run_glm(geno, phenos[pheno], covariates, reference_options, one))
        )
    stops = [done for done, _ in progress.calls]
    assert stops == [*range(16, total, 16), total]  # every block, in file order
    assert {t for _, t in progress.calls} == {total}
    # blocks run in parallel or one by one, small or whole: the same results in order
    assert got.column("id").to_pylist() == whole.column("id").to_pylist()
    for column in ("beta", "se", "p", "obs_ct", "a1_freq"):
        a = got.column(column).to_numpy(zero_copy_only=False)
        b = whole.column(column).to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(a, b, rtol=1e-9, equal_nan=True, err_msg=column)


def test_standalone_progress_counts_every_phenotype_pass(tmp_path: Path) -> None:
    progress = Recorder()
    runs = _standalone(tmp_path / "run", progress)
    variants = 240
    assert [r.phenotype for r in runs] == ["QT", "CC"]
    totals = {t for _, t in progress.calls}
    assert totals == {2 * variants}
    done = [d for d, _ in progress.calls]
    assert done == sorted(done)
    assert done[-1] == 2 * variants
    assert variants in done  # the first phenotype's pass ends half way


@pytest.mark.parametrize("cancel_at", [1, "second phenotype"])
def test_cancelled_standalone_run_leaves_no_file(tmp_path: Path, cancel_at: object) -> None:
    calls = len(_all_calls(tmp_path))
    at = 1 if cancel_at == 1 else calls  # the last call is in the second phenotype's pass
    out = tmp_path / "cancelled" / "run"
    out.parent.mkdir()
    progress = Recorder(cancel_at=at)
    with pytest.raises(JobCancelledError):
        _standalone(out, progress)
    assert len(progress.calls) == at
    assert sorted(p.name for p in out.parent.iterdir()) == []


def _all_calls(tmp_path: Path) -> list[tuple[int, int]]:
    """The progress calls of a whole run (to cancel at a chosen one)."""
    progress = Recorder()
    _standalone(tmp_path / "full" / "run", progress)
    return progress.calls


def test_cancelled_rerun_keeps_the_earlier_complete_reports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _standalone(out, None)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # cancelled in the first phenotype's pass: nothing of that pass replaced a report
    with pytest.raises(JobCancelledError):
        _standalone(out, Recorder(cancel_at=1))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert not any(name.endswith(".part") for name in after)
    assert set(after) <= set(before)
    assert all(after[name] == before[name] for name in after)


def _de(out: Path | None, progress: Recorder | None):
    return run_de(
        out=out, counts=DE_FIXTURE / "counts.tsv", samples=DE_FIXTURE / "samples.tsv",
        condition="condition", case="case", control="control", progress=progress,
    )  # fmt: skip


def test_de_reports_each_step_and_stops_when_cancelled(tmp_path: Path) -> None:
    progress = Recorder()
    report = _de(tmp_path / "de", progress)
    done = [d for d, _ in progress.calls]
    total = progress.calls[-1][1]
    assert done == list(range(1, total + 1))
    assert total >= 10
    assert all(report.files[k].is_file() for k in ("tsv", "parquet"))
    # the step-by-step fit is PyDESeq2's own deseq2(): same numbers
    reference = _pydeseq2_reference()
    for column in ("baseMean", "log2FoldChange", "lfcSE", "pvalue", "padj"):
        np.testing.assert_allclose(
            report.table[column].to_numpy(), reference[column].to_numpy(),
            rtol=1e-12, equal_nan=True, err_msg=column,
        )  # fmt: skip
    for cancel_at in (1, total // 2, total):
        out = tmp_path / f"cancel{cancel_at}"
        out.mkdir()
        recorder = Recorder(cancel_at=cancel_at)
        with pytest.raises(JobCancelledError):
            _de(out / "de", recorder)
        assert len(recorder.calls) == cancel_at
        assert list(out.iterdir()) == []


def _pydeseq2_reference():
    """The fixture through ``DeseqDataSet.deseq2()`` in one call (the same R-matched
    inference and data set class medlake uses), then the same Wald tests."""
    import warnings

    from pydeseq2.ds import DeseqStats

    from medlake.omics.expression import align, read_counts_file, read_sample_table
    from medlake.omics.expression.r_matched import RMatchedDeseqDataSet, RMatchedInference

    data = align(read_counts_file(DE_FIXTURE / "counts.tsv"),
                 read_sample_table(DE_FIXTURE / "samples.tsv"), "condition", [],
                 source="samples.tsv")  # fmt: skip
    inference = RMatchedInference(n_cpus=1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        dds = RMatchedDeseqDataSet(counts=data.counts, metadata=data.samples,
                                   design="~condition", refit_cooks=True,
                                   inference=inference, quiet=True)  # fmt: skip
        dds.deseq2()
        stats = DeseqStats(dds, contrast=["condition", "case", "control"], alpha=0.05,
                           cooks_filter=True, independent_filter=True, inference=inference,
                           quiet=True)  # fmt: skip
        stats.summary()
    return stats.results_df
