"""VCF genotypes: convert to a PLINK 1 fileset in variant blocks, register the samples.

``format = "vcf"`` reads VCF 4.x, plain, gzip or BGZF (sniffed by ``##fileformat=VCF``
at the start, decompressed if needed). Only the ``GT`` field is used; the fileset
written is what PLINK 2 ``--vcf … --make-bed`` gives for biallelic variants:

- ``.bim`` allele 1 = ALT, allele 2 = REF (so the A1 count is the ALT dosage, as in
  the synthetic biobank), variant id = ``ID``, or ``chrom:pos:ref:alt`` when ``.``;
- ``.fam`` FID = IID = VCF sample name, parents 0, sex 0 (unknown), phenotype -9;
- calls: ``0/0`` → 0, ``0/1``/``1|0`` → 1, ``1/1`` → 2 ALT copies; phased or not alike;
  haploid ``0``/``1`` → 0/2 (PLINK's haploid-as-homozygous coding); ``./.`` and
  half-calls such as ``./1`` → missing (PLINK 2's ``--vcf-half-call missing``; cyvcf2's
  ``gt_types`` would call ``./1`` heterozygous, so calls are decoded from
  ``genotype.array()`` instead).
- Variants with more than one ALT (multi-allelic), none (``.``), ploidy above 2 or no
  ``GT`` are skipped and counted in ``ParsedChunk.skipped`` (``"multiallelic variants"``
  …): split multi-allelic sites with ``bcftools norm -m-`` first to keep them.

Why cyvcf2 and PLINK 1 ``.bed``. cyvcf2 is htslib underneath (every VCF dialect and
BGZF, the reference implementation's parser), streams record by record and is a
well-kept wheel on x86-64 and aarch64; a parser of our own would re-learn htslib's
edge cases. ``.bed`` is what bed-reader and the lake's GWAS read, packs in a few numpy
lines (no pgenlib writer needed) and is byte-deterministic, so the content-addressed
folder of a VCF is the same on every run.

Memory: calls are decoded into one ``block × samples`` int8 buffer (about
:data:`CALLS_PER_BLOCK` calls), packed and written when full; nothing else grows with
the number of variants. A record htslib cannot parse raises
:class:`~medlake.errors.InputError` with its approximate line: the file is one
genotype matrix, and a matrix missing variants would mislead every analysis using it.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medlake.errors import InputError
from medlake.ingest.omics_plink import (
    BED_MAGIC,
    GENOTYPES_KIND,
    omics_dir,
    register_fileset,
    unique_ids,
)
from medlake.ingest.omics_store import FilesetBuilder, StoredFileset, build_fileset
from medlake.ingest.staging import ParsedChunk, SourceContext

VCF_MAGIC = b"##fileformat=VCF"
CALLS_PER_BLOCK = 1 << 22
MISSING = -127
# .bed 2-bit codes by ALT count (A1 = ALT): 2 -> 00, 1 -> 10, 0 -> 11, missing -> 01
_BED_CODE = np.zeros(256, dtype=np.uint8)
_BED_CODE[[0, 1, 2, MISSING & 0xFF]] = [0b11, 0b10, 0b00, 0b01]


def looks_like_vcf(head: bytes) -> bool:
    """``##fileformat=VCF`` at the start, after gunzipping when the head is gzip/BGZF."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(head)
        except zlib.error:
            return False
    return head.startswith(VCF_MAGIC)


def pack_bed_block(calls: np.ndarray) -> bytes:
    """Variant-major ``(B, n)`` int8 ALT counts (``MISSING`` for missing) as SNP-major
    ``.bed`` bytes: four samples a byte, first in the low bits, rows padded to bytes."""
    b, n = calls.shape
    n_bytes = -(-n // 4)
    codes = np.zeros((b, n_bytes * 4), dtype=np.uint8)
    codes[:, :n] = _BED_CODE[calls.view(np.uint8)]
    c = codes.reshape(b, n_bytes, 4)
    return (c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)).tobytes()


