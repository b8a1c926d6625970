// Patient timeline: one row per domain, one mark per item (a line for items with an end
// date), hover names the concept and the source record; Plotly gives zoom and pan.
"use strict";
(function () {
  const page = medlake.pageData();
  const kinds = page.domains.map((d) => d.kind);
  const traces = [];
  kinds.forEach((kind, i) => {
    const items = page.items.filter((item) => item.kind === kind && item.start);
    const color = medlake.palette[i % medlake.palette.length];
    const text = items.map((item) => [
      "<b>" + (item.concept_name || item.source_value || kind) + "</b>",
      item.start + (item.end && item.end !== item.start ? " → " + item.end : ""),
      Object.entries(item.values || {}).map(([k, v]) => k + ": " + v).join(", "),
      (item.source_system || "") + " " + (item.source_record_id || ""),
    ].filter(Boolean).join("<br>"));
    traces.push({type: "scatter", mode: "markers", name: kind, x: items.map((item) => item.start),
      y: items.map(() => kind), text: text, hoverinfo: "text", marker: {size: 9, color: color, opacity: 0.8,
      line: {width: 1, color: "#fff"}}});
    const spans = items.filter((item) => item.end && item.end !== item.start);
    if (spans.length) {
      const x = [], y = [];
      spans.forEach((item) => { x.push(item.start, item.end, null); y.push(kind, kind, null); });
      traces.push({type: "scatter", mode: "lines", x: x, y: y, line: {width: 5, color: color}, opacity: 0.35,
        hoverinfo: "skip", showlegend: false});
    }
  });
  medlake.plot("timeline", traces, {showlegend: false, hovermode: "closest", dragmode: "zoom",
    margin: {l: 130, r: 15, t: 10, b: 40}, xaxis: {type: "date", rangeslider: {visible: true, thickness: 0.08}},
    yaxis: {type: "category", categoryorder: "array", categoryarray: kinds.slice().reverse(), fixedrange: true}});
})();
