"""Genome-wide association: one regression per variant, as PLINK 2 ``--glm`` does it.

:func:`run_glm` streams the genotype file in blocks of variants and yields one Arrow
record batch of results per block, with PLINK 2's columns and conventions:

* samples are those with a phenotype and every covariate; a sample whose call is
  missing is left out of that variant's regression only (OBS_CT counts the rest);
* A1 is the non-major allele (ALT unless ALT's frequency among founders with a call
  exceeds REF's, then REF; ties as PLINK 2's rounding decides them), A1_FREQ its
  frequency among the regression's samples;
* quantitative phenotypes get linear regression (T statistic, P from Student's t with
  OBS_CT - covariates - 2 degrees of freedom); case/control phenotypes logistic
  regression (Wald Z), with Firth regression when a genotype class has no cases or no
  controls or the ordinary fit does not converge (``firth-fallback``, the default);
* a variant whose A1 dosage is constant among the samples gets ``CONST_OMITTED_ALLELE``.

The kernels (:mod:`medlake.omics.gwas.kernels`) run on NumPy or on PyTorch
(:func:`select_backend`): a CUDA GPU is used automatically when one is present.
"""

from __future__ import annotations

import os
import queue
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from scipy import special

from medlake.errors import InputError, MissingDependencyError, UsageError
from medlake.omics.gwas import kernels
from medlake.omics.gwas.firth import firth_logistic
from medlake.omics.gwas.plink_io import GenotypeFile
from medlake.omics.gwas.qc import VariantFilter, variant_keep_mask

Model = Literal["linear", "logistic"]
FirthMode = Literal["fallback", "always", "never"]
BackendName = Literal["auto", "numpy", "torch"]

RESULT_SCHEMA = pa.schema(
    [
        ("chrom", pa.string()),
        ("pos", pa.int64()),
        ("id", pa.string()),
        ("ref", pa.string()),
        ("alt", pa.string()),
        ("a1", pa.string()),
        ("a1_freq", pa.float64()),
        ("firth", pa.bool_()),
        ("test", pa.string()),
        ("obs_ct", pa.int64()),
        ("beta", pa.float64()),
        ("se", pa.float64()),
        ("stat", pa.float64()),
        ("p", pa.float64()),
        ("errcode", pa.string()),
    ]
)


@dataclass
class Backend:
    """An array namespace and device the kernels run on."""

    name: str
    device: str
    _torch: Any = field(default=None, repr=False)
    threads: int | None = None  # blocks run at once on the CPU (None: one per BLAS thread)

    def asarray(self, a: np.ndarray) -> Any:
        """Host float64 array to the backend."""
        if self._torch is None:
            return np.ascontiguousarray(a, dtype=np.float64)
        return self._torch.as_tensor(a, dtype=self._torch.float64, device=self.device)

    def asindex(self, a: np.ndarray) -> Any:
        """Host integer index array to the backend."""
        if self._torch is None:
            return a
        return self._torch.as_tensor(a, device=self.device)

    def block_workers(self) -> int:
        """How many blocks to run at once: one per BLAS thread for NumPy (so the
        ``*_NUM_THREADS`` settings bound the cores used), one on a GPU or with torch's
        own CPU threads."""
        if self._torch is not None:
            return 1
        if self.threads is not None:
            return max(1, self.threads)
        try:
            from threadpoolctl import threadpool_info
        except ImportError:  # comes with scikit-learn (omics extra); without it: serial
            return 1
        threads = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return max(1, min(max(threads, default=1), cores))

    def to_numpy(self, a: Any) -> np.ndarray:
        """Backend array back to host NumPy."""
        if self._torch is None:
            return np.asarray(a)
        return a.detach().cpu().numpy()


def select_backend(name: BackendName = "auto", device: str | None = None) -> Backend:
    """``numpy``, ``torch`` (``device`` defaults to CUDA when available, else CPU), or
    ``auto``: torch on a CUDA GPU when one is present, NumPy otherwise."""
    if name not in ("auto", "numpy", "torch"):
        raise UsageError(f"backend must be auto, numpy or torch, got {name!r}")
    if name == "numpy" or (name == "auto" and not _nvidia_device_present()):
        return Backend("numpy", "cpu")  # no GPU: skip importing torch (seconds)
    try:
        import torch
    except ImportError as error:
        if name == "torch":
            raise MissingDependencyError("backend torch needs the gpu extra (PyTorch)") from error
        return Backend("numpy", "cpu")
    cuda = torch.cuda.is_available()
    if name == "auto" and not cuda:
        return Backend("numpy", "cpu")
    return Backend("torch", device or ("cuda" if cuda else "cpu"), torch)


