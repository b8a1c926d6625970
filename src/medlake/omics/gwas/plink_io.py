"""Read PLINK inputs: genotype files (.bed/.bim/.fam, .pgen/.pvar/.psam) and
phenotype/covariate tables in PLINK 2's text format.

Genotypes are decoded by ``pgenlib`` (PLINK 2's own reader; it reads PLINK 1 ``.bed``
too, given the sample count) one block of variants at a time, so memory depends on the
block size, never on the number of variants. A call is the ALT allele count (``.bim``
column 5 is ALT, column 6 REF, as PLINK 2 reads it), ``-9`` when missing.

Phenotype and covariate files follow PLINK 2: a header line starting ``#FID IID`` or
``#IID`` (``FID IID`` accepted too), whitespace separated, missing values ``NA``,
``nan`` or ``-9``; samples absent from a file have missing values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from medlake.errors import InputError, UsageError

MISSING_TOKENS = ("NA", "nan", "NaN", "-9", "")


@dataclass(frozen=True)
class Samples:
    """Samples of a genotype file, in file order."""

    fid: np.ndarray  # str
    iid: np.ndarray  # str
    sex: np.ndarray  # int8: 1 male, 2 female, 0 unknown
    founder: np.ndarray  # bool: neither parent given

    def __len__(self) -> int:
        return int(self.iid.size)


@dataclass(frozen=True)
class Variants:
    """Variant metadata of a genotype file, in file order."""

    chrom: np.ndarray  # str
    pos: np.ndarray  # int64
    id: np.ndarray  # str
    ref: np.ndarray  # str
    alt: np.ndarray  # str

    def __len__(self) -> int:
        return int(self.id.size)

    def take(self, index: np.ndarray) -> Variants:
        """The variants at ``index`` (a slice or integer array)."""
        return Variants(*(a[index] for a in (self.chrom, self.pos, self.id, self.ref, self.alt)))


def _read_table(path: Path, names: list[str] | None, *, comment_header: bool) -> pa.Table:
    """Whitespace-separated text table as strings (PLINK files are tab or space)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [ln.split() for ln in lines if ln.strip() and not (ln.startswith("##"))]
    if names is None:
        if not body or not (comment_header or body[0][0] in ("FID", "IID", "#FID", "#IID")):
            raise InputError(f"{path}: expected a header line starting #FID or #IID")
        names = [body[0][0].lstrip("#"), *body[0][1:]]
        body = body[1:]
    elif body and body[0][0].startswith("#"):
        names = [body[0][0].lstrip("#"), *body[0][1:]]
        body = body[1:]
    width = len(names)
    for number, row in enumerate(body, start=2):
        if len(row) != width:
            raise InputError(f"{path}: line {number} has {len(row)} fields, expected {width}")
    columns = list(zip(*body, strict=True)) if body else [()] * width
    return pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, columns, strict=True)})


def read_samples(path: Path) -> Samples:
    """Read a ``.fam`` (no header) or ``.psam`` (``#FID``/``#IID`` header) file."""
    if path.suffix == ".fam":
        t = _read_table(path, ["FID", "IID", "PAT", "MAT", "SEX", "PHENO"], comment_header=False)
    else:
        t = _read_table(path, None, comment_header=True)
    iid = np.asarray(t.column("IID").to_pylist(), dtype=object)
    fid = np.asarray(t.column("FID").to_pylist(), dtype=object) if "FID" in t.column_names else iid
    n = iid.size
    sex = np.zeros(n, dtype=np.int8)
    if "SEX" in t.column_names:
        raw = np.asarray(t.column("SEX").to_pylist(), dtype=object)
        sex[raw == "1"] = 1
        sex[raw == "2"] = 2
    founder = np.ones(n, dtype=bool)
    for parent in ("PAT", "MAT"):
        if parent in t.column_names:
            founder &= np.asarray(t.column(parent).to_pylist(), dtype=object) == "0"
    return Samples(fid=fid, iid=iid, sex=sex, founder=founder)


def read_variants(path: Path) -> Variants:
    """Read a ``.bim`` (ALT in column 5) or ``.pvar`` (VCF-like header) file."""
    if path.suffix == ".bim":
        opts = pacsv.ReadOptions(column_names=["CHROM", "ID", "CM", "POS", "ALT", "REF"])
        parse = pacsv.ParseOptions(delimiter="\t")
    else:
        with path.open(encoding="utf-8") as handle:
            skip = 0
            for line in handle:
                if line.startswith("##"):
                    skip += 1
                    continue
                header = line.lstrip("#").split()
                break
            else:
                raise InputError(f"{path}: no #CHROM header line")
        opts = pacsv.ReadOptions(skip_rows=skip + 1, column_names=header)
        parse = pacsv.ParseOptions(delimiter="\t")
    convert = pacsv.ConvertOptions(
        column_types={
            "CHROM": pa.string(),
            "ID": pa.string(),
            "POS": pa.int64(),
            "REF": pa.string(),
            "ALT": pa.string(),
        },
        include_columns=["CHROM", "POS", "ID", "REF", "ALT"],
    )
    try:
        t = pacsv.read_csv(path, read_options=opts, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, KeyError) as error:
        raise InputError(f"{path}: unreadable variant table ({error})") from error
    cols = [
        np.asarray(t.column(c).to_pylist(), dtype=object) for c in ("CHROM", "ID", "REF", "ALT")
    ]
    return Variants(
        chrom=cols[0], pos=t.column("POS").to_numpy(), id=cols[1], ref=cols[2], alt=cols[3]
    )


