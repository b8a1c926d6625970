"""``medlake de`` as a user meets it: files written, lake mode = file mode, clear errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from medlake.errors import UsageError
from medlake.service.de import CASE, CONTROL, T2D_DIAGNOSED, cohort_groups, run_de

FIXTURE = Path(__file__).parent / "fixtures" / "deseq2"


def medlake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDLAKE_WORKSPACE"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    return subprocess.run(
        [sys.executable, "-m", "medlake.cli.main", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_standalone_run_writes_table_parquet_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "res" / "fx"
    result = medlake(
        "de", "--counts", str(FIXTURE / "counts.tsv"), "--samples", str(FIXTURE / "samples.tsv"),
        "--condition", "condition", "--case", "case", "--control", "control",
        "--covariate", "batch", "--out", str(out), "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["design"] == "~batch + condition"
    assert summary["samples"] == {"case": 8, "control": 8}

    table = pd.read_csv(f"{out}.de.tsv", sep="\t", index_col="gene_id")
    assert list(table.columns) == [
        "baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj",
    ]  # fmt: skip
    r = pd.read_csv(FIXTURE / "deseq2_batch_condition.csv", index_col="gene_id")
    assert (table.isna() == r[table.columns].isna()).all().all()  # NA written as NA
    assert ((table["padj"] < 0.05) == (r["padj"] < 0.05)).all()
    assert summary["significant"] == int((r["padj"] < 0.05).sum())
    parquet = pq.read_table(f"{out}.de.parquet").to_pandas().set_index("gene_id")
    np.testing.assert_allclose(parquet["log2FoldChange"], table["log2FoldChange"], rtol=1e-9)

    for name in ("volcano", "ma"):
        assert Path(f"{out}.{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = Path(f"{out}.{name}.html").read_text(encoding="utf-8")
        assert '<script src="http' not in html  # plotly.js inlined, no CDN
        assert "Plotly.newPlot" in html
        assert "G0001" in html


@pytest.mark.slow
def test_lake_mode_matches_file_mode(hospital_lake, tmp_path: Path) -> None:
    """Registered counts (Parquet in omics/) give the results of the delivered TSV."""
    omics = hospital_lake.hospital / "omics"
    sheet = pd.read_csv(omics / "rnaseq_samples.tsv", sep="\t", dtype=str)
    sheet["group"] = np.where(np.arange(len(sheet)) % 2 == 0, "a", "b")
    samples = tmp_path / "groups.csv"
    sheet[["sample_id", "group"]].to_csv(samples, index=False)
    common = {"samples": samples, "condition": "group", "case": "b", "control": "a"}
    lake = run_de(out=None, workspace_dir=hospital_lake.workspace, **common)
    files = run_de(out=None, counts=omics / "rnaseq_counts.tsv.gz", **common)
    assert lake.result.n_case + lake.result.n_control == len(sheet)
    pd.testing.assert_frame_equal(lake.table, files.table)


def test_bad_count_is_one_line_naming_the_column(tmp_path: Path) -> None:
    counts = pd.read_csv(FIXTURE / "counts.tsv", sep="\t", index_col=0)
    counts = counts.astype(object)
    counts.iloc[3, 2] = "1.5"
    bad = tmp_path / "bad.tsv"
    counts.to_csv(bad, sep="\t")
    result = medlake(
        "de", "--counts", str(bad), "--samples", str(FIXTURE / "samples.tsv"),
        "--condition", "condition", "--out", str(tmp_path / "x"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 65
    assert "S03" in result.stderr
    assert "bad.tsv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_column_and_ambiguous_levels_are_usage_errors(tmp_path: Path) -> None:
    common = {"out": None, "counts": FIXTURE / "counts.tsv"}
    with pytest.raises(UsageError, match="'treatment'"):
        run_de(samples=FIXTURE / "samples.tsv", condition="treatment", **common)
    three = pd.read_csv(FIXTURE / "samples.tsv", sep="\t")
    three.loc[:3, "condition"] = "other"
    path = tmp_path / "three.tsv"
    three.to_csv(path, sep="\t", index=False)
    with pytest.raises(UsageError, match="--case"):
        run_de(samples=path, condition="condition", **common)


def test_cohort_groups_take_one_sample_per_person() -> None:
    day = dt.date(2024, 1, 1)
    registry = pd.DataFrame(
        {
            "sample_id": ["s1", "s2", "s3", "s4", "s5", "s6"],
            "file_uri": ["m"] * 6,
            "person_id": [1, 1, 2, 3, None, 4],
            "collected_date": [day, day + dt.timedelta(days=9), day, day, day, day],
        }
    )
    groups, dropped = cohort_groups(registry, cases={1, 4}, controls={2, 4})
    assert groups["cohort"].to_dict() == {"s2": CASE, "s3": CONTROL}
    assert dropped == {
        "sample not linked to a person": 1,
        "earlier sample of the same person": 1,
        "person in both cohorts": 1,
        "person in neither cohort": 1,
    }
    rest, _ = cohort_groups(registry, cases={1}, controls=None)
    assert rest["cohort"].to_dict() == {"s2": CASE, "s3": CONTROL, "s4": CONTROL, "s6": CONTROL}


@pytest.mark.slow
def test_cohort_mode_from_the_command_line(hospital_lake, tmp_path: Path) -> None:
    from medlake.service import access

    definition = tmp_path / "t2d.json"
    definition.write_text(json.dumps(T2D_DIAGNOSED), encoding="utf-8")
    # analyses on the lake are for researchers and stewards, not the workspace's admin
    workspace = hospital_lake.copy(tmp_path / "ws")
    access.add_user(workspace, "steward1", "steward", as_user=access.login_name())
    result = medlake(
        "--as", "steward1", "de", "-w", str(workspace), "--case-cohort", str(definition),
        "--out", str(tmp_path / "t2d"), "--no-plots", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    truth = pd.read_csv(hospital_lake.truth / "omics_samples.csv", dtype=str)
    persons = truth.loc[truth["assay"] == "rnaseq", "person_key"].nunique()
    assert summary["samples"]["case"] >= 1
    assert summary["samples"]["case"] + summary["samples"]["control"] == persons
    assert summary["contrast"] == ["cohort", CASE, CONTROL]
    assert not Path(f"{tmp_path / 't2d'}.volcano.png").exists()