def _nvidia_device_present() -> bool:
    """A cheap look for an NVIDIA GPU (driver files) before importing PyTorch."""
    from pathlib import Path

    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()


@dataclass(frozen=True)
class GlmOptions:
    """How to run the association (defaults are PLINK 2's)."""

    model: Model = "linear"
    firth: FirthMode = "fallback"
    block_variants: int | None = None  # default: about 64 MB of float64 per block
    filters: VariantFilter = field(default_factory=VariantFilter)


def design_basis(covariates: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``Q`` of ``[1, covariates]`` (same fit, better conditioned)."""
    n = covariates.shape[0]
    c = np.column_stack([np.ones(n), covariates])
    q, r = np.linalg.qr(c)
    diag = np.abs(np.diag(r))
    if diag.size and diag.min() < 1e-10 * max(diag.max(), 1.0):
        raise InputError("covariates are collinear (one is a combination of the others)")
    return q


def run_glm(
    genotypes: GenotypeFile,
    phenotype: np.ndarray,
    covariates: np.ndarray,
    options: GlmOptions | None = None,
    backend: Backend | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Associate every variant with one phenotype; yield result batches in file order.

    Parameters
    ----------
    genotypes : GenotypeFile
    phenotype : numpy.ndarray
        One value per genotype sample (file order), NaN when missing. For logistic
        regression 0 = control, 1 = case.
    covariates : numpy.ndarray
        ``(n_samples, c)`` in file order, NaN when missing (``c`` may be 0).
    progress : callable, optional
        Called as ``progress(done, total)`` (variants of the file) after each block's
        batch was taken; an exception it raises stops the run (what a job's
        cancellation does) and propagates.
    """
    options = options or GlmOptions()
    backend = backend or select_backend()
    _keep_freed_memory()
    covariates = np.asarray(covariates, dtype=np.float64).reshape(len(genotypes.samples), -1)
    keep = ~np.isnan(phenotype) & ~np.isnan(covariates).any(axis=1)
    index = np.flatnonzero(keep)
    n = index.size
    y = phenotype[index].astype(np.float64)
    if options.model == "logistic" and not np.isin(y, (0.0, 1.0)).all():
        raise InputError("logistic regression needs a 0/1 (control/case) phenotype")
    q = design_basis(covariates[index])
    k = q.shape[1]
    if n <= k + 1:
        raise InputError(f"{n} samples with phenotype and covariates: too few for {k} terms")
    q_b, y_b = backend.asarray(q), backend.asarray(y)
    if options.model == "linear":
        setup: Any = kernels.linear_setup(q_b, y_b)
    else:
        setup = kernels.logistic_setup(q_b, y_b)
    # ~64 MB per float64 block for the linear kernel. The logistic kernel makes about ten
    # passes over block-sized arrays per Newton iteration: small blocks keep them in cache.
    calls_per_block = 8_000_000 if options.model == "linear" else 320_000
    workers = backend.block_workers()
    if options.model == "linear" and workers > 1:
        calls_per_block //= workers  # same memory in flight whatever the thread count
    block = options.block_variants or max(16, min(8192, calls_per_block // max(n, 1)))
    founders = genotypes.samples.founder
    variants = genotypes.variants
    subset = None if n == len(genotypes.samples) else index
    buffers: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
    for _ in range(workers):
        buffers.put(np.empty((block, n), dtype=np.float64))

    def associate(start: int, calls: np.ndarray) -> pa.RecordBatch | None:
        keep_v = variant_keep_mask(calls, founders, options.filters)
        if not keep_v.any():
            return None
        rows = np.flatnonzero(keep_v)
        block_calls = calls[rows] if rows.size != calls.shape[0] else calls
        buffer = buffers.get()
        try:
            prepared = _prepare(block_calls, founders, subset, buffer)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN, not noise
                result = _associate_block(prepared, y, q, setup, options, backend)
        finally:
            buffers.put(buffer)
        meta = variants.take(start + rows)
        a1 = np.where(result.pop("a1_is_ref"), meta.ref, meta.alt)
        return pa.RecordBatch.from_pydict(
            {
                "chrom": meta.chrom,
                "pos": meta.pos,
                "id": meta.id,
                "ref": meta.ref,
                "alt": meta.alt,
                "a1": a1,
                **result,
            },
            schema=RESULT_SCHEMA,
        )

    total = len(variants)
    if workers == 1:
        for start, stop, calls in genotypes.blocks(block):
            batch = associate(start, calls)
            if batch is not None:
                yield batch
            if progress is not None:
                progress(stop, total)
        return
    # Blocks in parallel, one per core, BLAS single-threaded meanwhile: the kernels'
    # element-wise passes (most of the work) then use every core too, not just the
    # products. At most ``workers`` blocks are in flight; results come in file order.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending: deque[tuple[int, Future[pa.RecordBatch | None]]] = deque()
        try:
            for start in range(0, total, block):
                stop = min(start + block, total)
                calls = genotypes.read(start, stop)  # a fresh array: blocks run at once
                pending.append((stop, pool.submit(associate, start, calls)))
                while len(pending) > workers or (pending and start + block >= total):
                    done, future = pending.popleft()
                    batch = future.result()
                    if batch is not None:
                        yield batch
                    if progress is not None:
                        progress(done, total)
        finally:  # stopped early (an error, or a progress callback cancelling): drop the rest
            for _, future in pending:
                future.cancel()


def _keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed blocks for reuse (up to 32 MB a block, 256 MB
    of free memory) instead of handing them back to the system at once.

    The kernels allocate and free block-sized temporaries (a few MB) many times a second;
    with glibc's defaults each one is a fresh ``mmap`` or a trimmed heap, so every page of
    every temporary is faulted in again: measured, a third of the logistic run's CPU time
    went to page faults. Setting the thresholds also stops glibc's own adaptive threshold
    (what a long-running server would reach anyway). No effect off glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


_MALLOC_TUNED = False


@dataclass
class _Block:
    """One block's calls prepared for the kernels (buffers reused between blocks)."""

    g: np.ndarray  # (B, n) float64 A1 dosage, 0 where missing
    missing: np.ndarray  # (B, n) bool
    padded: np.ndarray | None  # (B, m) missing sample indices padded with n, or None
    counts: np.ndarray  # (B, 3) A1 dosage 0/1/2 counts among the analysed samples
    a1_is_ref: np.ndarray  # (B,)


def _genotype_counts(codes: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """``(B, 3)`` counts of codes 0, 1, 2 (3 is missing) per row, in three int8 passes."""
    if missing is None:
        missing = codes == 3
    c3 = np.count_nonzero(missing, axis=1)
    c1 = np.count_nonzero(codes == 1, axis=1)
    total = np.sum(codes, axis=1, dtype=np.int64)  # c1 + 2 c2 + 3 c3
    c2 = (total - 3 * c3 - c1) // 2
    c0 = codes.shape[1] - c1 - c2 - c3
    return np.stack([c0, c1, c2], axis=1)


def _prepare(
    calls: np.ndarray, founders: np.ndarray, index: np.ndarray | None, buffer: np.ndarray
) -> _Block:
    """Codes, counts, A1 choice and the float dosage matrix, with few passes over memory.

    ``calls & 3`` maps 0/1/2 to themselves and -9 (missing) to 3, all in int8; only
    the final dosage matrix is float64, written into ``buffer`` (allocation and page
    faults cost more than the arithmetic).
    """
    codes = (calls if index is None else calls[:, index]) & 3
    missing = codes == 3
    counts = _genotype_counts(codes, missing)
    if index is None and founders.all():
        founder_counts = counts
    else:
        founder_counts = _genotype_counts(calls[:, founders] & 3)
    alt = founder_counts[:, 1] + 2 * founder_counts[:, 2]
    # Major allele by founder frequency, computed as PLINK 2 does: REF frequency as
    # count × (1 / total), ALT as 1 minus that, ALT major only when strictly larger.
    # On an exact tie the rounding decides (392 calls: ALT major; 400: REF major), as
    # the fixture's snp231/snp232 show.
    total = 2.0 * founder_counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_freq = (total - alt) * (1.0 / total)
    a1_is_ref = (1.0 - ref_freq) > ref_freq
    if a1_is_ref.any():
        codes[a1_is_ref] = 2 - codes[a1_is_ref]  # missing (3) becomes -1, zeroed below
        counts[a1_is_ref] = counts[a1_is_ref][:, ::-1]
    np.putmask(codes, missing, 0)
    g = buffer[: codes.shape[0]]
    np.copyto(g, codes, casting="unsafe")
    padded = kernels.missing_index(missing, codes.shape[1] - counts.sum(axis=1))
    return _Block(g=g, missing=missing, padded=padded, counts=counts, a1_is_ref=a1_is_ref)


def _associate_block(
    block: _Block, y: np.ndarray, q: np.ndarray, setup: Any, options: GlmOptions,
    backend: Backend,
) -> dict[str, Any]:  # fmt: skip
    """Statistics for one prepared block."""
    counts = block.counts
    obs = counts.sum(axis=1)
    a1_sum = counts[:, 1] + 2 * counts[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        a1_freq = a1_sum / (2.0 * obs)
    constant = (counts > 0).sum(axis=1) <= 1
    k = q.shape[1]
    nb = counts.shape[0]
    errcode = np.full(nb, ".", dtype=object)
    errcode[constant] = "CONST_OMITTED_ALLELE"
    small = (obs <= k + 1) & ~constant
    errcode[small] = "SAMPLE_CT<=PREDICTOR_CT"
    firth = np.zeros(nb, dtype=bool)
    if options.model == "linear":
        padded = None if block.padded is None else backend.asindex(block.padded)
        out = kernels.linear_block(setup, backend.asarray(block.g), padded)
        beta, se = backend.to_numpy(out["beta"]), backend.to_numpy(out["se"])
        stat = beta / se
        df = obs - (k + 1.0)
        with np.errstate(invalid="ignore"):
            p = 2.0 * special.stdtr(df, -np.abs(stat))
    else:
        beta, se, firth = _logistic(block, y, q, setup, options, backend, errcode)
        stat = beta / se
        p = 2.0 * special.ndtr(-np.abs(stat))
    bad = errcode != "."
    for arr in (beta, se, stat, p):
        arr[bad] = np.nan
    return {
        "a1_is_ref": block.a1_is_ref,
        "a1_freq": a1_freq,
        "firth": firth,
        "test": np.full(nb, "ADD", dtype=object),
        "obs_ct": obs.astype(np.int64),
        "beta": beta,
        "se": se,
        "stat": stat,
        "p": p,
        "errcode": errcode,
    }


def _logistic(
    block: _Block,
    y: np.ndarray,
    q: np.ndarray,
    setup: Any,
    options: GlmOptions,
    backend: Backend,
    errcode: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic fits for a block, with Firth where PLINK 2 would use it."""
    g = block.g
    nb = g.shape[0]
    observed = ~block.missing
    runnable = errcode == "."
    beta = np.full(nb, np.nan)
    se = np.full(nb, np.nan)
    firth = np.zeros(nb, dtype=bool)
    # A1 dosage summed over cases and over controls (g is 0 on missing calls): a zero
    # sum means no case (or no control) carries A1, a separation Newton cannot fit.
    case_sum = g @ y
    control_sum = g @ (1.0 - y)
    zero_cell = (np.abs(case_sum) < 0.5) | (np.abs(control_sum) < 0.5)
    if options.firth == "always":
        use_firth = runnable.copy()
    else:
        ordinary = runnable & ~zero_cell
        if ordinary.any():
            rows = np.flatnonzero(ordinary)
            padded = kernels.missing_index(block.missing[rows])
            out = kernels.logistic_block(
                setup,
                backend.asarray(g[rows]),
                backend.asarray(observed[rows].astype(float)),
                None if padded is None else backend.asindex(padded),
            )
            ok = backend.to_numpy(out["converged"]).astype(bool)
            beta[rows] = backend.to_numpy(out["beta"])
            se[rows] = backend.to_numpy(out["se"])
            failed = rows[~ok]
        else:
            failed = np.zeros(0, dtype=np.int64)
        use_firth = np.zeros(nb, dtype=bool)
        use_firth[failed] = True
        separated = runnable & zero_cell
        if options.firth == "never":
            errcode[separated] = "SEPARATION"
            errcode[failed] = "LOGISTIC_CONVERGE_FAIL"
        else:
            use_firth |= separated
    if options.firth != "never":
        for j in np.flatnonzero(use_firth):
            keep = observed[j]
            x = np.column_stack([q[keep], g[j, keep]])
            coef, coef_se, ok = firth_logistic(x, y[keep])
            if ok:
                beta[j], se[j] = coef[-1], coef_se[-1]
            else:
                errcode[j] = "FIRTH_CONVERGE_FAIL"
        firth[use_firth] = True
    return beta, se, firth