def alt_counts(alleles: np.ndarray, out: np.ndarray) -> None:
    """ALT copies per sample from cyvcf2's ``genotype.array()`` (allele indexes, -1
    missing, -2 past the ploidy; last column the phase flag) into ``out``."""
    first = alleles[:, 0]
    second = alleles[:, 1] if alleles.shape[1] > 2 else np.full_like(first, -2)
    haploid = second == -2
    valid = (first >= 0) & (first <= 1) & (haploid | ((second >= 0) & (second <= 1)))
    count = (first == 1).astype(np.int8) + np.where(haploid, first == 1, second == 1)
    out[:] = np.where(valid, count, MISSING)


def _skip_reason(variant: Any) -> str | None:
    if len(variant.ALT) != 1:
        return "multiallelic variants" if variant.ALT else "variants without ALT"
    if variant.genotype is None:
        return "variants without GT"
    return None


def header_lines(path: Path) -> int:
    """Lines up to and including ``#CHROM`` (htslib adds lines to its copy of the header,
    so its ``raw_header`` cannot place records)."""
    with path.open("rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gzipped else path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.startswith(b"##"):
                return number
    return 0


def convert_vcf(
    vcf: Any, path: Path, name: str, fileset: FilesetBuilder
) -> tuple[list[str], Counter[str]]:
    """Write ``genotypes.bed/.bim/.fam`` for the cyvcf2 ``VCF`` open on ``path``; returns
    the sample ids and the skipped-variant counts."""
    samples = unique_ids(list(vcf.samples), [f"{name} header"] * len(vcf.samples), name)
    n = len(samples)
    block = np.empty((max(1, min(4096, CALLS_PER_BLOCK // n)), n), dtype=np.int8)
    skipped: Counter[str] = Counter()
    written = filled = records = 0
    with fileset.open("genotypes.bed") as bed, fileset.open("genotypes.bim") as bim:
        bed.write(BED_MAGIC)
        iterator = iter(vcf)
        while True:
            try:
                variant = next(iterator)
            except StopIteration:
                break
            except Exception as exc:  # cyvcf2 raises bare Exception on htslib errors
                line = header_lines(path) + records + 1
                raise InputError(f"{name}:{line}: unreadable VCF record ({exc})") from None
            records += 1
            reason = _skip_reason(variant)
            alleles = None if reason else variant.genotype.array()
            if alleles is not None and alleles.shape[1] > 3:
                reason = "variants with ploidy above 2"
            if reason:
                skipped[reason] += 1
                continue
            alt_counts(alleles, block[filled])
            ref, alt = variant.REF, variant.ALT[0]
            vid = variant.ID or f"{variant.CHROM}:{variant.POS}:{ref}:{alt}"
            bim.write(f"{variant.CHROM}\t{vid}\t0\t{variant.POS}\t{alt}\t{ref}\n".encode())
            filled += 1
            if filled == block.shape[0]:
                bed.write(pack_bed_block(block))
                written, filled = written + filled, 0
        if filled:
            bed.write(pack_bed_block(block[:filled]))
            written += filled
    if not written:
        raise InputError(f"{name}: no biallelic variant with genotypes ({dict(skipped)})")
    with fileset.open("genotypes.fam") as fam:
        fam.write("".join(f"{s}\t{s}\t0\t0\t0\t-9\n" for s in samples).encode())
    return samples, skipped


class VcfReader:
    """``format = "vcf"``: VCF(.gz) genotypes converted to a PLINK 1 fileset."""

    format: ClassVar[str] = "vcf"

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_vcf(head)

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        import cyvcf2

        root = omics_dir(context)
        name = context.original_name
        try:
            vcf = cyvcf2.VCF(str(context.path), lazy=True)
        except Exception as exc:  # cyvcf2 raises bare Exception for a bad header
            raise InputError(f"{name}: not a readable VCF ({exc})") from None
        stored = StoredFileset(root, "")
        try:
            with build_fileset(root, GENOTYPES_KIND, stored) as fileset:
                samples, skipped = convert_vcf(vcf, context.path, name, fileset)
        finally:
            vcf.close()
        first = True
        for chunk in register_fileset(context, samples, stored, "genotypes.bed", "bed"):
            if first:
                chunk.skipped.update(skipped)
                first = False
            yield chunk
