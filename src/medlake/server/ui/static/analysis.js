// GWAS Manhattan and QQ, DE volcano: the points come computed (and thinned) in the page's
// context, so the page and its JSON twin draw the same thing.
"use strict";
(function () {
  const page = medlake.pageData();
  if (page.kind === "gwas") {
    const m = page.manhattan;
    const colors = m.chrom_index.map((i) => (i % 2 ? "#7aa6c8" : "#2f6f9f"));
    medlake.plot("manhattan", [{type: "scatter", mode: "markers", x: m.x, y: m.y, text: m.label,
      hovertemplate: "%{text}<br>-log10 P = %{y:.2f}<extra></extra>", marker: {size: 5, color: colors}}],
      {xaxis: {tickvals: m.ticks.map((t) => t.x), ticktext: m.ticks.map((t, i) => (i < 12 || i % 2 === 0 ? t.chrom : "")), title: {text: "chromosome"}, showgrid: false},
       yaxis: {title: {text: "-log10 P"}, rangemode: "tozero"},
       shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: m.threshold, y1: m.threshold, line: {color: "#c0392b", dash: "dash", width: 1}}]});
    const q = page.qq;
    const top = Math.max(...q.expected, 1);
    medlake.plot("qq", [
      {type: "scatter", mode: "markers", x: q.expected, y: q.observed, marker: {size: 5, color: "#2f6f9f"}, name: "P",
       hovertemplate: "expected %{x:.2f}<br>observed %{y:.2f}<extra></extra>"},
      {type: "scatter", mode: "lines", x: [0, top], y: [0, top], line: {color: "#c0392b", dash: "dash", width: 1}, hoverinfo: "skip"}],
      {showlegend: false, xaxis: {title: {text: "expected -log10 P"}}, yaxis: {title: {text: "observed -log10 P"}}});
  } else if (page.kind === "de") {
    const v = page.volcano;
    medlake.plot("volcano", [{type: "scatter", mode: "markers", x: v.x, y: v.y, text: v.label,
      hovertemplate: "%{text}<br>log2FC %{x:.2f}<br>-log10 P %{y:.2f}<extra></extra>",
      marker: {size: 6, color: v.significant.map((s) => (s ? "#c0392b" : "#9aa5b1")), opacity: 0.8}}],
      {xaxis: {title: {text: "log2 fold change"}}, yaxis: {title: {text: "-log10 P"}}});
  }
})();
