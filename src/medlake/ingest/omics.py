"""Omics readers: genotypes and expression into ``omics/``, samples into the registry.

Omics data is not staged as CDM rows. Each reader validates a data file, stores it
(or its conversion) in its field's format under the workspace's omics folder
(``SourceContext.omics_dir``, content-addressed, see :mod:`medlake.ingest.omics_store`)
and registers its samples in ``ParsedChunk.omics_samples`` (``OMICS_SAMPLE_COLUMNS``)
with the source patient ids of the biobank manifest, so the EMPI can link them.

========================  ===========================  ==============================
format (sniffed by)       companions (roles)           stored as
========================  ===========================  ==============================
``plink`` (``6c 1b 01``)  ``bim``, ``fam`` required;   ``genotypes/<key>/genotypes.
                          ``manifest``                 bed/.bim/.fam`` unchanged
``pgen`` (``6c 1b 1x``)   ``pvar``, ``psam``           ``genotypes/<key>/genotypes.
                          required; ``manifest``       pgen/.pvar/.psam`` unchanged
``vcf`` (``##fileformat`` ``manifest``                 ``genotypes/<key>/genotypes.
=VCF``, plain or gzip)                                 bed/.bim/.fam`` converted
``counts`` (``gene_id``   ``manifest``, ``samples``    ``expression/<key>/counts.
header, count row)        (sample sheet), ``genes``    parquet`` (+ sheets unchanged)
``sample-manifest``       none                         nothing; link updates only
(header with sample_id,
assay, source_patient_id)
========================  ===========================  ==============================

The service groups companions: a ``.bed`` with the ``.bim``/``.fam`` of the same stem,
a ``.pgen`` with ``.pvar``/``.psam``; the manifest (``samples.csv``), sample sheet
(``rnaseq_samples.tsv``) and gene table (``genes.tsv``) given in the same call go to
every omics data file of that call. Companions are not readers' inputs on their own:
``.bim``, ``.fam``, ``.pvar``, ``.psam``, sample sheets and gene tables are not
sniffed. Reader options: ``companion_names`` (``{role: original name}``, for messages)
and ``sample_id_is_patient_id`` (no manifest: the file's sample ids are the source
system's patient ids).

Assays registered: ``genotype`` (PLINK, pgen, VCF) and ``rnaseq`` (counts); one
registry row per sample, ``file_uri`` relative to ``omics/``, ``sha256`` of the stored
data file. Re-reading the same input registers the same rows and stores nothing new.
"""

from __future__ import annotations

from medlake.ingest.omics_counts import CountsReader
from medlake.ingest.omics_plink import PgenReader, PlinkBedReader
from medlake.ingest.omics_samples import SampleManifestReader
from medlake.ingest.omics_vcf import VcfReader

# Most specific sniffers first: the manifest's header would not pass as counts, but
# keep binary magics ahead of text sniffers anyway.
OMICS_READERS = (PlinkBedReader, PgenReader, VcfReader, CountsReader, SampleManifestReader)

__all__ = [
    "OMICS_READERS",
    "CountsReader",
    "PgenReader",
    "PlinkBedReader",
    "SampleManifestReader",
    "VcfReader",
]
