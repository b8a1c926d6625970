"""``medlake gwas`` standalone mode: PLINK 2 style inputs in, PLINK 2 style reports out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from medlake.errors import InputError
from medlake.service.gwas import run_gwas_files

from .gwas_helpers import FIXTURE, plink_report


def _medlake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDLAKE_WORKSPACE"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    return subprocess.run([sys.executable, "-m", "medlake.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_gwas_writes_plink2_reports_parquet_and_plots(tmp_path: Path) -> None:
    result = _medlake(
        "gwas", "--bfile", str(FIXTURE / "small"), "--pheno", str(FIXTURE / "pheno.tsv"),
        "--covar", str(FIXTURE / "covar.tsv"), "--covar-name", "AGE,SEX",
        "--covar-name", "PC1", "--covar-name", "PC2", "--out", str(tmp_path / "run"), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = {r["phenotype"]: r for r in json.loads(result.stdout)}
    assert runs["QT"]["model"] == "linear"
    assert runs["CC"]["model"] == "logistic"
    linear = (tmp_path / "run.QT.glm.linear").read_text().splitlines()
    reference = (FIXTURE / "ref.QT.glm.linear").read_text().splitlines()
    assert linear[0] == reference[0]  # PLINK 2's header, byte for byte
    identical = sum(a == b for a, b in zip(linear, reference, strict=True))
    assert identical >= 0.95 * len(reference)  # the rest differ in P's 6th digit
    for ours, ref in zip(linear, reference, strict=True):
        assert ours.split("\t")[:12] == ref.split("\t")[:12]  # all but P and ERRCODE
    hybrid = (tmp_path / "run.CC.glm.logistic.hybrid").read_text().splitlines()
    assert hybrid[0] == (FIXTURE / "ref.CC.glm.logistic.hybrid").read_text().splitlines()[0]
    parquet = pq.read_table(tmp_path / "run.QT.glm.parquet").to_pandas()
    text = plink_report("ref.QT.glm.linear")
    assert list(parquet["id"]) == list(text["ID"])
    ok = ~text["BETA"].isna()
    assert np.allclose(parquet["beta"][ok], text["BETA"][ok], rtol=1e-5)
    for name in ("manhattan.png", "qq.png", "manhattan.html", "qq.html"):
        assert (tmp_path / f"run.QT.{name}").stat().st_size > 1000
    html = (tmp_path / "run.QT.manhattan.html").read_text()
    assert "<script src=" not in html  # plotly.js inlined: no CDN
    assert 0.5 < runs["QT"]["lambda_gc"] < 3.0


def test_gwas_on_pgen_with_one_phenotype_and_logistic(tmp_path: Path) -> None:
    result = _medlake(
        "gwas", "--pfile", str(FIXTURE / "small"), "--pheno", str(FIXTURE / "pheno.tsv"),
        "--pheno-name", "CC", "--logistic", "--covar", str(FIXTURE / "covar.tsv"),
        "--no-plots", "--out", str(tmp_path / "p"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ours = pd.read_csv(tmp_path / "p.CC.glm.logistic.hybrid", sep="\t")
    ref = plink_report("ref_isolated.CC.glm.logistic.hybrid")
    assert list(ours["FIRTH?"]) == list(ref["FIRTH?"])
    assert np.allclose(ours["OR"], ref["OR"], rtol=1e-3, equal_nan=True)
    assert not (tmp_path / "p.CC.manhattan.png").exists()


def test_gwas_input_errors_are_one_line(tmp_path: Path) -> None:
    missing = _medlake("gwas", "--bfile", str(tmp_path / "nothing"), "--pheno", "p",
                       "--out", "o", cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 65
    assert "nothing.bed: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    with pytest.raises(InputError, match="no column 'LDL'"):
        run_gwas_files(FIXTURE / "small", "bed", FIXTURE / "pheno.tsv", tmp_path / "o",
                       pheno_names=["LDL"])  # fmt: skip
    with pytest.raises(InputError, match="case/control"):
        run_gwas_files(FIXTURE / "small", "bed", FIXTURE / "pheno.tsv", tmp_path / "o",
                       pheno_names=["QT"], logistic=True)  # fmt: skip
