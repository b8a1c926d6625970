"""Manhattan and QQ plots of GWAS results, and the genomic inflation factor.

PNG through matplotlib (Agg, no display needed); interactive HTML through Plotly with
its JavaScript inlined from the installed package (``include_plotlyjs=True``): no CDN,
since hospital networks are usually closed. λGC (Devlin & Roeder 1999) is the median
of the 1-df chi-square statistics implied by the P values over the chi-square median.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import stats

GENOME_WIDE = 5e-8


def genomic_inflation(p: np.ndarray) -> float:
    """λGC of the finite P values in ``p`` (NaN when there are none)."""
    p = p[np.isfinite(p) & (p > 0)]
    if p.size == 0:
        return float("nan")
    chisq = stats.chi2.isf(np.median(p), 1)
    return float(chisq / stats.chi2.ppf(0.5, 1))


def _chrom_order(chrom: np.ndarray) -> np.ndarray:
    names = {"X": 23, "Y": 24, "XY": 25, "MT": 26, "M": 26}
    return np.array(
        [int(c) if c.isdigit() else names.get(c.removeprefix("chr"), 27) for c in chrom]
    )


def _layout(results: pa.Table) -> dict[str, np.ndarray]:
    p = results.column("p").to_numpy(zero_copy_only=False)
    ok = np.isfinite(p) & (p > 0)
    chrom = np.asarray(results.column("chrom").to_pylist(), dtype=object)[ok]
    pos = results.column("pos").to_numpy()[ok].astype(np.float64)
    ids = np.asarray(results.column("id").to_pylist(), dtype=object)[ok]
    order_key = _chrom_order(chrom)
    order = np.lexsort((pos, order_key))
    chrom, pos, ids, key, p = chrom[order], pos[order], ids[order], order_key[order], p[ok][order]
    x = np.empty_like(pos)
    offset = 0.0
    ticks, labels = [], []
    for value in np.unique(key):
        sel = key == value
        span = pos[sel].max() - pos[sel].min() + 1.0
        x[sel] = pos[sel] - pos[sel].min() + offset
        ticks.append(offset + span / 2)
        labels.append(str(chrom[sel][0]))
        offset += span * 1.02
    return {
        "x": x,
        "logp": -np.log10(p),
        "key": key,
        "ids": ids,
        "chrom": chrom,
        "pos": pos,
        "ticks": np.array(ticks),
        "labels": np.array(labels),
        "p": p,
    }


def plot_paths(prefix: Path) -> list[Path]:
    """The files :func:`write_plots` writes for ``prefix``."""
    return [Path(f"{prefix}.{k}") for k in ("manhattan.png", "manhattan.html", "qq.png", "qq.html")]


def write_plots(results: pa.Table, prefix: Path, title: str) -> dict[str, Path]:
    """Write ``PREFIX.manhattan.png/.html`` and ``PREFIX.qq.png/.html``; return paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    lay = _layout(results)
    lam = genomic_inflation(lay["p"])
    paths = {
        k: Path(f"{prefix}.{k.replace('_', '.')}")
        for k in ("manhattan_png", "manhattan_html", "qq_png", "qq_html")
    }
    colour = np.where(lay["key"] % 2 == 0, "#1f4e79", "#7aa6d6")
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.scatter(lay["x"], lay["logp"], s=4, c=colour, rasterized=True)
    ax.axhline(-np.log10(GENOME_WIDE), color="#c0392b", lw=0.8, ls="--")
    ax.set_xticks(lay["ticks"], lay["labels"], fontsize=7)
    ax.set_xlabel("chromosome")
    ax.set_ylabel("-log10(P)")
    ax.set_title(f"{title}  (λGC = {lam:.3f})")
    fig.tight_layout()
    fig.savefig(paths["manhattan_png"], dpi=120)
    plt.close(fig)
    n = lay["p"].size
    expected = -np.log10((np.arange(1, n + 1) - 0.5) / max(n, 1))
    observed = np.sort(lay["logp"])[::-1]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(expected, observed, s=4, c="#1f4e79")
    top = max(expected.max(initial=1.0), observed.max(initial=1.0))
    ax.plot([0, top], [0, top], color="#c0392b", lw=0.8)
    ax.set_xlabel("expected -log10(P)")
    ax.set_ylabel("observed -log10(P)")
    ax.set_title(f"{title}  (λGC = {lam:.3f})")
    fig.tight_layout()
    fig.savefig(paths["qq_png"], dpi=120)
    plt.close(fig)
    hover = [
        f"{i}<br>{c}:{int(p)}" for i, c, p in zip(lay["ids"], lay["chrom"], lay["pos"], strict=True)
    ]
    man = go.Figure(
        go.Scattergl(
            x=lay["x"],
            y=lay["logp"],
            mode="markers",
            text=hover,
            marker={"size": 4, "color": colour.tolist()},
        )
    )
    man.add_hline(y=-np.log10(GENOME_WIDE), line_dash="dash", line_color="#c0392b")
    man.update_layout(
        title=f"{title} (λGC = {lam:.3f})",
        yaxis_title="-log10(P)",
        xaxis={
            "tickvals": lay["ticks"].tolist(),
            "ticktext": lay["labels"].tolist(),
            "title": "chromosome",
        },
    )
    man.write_html(paths["manhattan_html"], include_plotlyjs=True, full_html=True)
    qq = go.Figure(go.Scattergl(x=expected, y=observed, mode="markers", marker={"size": 4}))
    qq.add_shape(type="line", x0=0, y0=0, x1=top, y1=top, line={"color": "#c0392b"})
    qq.update_layout(
        title=f"{title} QQ (λGC = {lam:.3f})",
        xaxis_title="expected -log10(P)",
        yaxis_title="observed -log10(P)",
    )
    qq.write_html(paths["qq_html"], include_plotlyjs=True, full_html=True)
    return paths
