// Shared helpers for every page: the page's context (its JSON twin, embedded), Plotly
// defaults, and small formatting helpers. No framework, no build step.
"use strict";
window.medlake = {
  pageData() {
    const node = document.getElementById("page-data");
    return node ? JSON.parse(node.textContent) : {};
  },
  plot(id, traces, layout, config) {
    const node = document.getElementById(id);
    if (!node || !window.Plotly) return;
    const base = {margin: {l: 55, r: 15, t: 10, b: 40}, paper_bgcolor: "rgba(0,0,0,0)",
                  plot_bgcolor: "rgba(0,0,0,0)", font: {family: "system-ui, sans-serif", size: 12, color: "#1f2933"},
                  xaxis: {gridcolor: "#e6e9ee", zeroline: false}, yaxis: {gridcolor: "#e6e9ee", zeroline: false}};
    const merged = Object.assign({}, base, layout || {});
    merged.xaxis = Object.assign({}, base.xaxis, (layout || {}).xaxis || {});
    merged.yaxis = Object.assign({}, base.yaxis, (layout || {}).yaxis || {});
    window.Plotly.react(node, traces, merged, Object.assign({displaylogo: false, responsive: true}, config || {}));
    node.dataset.drawn = "1";
  },
  palette: ["#2f6f9f", "#d9822b", "#3f9f6f", "#9f3f6f", "#6f5f9f", "#8f8f2f", "#2f8f8f", "#af4f3f"],
};
