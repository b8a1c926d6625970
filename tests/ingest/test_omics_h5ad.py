"""AnnData .h5ad matrices: stored and registered exactly as the same counts given as TSV.

The reference is the synthetic hospital's ``rnaseq_counts.tsv.gz`` read by the counts
reader: the same matrix saved as .h5ad (samples × genes, as AnnData lays it out) must
give the same ``counts.parquet`` bytes and the same registry rows.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse

from medlake.errors import InputError
from medlake.ingest.formats import sniff_format
from medlake.ingest.omics import CountsReader
from medlake.ingest.omics_h5ad import H5adReader
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.synth import generate_hospital

RECEIVED = dt.datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def omics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital") / "h"
    generate_hospital(out, 150, 12, workers=1)
    return out / "omics"


@pytest.fixture(scope="module")
def counts(omics: Path) -> pd.DataFrame:
    with gzip.open(omics / "rnaseq_counts.tsv.gz", "rt") as handle:
        return pd.read_csv(handle, sep="\t", index_col=0, dtype={0: str})


def as_h5ad(counts: pd.DataFrame, path: Path, *, layer: bool = False, sparse: bool = False,
            x: np.ndarray | None = None) -> Path:  # fmt: skip
    values = counts.to_numpy().T.astype(np.float32)  # samples × genes, floats as often stored
    matrix = scipy.sparse.csr_matrix(values) if sparse else values
    adata = anndata.AnnData(
        X=matrix if not layer else (x if x is not None else values / 3.0),
        obs=pd.DataFrame(index=[str(c) for c in counts.columns]),
        var=pd.DataFrame(index=[str(g) for g in counts.index]),
    )
    if layer:
        adata.layers["counts"] = matrix
    adata.write_h5ad(path)
    return path


def read(reader: object, path: Path, store: Path, manifest: Path) -> list[ParsedChunk]:
    context = SourceContext("biobank", "b", path, path.name, RECEIVED,
                            companions={"manifest": manifest}, omics_dir=store)  # fmt: skip
    return list(reader.read(context))  # type: ignore[attr-defined]


def samples(chunks: list[ParsedChunk]) -> pa.Table:
    return pa.concat_tables([t for c in chunks for t in c.omics_samples])


@pytest.mark.parametrize("kind", ["dense", "sparse", "counts-layer"])
def test_h5ad_is_stored_and_registered_as_its_tsv(
    omics: Path, counts: pd.DataFrame, tmp_path: Path, kind: str
) -> None:
    path = as_h5ad(counts, tmp_path / "rnaseq.h5ad", layer=kind == "counts-layer",
                   sparse=kind == "sparse")  # fmt: skip
    assert sniff_format(path) == "h5ad"
    manifest = omics / "samples.csv"
    want = samples(read(CountsReader(), omics / "rnaseq_counts.tsv.gz", tmp_path / "a", manifest))
    got = samples(read(H5adReader(), path, tmp_path / "b", manifest))
    assert got.equals(want)  # same sample ids, patients, file uri and sha256
    stored = [tmp_path / d / "expression" for d in ("a", "b")]
    files = [sorted(p.rglob("counts.parquet")) for p in stored]
    assert [f.read_bytes() for f in files[0]] == [f.read_bytes() for f in files[1]]


def test_normalised_values_are_refused_naming_the_file(
    omics: Path, counts: pd.DataFrame, tmp_path: Path
) -> None:
    small = counts.iloc[:50, :4]
    path = tmp_path / "norm.h5ad"
    adata = anndata.AnnData(
        X=(small.to_numpy().T / 7.0).astype(np.float32),
        obs=pd.DataFrame(index=[str(c) for c in small.columns]),
        var=pd.DataFrame(index=[str(g) for g in small.index]),
    )
    adata.write_h5ad(path)
    with pytest.raises(InputError, match=r"norm\.h5ad: genes 1-50: counts are not integers"):
        read(H5adReader(), path, tmp_path / "s", omics / "samples.csv")


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_repeated_sample_ids_are_refused(omics: Path, counts: pd.DataFrame, tmp_path: Path) -> None:
    small = counts.iloc[:5, :3]
    adata = anndata.AnnData(
        X=small.to_numpy().T.astype(np.int64),
        obs=pd.DataFrame(index=["s1", "s2", "s1"]),
        var=pd.DataFrame(index=[str(g) for g in small.index]),
    )
    path = tmp_path / "dup.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(InputError, match=r"dup\.h5ad: sample \(obs\) 3 repeated"):
        read(H5adReader(), path, tmp_path / "s", omics / "samples.csv")
