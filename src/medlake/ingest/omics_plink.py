"""PLINK genotype filesets: validate, store unchanged, register the samples.

``format = "plink"`` reads a PLINK 1 ``.bed`` (magic ``6c 1b 01``, SNP-major) with its
companions ``"bim"`` and ``"fam"``; ``format = "pgen"`` reads a PLINK 2 ``.pgen``
(magic ``6c 1b`` then a mode byte ``0x10``–``0x1f``) with ``"pvar"`` and ``"psam"``.
Either may bring a biobank ``"manifest"`` (:mod:`medlake.ingest.omics_samples`).

Validation, before anything is stored (PLINK 1.9 / 2.0 file format specifications):
- ``.fam``: six whitespace-separated fields per line, unique IIDs; ``.psam``: an
  ``#IID`` or ``#FID IID`` header (or none: ``.fam`` layout), unique IIDs;
- ``.bim``: six fields per line, integer position; ``.pvar``: variant lines after the
  ``#CHROM`` header;
- ``.bed`` size = 3 + variants × ⌈samples / 4⌉ bytes exactly (a truncated or padded
  file, or a ``.fam``/``.bim`` of another fileset, fails here);
- ``.pgen``: opened with pgenlib against the ``.psam`` sample count and its variant
  count compared with the ``.pvar``'s; the last variant is decoded, so a truncated
  file fails.
A failure raises :class:`~medlake.errors.InputError` naming the file: nothing is stored
and no sample registered (a genotype matrix is one record: it is valid or not).

The fileset is stored unchanged as ``omics/genotypes/<key>/genotypes.{bed,bim,fam}``
(or ``.{pgen,pvar,psam}``), see :mod:`medlake.ingest.omics_store`, and each IID is
registered with assay ``genotype``, ``file_uri`` of the ``.bed``/``.pgen`` and its
SHA-256. Member names are fixed so the folder depends on content only and
``plink --bfile omics/genotypes/<key>/genotypes`` works as is.

Companion file names in messages come from the reader option ``companion_names``
(``{role: original name}``) when the service gives it, else the data file's stem with
the role as extension.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from medlake.errors import InputError, UsageError
from medlake.ingest.omics_samples import StoredFile, context_manifest, sample_rows
from medlake.ingest.omics_store import StoredFileset, build_fileset
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.log import get_logger

BED_MAGIC = bytes((0x6C, 0x1B, 0x01))
PGEN_MAGIC = bytes((0x6C, 0x1B))
GENOTYPE_ASSAY = "genotype"
GENOTYPES_KIND = "genotypes"
MAX_CHUNK_SAMPLES = 50_000

log = get_logger(__name__)


def looks_like_bed(head: bytes) -> bool:
    return head[:3] == BED_MAGIC


def looks_like_pgen(head: bytes) -> bool:
    return len(head) >= 3 and head[:2] == PGEN_MAGIC and 0x10 <= head[2] <= 0x1F


def companion(context: SourceContext, role: str) -> tuple[Path, str]:
    """The landed path of a required companion and the name to show for it."""
    path = context.companions.get(role)
    names = context.options.get("companion_names")
    stem = context.original_name.rsplit(".", 1)[0]
    default = f"{stem}.{role}"
    name = str(names.get(role, default)) if isinstance(names, dict) else default
    if path is None:
        raise InputError(f"{context.original_name}: needs its .{role} file (companion {role!r})")
    return path, name


def omics_dir(context: SourceContext) -> Path:
    if context.omics_dir is None:
        raise UsageError(f"{context.original_name}: omics readers need the workspace's omics_dir")
    return context.omics_dir


def _lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of non-blank lines, decoded as UTF-8."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(f"{name}:{number}: not UTF-8 text") from None
            if text:
                yield number, text


def unique_ids(ids: list[str], where: list[str], name: str) -> list[str]:
    """``ids`` when all distinct, else InputError naming the repeated id's location."""
    seen: dict[str, str] = {}
    for sample_id, location in zip(ids, where, strict=True):
        if sample_id in seen:
            raise InputError(f"{location}: sample {sample_id!r} repeats {seen[sample_id]}")
        seen[sample_id] = location
    if not ids:
        raise InputError(f"{name}: no samples")
    return ids


def read_fam(path: Path, name: str) -> list[str]:
    """IIDs of a ``.fam`` in file order."""
    ids, where = [], []
    for number, text in _lines(path, name):
        fields = text.split()
        if len(fields) != 6:
            raise InputError(f"{name}:{number}: .fam line has {len(fields)} fields, expected 6")
        ids.append(fields[1])
        where.append(f"{name}:{number}")
    return unique_ids(ids, where, name)


def count_bim(path: Path, name: str) -> int:
    """Variants in a ``.bim``, each line checked for six fields and an integer position."""
    count = 0
    for number, text in _lines(path, name):
        fields = text.split()
        if len(fields) != 6 or not fields[3].lstrip("-").isdigit():
            raise InputError(f"{name}:{number}: not a .bim line (6 fields, integer position)")
        count += 1
    return count


