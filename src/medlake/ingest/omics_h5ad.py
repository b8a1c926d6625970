"""AnnData ``.h5ad`` expression matrices, stored like count tables.

``format = "h5ad"`` reads a bulk RNA-seq matrix saved by AnnData (scanpy, the Python
DESeq2 port): observations (``obs_names``) are samples, variables (``var_names``) genes.
The raw counts are ``layers["counts"]`` when the file has that layer (the convention
when ``X`` holds normalised values), else ``raw.X`` when there is a ``raw``, else ``X``;
dense or sparse. They must be integers ≥ 0 (stored as floats is fine when every value
is whole): DESeq2 wants raw counts, and a normalised matrix is refused with one line
naming the file rather than rounded silently. Sample and gene ids must be non-empty and
unique.

Stored exactly like a TSV/CSV count matrix (:mod:`medlake.ingest.omics_counts`):
``omics/expression/<key>/counts.parquet``, ``gene_id`` then one int64 column per sample,
the same row groups, so the same matrix gives the same file (and registry rows)
whichever format it came in; samples are registered with assay ``rnaseq`` and linked by
the ``manifest`` companion. The file is read with ``anndata`` (the omics extra: it comes
with PyDESeq2) and held in memory while converted, one gene block at a time: bulk
matrices are small (20,000 genes × 1,000 samples is 160 MB of int64).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from medlake.errors import InputError
from medlake.ingest.omics_counts import (
    COUNTS_MEMBER,
    EXPRESSION_KIND,
    registration_chunk,
    write_count_batches,
)
from medlake.ingest.omics_plink import omics_dir
from medlake.ingest.omics_samples import context_manifest, parse_sample_sheet
from medlake.ingest.omics_store import StoredFileset, build_fileset
from medlake.ingest.staging import ParsedChunk, SourceContext

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GENES_PER_BLOCK = 4096


def _counts_matrix(adata: Any, name: str) -> Any:
    """The raw counts: layers["counts"], else raw.X, else X (samples × genes)."""
    if "counts" in adata.layers:
        return adata.layers["counts"]
    if adata.raw is not None:
        if list(adata.raw.var_names) != list(adata.var_names):
            raise InputError(f"{name}: raw.X has other genes than var; give a counts layer")
        return adata.raw.X
    return adata.X


def _ids(values: Any, what: str, name: str) -> list[str]:
    ids = [str(v) for v in values]
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if not value or value in seen:
            problem = "empty" if not value else f"repeated ({value!r})"
            raise InputError(f"{name}: {what} {i + 1} {problem}")
        seen.add(value)
    return ids


def _typed_blocks(matrix: Any, genes: list[str], samples: list[str],
                  name: str) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """Genes × samples int64 record batches, checked to be raw counts."""
    schema = pa.schema(
        [pa.field("gene_id", pa.string())] + [pa.field(s, pa.int64()) for s in samples]
    )
    for start in range(0, len(genes), GENES_PER_BLOCK):
        stop = min(start + GENES_PER_BLOCK, len(genes))
        block = matrix[:, start:stop]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        if block.dtype.kind == "f":
            if not np.isfinite(block).all() or (block != np.floor(block)).any():
                raise InputError(
                    f"{name}: genes {start + 1}-{stop}: counts are not integers "
                    "(normalised values? store raw counts in layers['counts'])"
                )
        elif block.dtype.kind not in "iu":
            raise InputError(f"{name}: counts of type {block.dtype} are not integers")
        if block.size and block.min() < 0:
            raise InputError(f"{name}: genes {start + 1}-{stop}: a negative count")
        values = block.astype(np.int64).T  # genes × samples
        arrays = [pa.array(genes[start:stop], pa.string())]
        arrays += [pa.array(values[:, j]) for j in range(values.shape[1])]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


class H5adReader:
    """``format = "h5ad"``: an AnnData file of samples × genes raw counts."""

    format: ClassVar[str] = "h5ad"

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(HDF5_MAGIC) and path.suffix.lower() == ".h5ad"

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        import anndata  # the omics extra; only when an .h5ad file is read

        name = context.original_name
        try:
            adata = anndata.read_h5ad(context.path)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InputError(f"{name}: not a readable .h5ad file ({exc})") from None
        samples = _ids(adata.obs_names, "sample (obs)", name)
        genes = _ids(adata.var_names, "gene (var)", name)
        if not samples or not genes:
            shape = f"{len(samples)} samples, {len(genes)} genes"
            raise InputError(f"{name}: an empty matrix ({shape})")
        matrix = _counts_matrix(adata, name)
        root = omics_dir(context)
        manifest = context_manifest(context)
        sheet = context.companions.get("samples")
        dates = parse_sample_sheet(sheet, f"{name} sample sheet") if sheet else {}
        schema = pa.schema(
            [pa.field("gene_id", pa.string())] + [pa.field(s, pa.int64()) for s in samples]
        )
        stored = StoredFileset(root, "")
        with build_fileset(root, EXPRESSION_KIND, stored) as fileset:
            write_count_batches(
                fileset.tmp / COUNTS_MEMBER, schema, _typed_blocks(matrix, genes, samples, name)
            )
            fileset.adopt(COUNTS_MEMBER)
        yield registration_chunk(context, samples, stored, manifest, dates)
