"""Analysis results pages: GWAS (Manhattan, QQ, top hits) and differential expression
(volcano, top genes), drawn in the browser by the Plotly shipped in the ``plotly``
package.

Results are found where analyses write them: the background jobs' results (the ``job``
table, where the server has one: each succeeded GWAS/DE job names its Parquet) and the
Parquet files under ``analyses/`` in the workspace or its exports folder (runs made
with ``medlake gwas``/``medlake de --out``). Plot data is computed here, once, so the page
and its JSON twin carry the same points; long tails of unremarkable points are thinned
(every P < 1e-3 kept) so a million-variant result still draws fast.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from medlake.access import Permission, is_allowed
from medlake.config import open_workspace
from medlake.errors import UsageError
from medlake.omics.gwas.plots import GENOME_WIDE, genomic_inflation
from medlake.server.ui.web import Frame, may, page
from medlake.service import access, webui

GWAS_SUFFIX = ".glm.parquet"
DE_SUFFIX = ".de.parquet"
#: Points drawn per plot at most (the smallest P values are always kept).
MAX_POINTS = 20_000
KEEP_BELOW_P = 1e-3
TOP_HITS = 25
DE_ALPHA = 0.05


@dataclass(frozen=True)
class Result:
    result_id: str
    kind: str  # "gwas" or "de"
    name: str
    path: Path
    written: dt.datetime
    project_id: str | None = None
    summary: dict[str, Any] | None = None

    def listing(self, root: Path) -> dict[str, Any]:
        try:
            shown = str(self.path.relative_to(root))
        except ValueError:
            shown = str(self.path)
        return {"result_id": self.result_id, "kind": self.kind, "name": self.name,
                "path": shown, "written": self.written.replace(microsecond=0),
                "project_id": self.project_id}  # fmt: skip


def _kind(path: Path) -> str | None:
    if path.name.endswith(GWAS_SUFFIX):
        return "gwas"
    if path.name.endswith(DE_SUFFIX):
        return "de"
    return None


def _file_result(root: Path, path: Path, **extra: Any) -> Result | None:
    kind = _kind(path)
    if kind is None or not path.is_file():
        return None
    name = path.name.removesuffix(GWAS_SUFFIX if kind == "gwas" else DE_SUFFIX)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
    return Result(extra.pop("result_id", f"f{digest}"), kind, name, path, written, **extra)


def find_results(root: Path) -> list[Result]:
    """Every GWAS/DE result of the workspace, newest first."""
    workspace = open_workspace(root)
    found: dict[Path, Result] = {}
    for job in webui.analysis_jobs(root):
        for file in (job["result"].get("files") or {}).values():
            path = Path(file) if Path(file).is_absolute() else root / file
            result = _file_result(root, path, result_id=f"j{job['job_id']}",
                                  project_id=job["project_id"], summary=job["result"])  # fmt: skip
            if result is not None:
                found[path.resolve()] = result
    for folder in (root / "analyses", workspace.exports_dir / "analyses"):
        if folder.is_dir():
            for path in sorted(folder.rglob("*.parquet")):
                if path.resolve() not in found and (result := _file_result(root, path)):
                    found[path.resolve()] = result
    return sorted(found.values(), key=lambda r: (r.written, r.name), reverse=True)


def _allowed(frame: Frame, results: list[Result]) -> list[Result]:
    """Results the user may see: all for stewards; a researcher's projects' only."""
    assert frame.user is not None
    return [r for r in results if _may_see(frame, r)]


def _may_see(frame: Frame, result: Result) -> bool:
    assert frame.user is not None
    return is_allowed(frame.user, Permission.ANALYZE, result.project_id)


@page("/analyses", "analyses.html")
def analyses(frame: Frame) -> dict[str, Any]:
    """The results the user may see: every one for stewards, their projects' for
    researchers (``?project=`` checks one project); others are refused (audited)."""
    assert frame.user is not None
    project = frame.request.query_params.get("project") or None
    if project is not None or not may(frame.user, Permission.ANALYZE):
        access.require(frame.root, Permission.ANALYZE, user=frame.user.user_name,
                       project_id=project)  # fmt: skip
    results = _allowed(frame, find_results(frame.root))
    return {"results": [r.listing(frame.root) for r in results]}


@page("/analyses/{result_id}", "analysis.html")
def analysis(frame: Frame) -> dict[str, Any]:
    assert frame.user is not None
    if not may(frame.user, Permission.ANALYZE):  # refused (and audited) before any lookup
        access.require(frame.root, Permission.ANALYZE, user=frame.user.user_name)
    wanted = frame.request.path_params["result_id"]
    result = next((r for r in find_results(frame.root) if r.result_id == wanted), None)
    if result is None:
        raise UsageError(f"no analysis result {wanted!r}")
    # The result's own project decides (a researcher outside it is refused, audited).
    access.require(frame.root, Permission.ANALYZE, user=frame.user.user_name,
                   project_id=result.project_id)  # fmt: skip
    body = gwas_plots(result.path) if result.kind == "gwas" else de_plots(result.path)
    return result.listing(frame.root) | {"summary": result.summary} | body


def _neg_log10(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log10(np.clip(p, 1e-300, 1.0))


def _thinned(p: np.ndarray) -> np.ndarray:
    """Indices to draw: every P below :data:`KEEP_BELOW_P`, an even sample of the rest."""
    keep = np.flatnonzero(p < KEEP_BELOW_P)
    rest = np.flatnonzero(~(p < KEEP_BELOW_P))
    room = max(MAX_POINTS - keep.size, 0)
    if rest.size > room:
        rest = rest[np.linspace(0, rest.size - 1, room).astype(int)] if room else rest[:0]
    return np.sort(np.concatenate([keep, rest]))


def _chrom_order(name: str) -> tuple[int, str]:
    bare = name.removeprefix("chr")
    return (int(bare), "") if bare.isdigit() else (100, bare)


def gwas_plots(path: Path) -> dict[str, Any]:
    """Manhattan (cumulative position per chromosome), QQ and the top hits of a result."""
    table = pq.read_table(path, columns=["chrom", "pos", "id", "a1", "beta", "se", "p"])
    frame = table.to_pandas()
    frame = frame[frame["p"].notna()].reset_index(drop=True)
    p = frame["p"].to_numpy(dtype=float)
    chroms = sorted(frame["chrom"].astype(str).unique(), key=_chrom_order)
    offsets, ticks, start = {}, [], 0
    for chrom in chroms:
        positions = frame.loc[frame["chrom"].astype(str) == chrom, "pos"]
        offsets[chrom] = start
        middle = (int(positions.min()) + int(positions.max())) / 2
        ticks.append({"chrom": chrom, "x": start + middle})
        start += int(positions.max()) + 1
    x = frame["pos"].to_numpy() + frame["chrom"].astype(str).map(offsets).to_numpy()
    drawn = _thinned(p)
    order = np.argsort(p)
    expected = _neg_log10((np.arange(p.size) + 0.5) / max(p.size, 1))
    qq_drawn = _thinned(np.sort(p))
    top = frame.iloc[order[:TOP_HITS]]
    return {
        "variants": int(p.size),
        "lambda_gc": float(genomic_inflation(p)) if p.size else None,
        "genome_wide": GENOME_WIDE,
        "hits": int((p < GENOME_WIDE).sum()),
        "manhattan": {
            "x": x[drawn].tolist(),
            "y": _neg_log10(p[drawn]).round(4).tolist(),
            "chrom_index": [chroms.index(c) for c in frame["chrom"].astype(str).iloc[drawn]],
            "label": frame["id"].iloc[drawn].tolist(),
            "ticks": ticks,
            "threshold": float(-np.log10(GENOME_WIDE)),
        },
        "qq": {
            "expected": expected[qq_drawn].round(4).tolist(),
            "observed": _neg_log10(np.sort(p)[qq_drawn]).round(4).tolist(),
        },
        "top": top.to_dict(orient="records"),
    }


def de_plots(path: Path) -> dict[str, Any]:
    """Volcano (log2 fold change against -log10 P) and the top genes by adjusted P."""
    frame = pq.read_table(path).to_pandas()
    gene = next(c for c in frame.columns if c not in ("baseMean", "log2FoldChange", "lfcSE",
                                                      "stat", "pvalue", "padj"))  # fmt: skip
    shown = frame[frame["pvalue"].notna() & frame["log2FoldChange"].notna()].reset_index(drop=True)
    p = shown["pvalue"].to_numpy(dtype=float)
    drawn = _thinned(p)
    significant = (shown["padj"] < DE_ALPHA).to_numpy()
    top = shown.sort_values(["padj", "pvalue"]).head(TOP_HITS)
    top = top[[gene, "baseMean", "log2FoldChange", "lfcSE", "pvalue", "padj"]]
    return {
        "genes": len(frame),
        "genes_tested": int(frame["pvalue"].notna().sum()),
        "significant": int(significant.sum()),
        "alpha": DE_ALPHA,
        "volcano": {
            "x": shown["log2FoldChange"].to_numpy(dtype=float)[drawn].round(4).tolist(),
            "y": _neg_log10(p[drawn]).round(4).tolist(),
            "significant": significant[drawn].tolist(),
            "label": shown[gene].astype(str).iloc[drawn].tolist(),
        },
        "top": top.rename(columns={gene: "gene"}).to_dict(orient="records"),
    }
