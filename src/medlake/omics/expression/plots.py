"""Volcano and MA plots of a DE results table: PNG (Matplotlib) and HTML (Plotly).

The HTML files are self-contained: Plotly's JavaScript is inlined from the installed
``plotly`` package (``include_plotlyjs=True``), never fetched from a CDN, since
hospital networks are usually closed. Genes with ``padj < alpha`` are highlighted;
genes without a p-value (all-zero, Cook's outliers) are left out of the volcano.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go

_SIG, _NOT = "#d62728", "#9e9e9e"


def _significant(table: pd.DataFrame, alpha: float) -> np.ndarray:
    return (table["padj"] < alpha).to_numpy()


def _volcano_xy(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    shown = table[table["pvalue"].notna() & table["log2FoldChange"].notna()]
    floor = np.nextafter(0, 1)  # p = 0 (underflow) drawn at the top, not dropped
    y = -np.log10(np.maximum(shown["pvalue"].to_numpy(dtype=float), floor))
    return shown, y


def volcano_png(table: pd.DataFrame, path: Path, *, alpha: float, title: str) -> None:
    shown, y = _volcano_xy(table)
    sig = _significant(shown, alpha)
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    x = shown["log2FoldChange"].to_numpy(dtype=float)
    ax.scatter(x[~sig], y[~sig], s=6, c=_NOT, alpha=0.6, linewidths=0, label="not significant")
    ax.scatter(x[sig], y[sig], s=8, c=_SIG, alpha=0.8, linewidths=0, label=f"padj < {alpha:g}")
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("log2 fold change")
    ax.set_ylabel("-log10 p-value")
    ax.set_title(title)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ma_png(table: pd.DataFrame, path: Path, *, alpha: float, title: str) -> None:
    shown = table[(table["baseMean"] > 0) & table["log2FoldChange"].notna()]
    sig = _significant(shown, alpha)
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    x = shown["baseMean"].to_numpy(dtype=float)
    y = shown["log2FoldChange"].to_numpy(dtype=float)
    ax.scatter(x[~sig], y[~sig], s=6, c=_NOT, alpha=0.6, linewidths=0, label="not significant")
    ax.scatter(x[sig], y[sig], s=8, c=_SIG, alpha=0.8, linewidths=0, label=f"padj < {alpha:g}")
    ax.set_xscale("log")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("mean of normalized counts")
    ax.set_ylabel("log2 fold change")
    ax.set_title(title)
    ax.legend(loc="upper right", frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _html(
    shown: pd.DataFrame, x: np.ndarray, y: np.ndarray, sig: np.ndarray, labels: tuple[str, str],
    title: str, alpha: float, path: Path, log_x: bool = False,
) -> None:  # fmt: skip
    fig = go.Figure()
    genes = shown.index.astype(str).to_numpy()
    padj = shown["padj"].to_numpy(dtype=float)
    for mask, name, colour in ((~sig, "not significant", _NOT), (sig, f"padj < {alpha:g}", _SIG)):
        fig.add_trace(
            go.Scattergl(
                x=x[mask], y=y[mask], mode="markers", name=name,
                marker={"color": colour, "size": 5, "opacity": 0.7},
                text=genes[mask], customdata=padj[mask],
                hovertemplate="%{text}<br>x=%{x:.3g}<br>y=%{y:.3g}<br>padj=%{customdata:.3g}"
                "<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title, xaxis_title=labels[0], yaxis_title=labels[1], template="plotly_white"
    )
    if log_x:
        fig.update_xaxes(type="log")
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def volcano_html(table: pd.DataFrame, path: Path, *, alpha: float, title: str) -> None:
    shown, y = _volcano_xy(table)
    x = shown["log2FoldChange"].to_numpy(dtype=float)
    labels = ("log2 fold change", "-log10 p-value")
    _html(shown, x, y, _significant(shown, alpha), labels, title, alpha, path)


def ma_html(table: pd.DataFrame, path: Path, *, alpha: float, title: str) -> None:
    shown = table[(table["baseMean"] > 0) & table["log2FoldChange"].notna()]
    x = shown["baseMean"].to_numpy(dtype=float)
    y = shown["log2FoldChange"].to_numpy(dtype=float)
    labels = ("mean of normalized counts", "log2 fold change")
    _html(shown, x, y, _significant(shown, alpha), labels, title, alpha, path, log_x=True)


def write_plots(table: pd.DataFrame, prefix: Path, *, alpha: float, title: str) -> list[Path]:
    """Volcano and MA plots as ``PREFIX.volcano.png/.html`` and ``PREFIX.ma.png/.html``."""
    paths = []
    for name, draw in (
        ("volcano.png", volcano_png), ("volcano.html", volcano_html),
        ("ma.png", ma_png), ("ma.html", ma_html),
    ):  # fmt: skip
        path = prefix.with_name(f"{prefix.name}.{name}")
        draw(table, path, alpha=alpha, title=title)
        paths.append(path)
    return paths
