"""Benchmark: medlake GWAS vs ``plink2 --glm`` on the same synthetic data and threads.

Writes a PLINK 1 fileset of ``--samples`` × ``--variants`` (ALT frequencies uniform in
0.05–0.5, ``--missing`` calls missing at random), a quantitative and a case/control
phenotype and ``--covariates`` covariates, then times, on the same ``--threads``:

* ``plink2 --glm hide-covar cols=+a1freq`` (linear or logistic with firth-fallback);
* ``medlake.service.gwas.run_gwas_files`` (NumPy backend, BLAS limited to the same
  number of threads) in its own process, no plots.

Prints wall time, variants per second, CPU time and peak resident memory of each
process (from ``wait4``) and the ratios, for ``--repeat`` runs of each tool (alternating
which goes first, so both see the same load on a shared machine), and checks that the
two reports agree.
Usage: ``python benchmarks/gwas_glm.py --model linear`` (defaults: 10,000 samples ×
100,000 variants × 10 covariates, 1 % missing, 2 threads).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from medlake.synth.omics import MISSING_CALL, pack_bed_block


def write_data(root: Path, n: int, m: int, c: int, missing: float, seed: int = 1) -> Path:
    """The benchmark fileset under ``root`` (reused when already there)."""
    prefix = root / f"bench_{n}_{m}_{c}_{missing}"
    if Path(f"{prefix}.bed").exists():
        return prefix
    rng = np.random.default_rng(seed)
    cov = rng.normal(0, 1, (n, c))
    with open(f"{prefix}.bed", "wb") as bed, open(f"{prefix}.bim", "w") as bim:
        bed.write(bytes((0x6C, 0x1B, 0x01)))
        first = None
        for start in range(0, m, 2000):
            b = min(2000, m - start)
            p = rng.uniform(0.05, 0.5, b).astype(np.float32)[:, None]
            calls = ((rng.random((b, n), dtype=np.float32) < p).astype(np.int8)
                     + (rng.random((b, n), dtype=np.float32) < p).astype(np.int8))  # fmt: skip
            if first is None:
                first = calls[0].astype(float)
            calls[rng.random((b, n), dtype=np.float32) < missing] = MISSING_CALL
            bed.write(pack_bed_block(calls))
            for j in range(start, start + b):
                bim.write(f"{1 + j * 22 // m}\tv{j}\t0\t{1000 + j * 100}\tA\tG\n")
    with open(f"{prefix}.fam", "w") as fam:
        fam.writelines(f"S{i}\tS{i}\t0\t0\t{1 + i % 2}\t-9\n" for i in range(n))
    qt = cov @ rng.normal(0, 0.2, c) + 0.05 * first + rng.normal(0, 1, n)
    cc = 1 + (rng.random(n) < 1 / (1 + np.exp(-(cov[:, 0] * 0.3 - 0.5))))
    with open(f"{prefix}.pheno", "w") as out:
        out.write("#FID\tIID\tQT\tCC\n")
        out.writelines(f"S{i}\tS{i}\t{qt[i]:.5f}\t{cc[i]}\n" for i in range(n))
    with open(f"{prefix}.covar", "w") as out:
        out.write("#FID\tIID\t" + "\t".join(f"C{k + 1}" for k in range(c)) + "\n")
        out.writelines(f"S{i}\tS{i}\t" + "\t".join(f"{v:.5f}" for v in cov[i]) + "\n"
                       for i in range(n))  # fmt: skip
    return prefix


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall seconds, CPU seconds, peak RSS in MiB) of that process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--covariates", type=int, default=10)
    parser.add_argument("--missing", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["linear", "logistic"], default="linear")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medlake-gwas-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prefix = write_data(args.workdir, args.samples, args.variants, args.covariates, args.missing)
    print(f"data: {prefix} ({time.perf_counter() - t0:.0f} s to make or find)")
    pheno = "QT" if args.model == "linear" else "CC"
    plink_cmd = [
        "plink2", "--bfile", str(prefix), "--pheno", f"{prefix}.pheno", "--pheno-name", pheno,
        "--covar", f"{prefix}.covar", "--glm", "hide-covar", "cols=+a1freq",
        "--threads", str(args.threads), "--out", str(args.workdir / "plink"),
    ]  # fmt: skip
    threads = str(args.threads)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}  # fmt: skip
    code = (
        "from pathlib import Path; from medlake.service.gwas import run_gwas_files; "
        f"run_gwas_files(Path('{prefix}'), 'bed', Path('{prefix}.pheno'), "
        f"Path('{args.workdir / 'medlake'}'), pheno_names=['{pheno}'], "
        f"covar=Path('{prefix}.covar'), plots=False, backend='{args.backend}')"
    )
    m = args.variants
    print(f"{args.model}: {args.samples} samples × {m} variants × {args.covariates} "
          f"covariates, {args.missing:.0%} missing, {args.threads} threads")  # fmt: skip
    ratios, cpu_ratios, mem_ratios = [], [], []
    for run in range(1, args.repeat + 1):
        # the two tools one after the other, alternating which goes first
        order = [("plink2", plink_cmd, None), ("medlake", [sys.executable, "-c", code], env)]
        if run % 2 == 0:
            order.reverse()
        got = {name: timed(cmd, e) for name, cmd, e in order}
        (p_wall, p_cpu, p_rss), (o_wall, o_cpu, o_rss) = got["plink2"], got["medlake"]
        load = os.getloadavg()[0]
        print(f" run {run} (load {load:.1f}):")
        print(f"  plink2 --glm : {p_wall:7.1f} s  {m / p_wall:9.0f} variants/s  "
              f"CPU {p_cpu:7.1f} s  peak RSS {p_rss:7.0f} MiB")  # fmt: skip
        print(f"  medlake gwas : {o_wall:7.1f} s  {m / o_wall:9.0f} variants/s  "
              f"CPU {o_cpu:7.1f} s  peak RSS {o_rss:7.0f} MiB")  # fmt: skip
        ratios.append(p_wall / o_wall)
        cpu_ratios.append(p_cpu / o_cpu)
        mem_ratios.append(o_rss / p_rss)
        print(f"  throughput ratio medlake/plink2: {ratios[-1]:.2f}× (CPU time "
              f"{cpu_ratios[-1]:.2f}×); memory ratio: {mem_ratios[-1]:.2f}×")  # fmt: skip
    suffix = "glm.linear" if args.model == "linear" else "glm.logistic.hybrid"
    agree = compare(args.workdir / f"plink.{pheno}.{suffix}",
                    args.workdir / f"medlake.{pheno}.{suffix}")  # fmt: skip
    print(f"median throughput ratio {np.median(ratios):.2f}× (runs: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); CPU-time ratio "
          f"{np.median(cpu_ratios):.2f}×; memory ratio {np.median(mem_ratios):.2f}×")  # fmt: skip
    print(f"  agreement: {agree}")


def compare(plink: Path, ours: Path) -> str:
    """Largest relative BETA/OR and SE difference between the two reports."""
    import pandas as pd

    a = pd.read_csv(plink, sep="\t", na_values=["NA"])
    b = pd.read_csv(ours, sep="\t", na_values=["NA"])
    if list(a["ID"]) != list(b["ID"]):
        return "different variants!"
    effect = "BETA" if "BETA" in a else "OR"
    se = "SE" if "SE" in a else "LOG(OR)_SE"
    rel = {c: float(np.nanmax(np.abs(b[c] / a[c] - 1.0))) for c in (effect, se, "P")}
    med = {c: float(np.nanmedian(np.abs(b[c] / a[c] - 1.0))) for c in (effect, se, "P")}
    same_a1 = bool((a["A1"] == b["A1"]).all())
    return f"A1 same: {same_a1}; max rel diff {rel}; median {med}"


if __name__ == "__main__":
    main()
