"""The QC report: one self-contained HTML file with tables and Plotly charts.

Plotly's JavaScript is inlined from the installed ``plotly`` package (no CDN: the
report opens on a machine without internet, as hospital networks often are). The page
is built from :class:`ReportData`, the same plain data the web UI and ``--json`` use.
Markup is escaped with :func:`html.escape`; no template engine is needed for one page.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

STATUS_ORDER = ("fail", "error", "pass", "n/a")
CATEGORIES = ("conformance", "completeness", "plausibility")


@dataclass
class ReportData:
    """What the report shows: the run, its results, the runs before it, check trends."""

    run: dict[str, Any]
    results: list[dict[str, Any]]
    runs: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    trends: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per check id

    def counts(self) -> dict[str, dict[str, int]]:
        """Checks per Kahn category and status."""
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for row in self.results:
            table[row["category"]][row["status"]] += 1
        return {c: dict(table[c]) for c in CATEGORIES if c in table}


def render_html(data: ReportData, *, title: str = "medlake data-quality report") -> str:
    """The report as one HTML document (plotly.js inlined)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    failing = [r for r in data.results if r["status"] in ("fail", "error")]
    failing.sort(key=lambda r: (r["status"] != "fail", -(r["pct_violating"] or 0)))
    figures = [
        _category_figure(go, data),
        _failing_figure(go, failing),
        _runs_figure(go, data.runs),
        _trend_figure(go, data.trends, [r["check_id"] for r in failing[:10]]),
    ]
    charts = "\n".join(
        f'<div class="chart">{fig.to_html(full_html=False, include_plotlyjs=False)}</div>'
        for fig in figures
        if fig is not None
    )
    run = data.run
    summary = (
        f"Run <code>{_e(run['run_id'])}</code> ({_e(run['trigger'])}) started "
        f"{_e(str(run['started_at'])[:19])} UTC: {run['checks']:,} checks, "
        f"<b>{run['failed']:,} failed</b>, {run['errors']:,} could not run."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.fail td {{ background: #fde2e2; }} tr.error td {{ background: #fff1cc; }}
.chart {{ max-width: 1100px; }}
</style></head><body>
<h1>{_e(title)}</h1>
<p>{summary}</p>
<h2>Checks by category</h2>
{_counts_table(data)}
{charts}
<h2>Failed checks ({len(failing):,})</h2>
{_results_table(failing)}
<details><summary>All {len(data.results):,} checks</summary>
{_results_table(data.results)}
</details>
</body></html>
"""


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text))


def _counts_table(data: ReportData) -> str:
    counts = data.counts()
    head = "".join(f"<th>{s}</th>" for s in STATUS_ORDER)
    rows = "".join(
        f"<tr><td>{c}</td>"
        + "".join(f'<td class="n">{counts[c].get(s, 0):,}</td>' for s in STATUS_ORDER)
        + "</tr>"
        for c in counts
    )
    return f"<table><tr><th>category</th>{head}</tr>{rows}</table>"


def _results_table(rows: list[dict[str, Any]]) -> str:
    columns = ("check_id", "category", "level", "rows_violating", "rows_total", "pct_violating",
               "threshold_pct", "status", "message")  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if isinstance(value, float):
                cells.append(f'<td class="n">{value:.3f}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="n">{value:,}</td>')
            else:
                cells.append(f"<td>{_e(value)}</td>")
        body.append(f'<tr class="{_e(row.get("status"))}">{"".join(cells)}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _category_figure(go: Any, data: ReportData) -> Any:
    counts = data.counts()
    colours = {"pass": "#4caf50", "fail": "#e53935", "error": "#fb8c00", "n/a": "#bdbdbd"}
    fig = go.Figure(
        [
            go.Bar(
                name=s,
                x=list(counts),
                y=[counts[c].get(s, 0) for c in counts],
                marker_color=colours[s],
            )
            for s in STATUS_ORDER
        ]
    )
    fig.update_layout(barmode="stack", title="Checks by Kahn category and status", height=350)
    return fig


def _failing_figure(go: Any, failing: list[dict[str, Any]]) -> Any:
    shown = [r for r in failing if r["status"] == "fail"][:30]
    if not shown:
        return None
    names = [r["check_id"] for r in shown][::-1]
    fig = go.Figure(
        [
            go.Bar(name="% violating", y=names, x=[r["pct_violating"] for r in shown][::-1],
                   orientation="h", marker_color="#e53935"),
            go.Scatter(name="threshold %", y=names, x=[r["threshold_pct"] for r in shown][::-1],
                       mode="markers", marker={"symbol": "line-ns-open", "size": 14}),
        ]
    )  # fmt: skip
    fig.update_layout(
        title="Failed checks: percent of rows violating, and the threshold",
        height=200 + 22 * len(shown),
        xaxis_type="log",
        margin={"l": 420},
    )
    return fig


def _runs_figure(go: Any, runs: list[dict[str, Any]]) -> Any:
    if len(runs) < 2:
        return None
    times = [r["started_at"] for r in runs]
    fig = go.Figure(
        [
            go.Scatter(name="failed", x=times, y=[r["failed"] for r in runs], mode="lines+markers"),
            go.Scatter(name="errors", x=times, y=[r["errors"] for r in runs], mode="lines+markers"),
        ]
    )
    fig.update_layout(title="Failed checks per run", height=300)
    return fig


def _trend_figure(go: Any, trends: dict[str, list[dict[str, Any]]], check_ids: list[str]) -> Any:
    lines = [
        go.Scatter(
            name=check_id,
            x=[p["started_at"] for p in trends[check_id]],
            y=[p["pct_violating"] for p in trends[check_id]],
            mode="lines+markers",
        )
        for check_id in check_ids
        if len(trends.get(check_id, ())) >= 2
    ]
    if not lines:
        return None
    fig = go.Figure(lines)
    fig.update_layout(title="Trend of the failed checks (% violating per run)", height=400)
    return fig


__all__ = ["ReportData", "render_html"]