def check_bed(path: Path, name: str, n_samples: int, n_variants: int) -> None:
    """The ``.bed`` header is SNP-major PLINK 1 and its size matches the ``.fam``/``.bim``."""
    with path.open("rb") as handle:
        head = handle.read(3)
    if head[:2] != BED_MAGIC[:2]:
        raise InputError(f"{name}: not a PLINK 1 .bed (bad magic bytes)")
    if head[2:3] != BED_MAGIC[2:]:
        raise InputError(f"{name}: sample-major .bed is not supported, convert with plink")
    expected = 3 + n_variants * -(-n_samples // 4)
    actual = path.stat().st_size
    if actual != expected:
        raise InputError(
            f"{name}: {actual} bytes, expected {expected} for {n_variants} variants x "
            f"{n_samples} samples (truncated, or .bim/.fam of another fileset)"
        )


def read_psam(path: Path, name: str) -> list[str]:
    """IIDs of a ``.psam`` (``#IID``/``#FID IID`` header, or ``.fam`` layout without one)."""
    iid_column = 1
    ids, where = [], []
    for number, text in _lines(path, name):
        fields = text.split()
        if text.startswith("#"):
            header = [f.lstrip("#").upper() for f in fields]
            if "IID" not in header:
                raise InputError(f"{name}:{number}: .psam header without IID")
            iid_column = header.index("IID")
            continue
        if len(fields) <= iid_column:
            raise InputError(f"{name}:{number}: too few fields for IID")
        ids.append(fields[iid_column])
        where.append(f"{name}:{number}")
    return unique_ids(ids, where, name)


def count_pvar(path: Path, name: str) -> int:
    """Variant lines of a ``.pvar`` (lines after ``##`` meta-lines and the header)."""
    count = 0
    for number, text in _lines(path, name):
        if text.startswith("#"):
            continue
        if len(text.split()) < 4:
            raise InputError(f"{name}:{number}: not a .pvar variant line")
        count += 1
    return count


def check_pgen(path: Path, name: str, n_samples: int, n_variants: int) -> None:
    """pgenlib opens the file for ``n_samples``, has ``n_variants`` and decodes the last."""
    import numpy as np
    import pgenlib

    try:
        reader = pgenlib.PgenReader(bytes(path), raw_sample_ct=n_samples)
        try:
            if reader.get_variant_ct() != n_variants:
                raise InputError(
                    f"{name}: {reader.get_variant_ct()} variants, the .pvar has {n_variants}"
                )
            if n_variants:
                reader.read(n_variants - 1, np.empty(n_samples, dtype=np.int8))
        finally:
            reader.close()
    except RuntimeError as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InputError(f"{name}: unreadable .pgen ({str(detail).strip()})") from None


def register_fileset(
    context: SourceContext, sample_ids: list[str], stored: StoredFileset, member: str, fmt: str
) -> Iterator[ParsedChunk]:
    """Chunks registering ``sample_ids`` as genotype samples of ``member``."""
    manifest = context_manifest(context)
    file = StoredFile(stored.uri(member), fmt, stored.digests[member])
    log.info(
        "%s: %d genotype samples in %s (%s)",
        context.original_name,
        len(sample_ids),
        stored.folder,
        "stored" if stored.created else "already stored",
    )
    for start in range(0, len(sample_ids), MAX_CHUNK_SAMPLES):
        part = sample_ids[start : start + MAX_CHUNK_SAMPLES]
        chunk = ParsedChunk(records_read=len(part))
        if start == 0 and manifest is not None:
            chunk.quarantine.extend(manifest.quarantine)
        chunk.omics_samples.append(sample_rows(context, part, GENOTYPE_ASSAY, file, manifest))
        yield chunk


class PlinkBedReader:
    """``format = "plink"``: a PLINK 1 ``.bed`` with companions ``bim`` and ``fam``."""

    format: ClassVar[str] = "plink"

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_bed(head)

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        root = omics_dir(context)
        bim, bim_name = companion(context, "bim")
        fam, fam_name = companion(context, "fam")
        samples = read_fam(fam, fam_name)
        n_variants = count_bim(bim, bim_name)
        check_bed(context.path, context.original_name, len(samples), n_variants)
        stored = StoredFileset(root, "")
        with build_fileset(root, GENOTYPES_KIND, stored) as fileset:
            fileset.copy(context.path, "genotypes.bed")
            fileset.copy(bim, "genotypes.bim")
            fileset.copy(fam, "genotypes.fam")
        yield from register_fileset(context, samples, stored, "genotypes.bed", "bed")


class PgenReader:
    """``format = "pgen"``: a PLINK 2 ``.pgen`` with companions ``pvar`` and ``psam``."""

    format: ClassVar[str] = "pgen"

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_pgen(head)

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        root = omics_dir(context)
        pvar, pvar_name = companion(context, "pvar")
        psam, psam_name = companion(context, "psam")
        samples = read_psam(psam, psam_name)
        n_variants = count_pvar(pvar, pvar_name)
        check_pgen(context.path, context.original_name, len(samples), n_variants)
        stored = StoredFileset(root, "")
        with build_fileset(root, GENOTYPES_KIND, stored) as fileset:
            fileset.copy(context.path, "genotypes.pgen")
            fileset.copy(pvar, "genotypes.pvar")
            fileset.copy(psam, "genotypes.psam")
        yield from register_fileset(context, samples, stored, "genotypes.pgen", "pgen")