class GenotypeFile:
    """A PLINK genotype fileset read in blocks of variants through ``pgenlib``.

    Parameters
    ----------
    prefix : pathlib.Path
        Fileset prefix: ``prefix.bed/.bim/.fam`` or ``prefix.pgen/.pvar/.psam``.
    kind : {"bed", "pgen"}
    """

    def __init__(self, prefix: Path, kind: str) -> None:
        import pgenlib  # optional ``omics`` extra; imported when a file is opened

        if kind not in ("bed", "pgen"):
            raise UsageError(f"genotype format must be bed or pgen, got {kind!r}")
        paths = {"bed": (".bed", ".bim", ".fam"), "pgen": (".pgen", ".pvar", ".psam")}[kind]
        self.geno_path, var_path, sam_path = (Path(f"{prefix}{ext}") for ext in paths)
        for path in (self.geno_path, var_path, sam_path):
            if not path.is_file():
                raise InputError(f"{path}: no such file")
        self.samples = read_samples(sam_path)
        self.variants = read_variants(var_path)
        try:
            self._reader = pgenlib.PgenReader(
                bytes(self.geno_path), raw_sample_ct=len(self.samples)
            )
        except RuntimeError as error:
            raise InputError(f"{self.geno_path}: {error}") from error
        if self._reader.get_variant_ct() != len(self.variants):
            raise InputError(
                f"{self.geno_path}: {self._reader.get_variant_ct()} variants, "
                f"but {var_path} lists {len(self.variants)}"
            )

    def __enter__(self) -> GenotypeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the reader's file handle."""
        self._reader.close()

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """ALT counts of variants ``start:stop`` as ``(stop-start, n_samples)`` int8, -9 missing."""
        shape = (stop - start, len(self.samples))
        if out is None or out.shape != shape:
            out = np.empty(shape, dtype=np.int8)
        self._reader.read_range(start, stop, out)
        return out

    def blocks(self, block_variants: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start, stop, calls)`` over all variants, ``block_variants`` at a time."""
        total = len(self.variants)
        buffer: np.ndarray | None = None
        for start in range(0, total, block_variants):
            stop = min(start + block_variants, total)
            buffer = self.read(start, stop, buffer if stop - start == block_variants else None)
            yield start, stop, buffer


def read_sample_table(path: Path, columns: list[str] | None = None) -> tuple[np.ndarray, dict]:
    """Read a PLINK 2 phenotype or covariate file.

    Returns the IIDs and ``{column: values}``: float64 with NaN for missing (``NA``,
    ``nan``, ``-9``). Non-numeric columns raise :class:`InputError` naming the column.
    """
    table = _read_table(path, None, comment_header=True)
    if "IID" not in table.column_names:
        raise InputError(f"{path}: header has no IID column")
    iid = np.asarray(table.column("IID").to_pylist(), dtype=object)
    available = [c for c in table.column_names if c not in ("FID", "IID", "SID", "PAT", "MAT")]
    wanted = columns or available
    values: dict[str, np.ndarray] = {}
    for name in wanted:
        if name not in table.column_names:
            raise InputError(f"{path}: no column {name!r} (has {', '.join(available)})")
        raw = table.column(name).to_pylist()
        out = np.empty(len(raw), dtype=np.float64)
        for i, token in enumerate(raw):
            if token in MISSING_TOKENS:
                out[i] = np.nan
                continue
            try:
                out[i] = float(token)
            except ValueError:
                message = f"{path}: column {name}, line {i + 2}: {token!r} is not a number"
                raise InputError(message) from None
        out[out == -9] = np.nan
        values[name] = out
    return iid, values


def align(target_iid: np.ndarray, iid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (by ``iid``) reordered to ``target_iid``; NaN where a sample is absent."""
    position = {s: i for i, s in enumerate(iid)}
    index = np.array([position.get(s, -1) for s in target_iid], dtype=np.int64)
    out = np.full(target_iid.size, np.nan)
    found = index >= 0
    out[found] = values[index[found]]
    return out
