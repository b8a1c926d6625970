"use strict";
(function () {
  const page = medlake.pageData();
  if (!page.records_by_source) return;
  const systems = [...new Set(page.records_by_source.map((r) => r.source_system))];
  const traces = systems.map((system, i) => {
    const rows = page.records_by_source.filter((r) => r.source_system === system);
    return {type: "scatter", mode: "lines", name: system, x: rows.map((r) => r.month),
            y: rows.map((r) => r.records), line: {shape: "hv", width: 1.5, color: medlake.palette[i % medlake.palette.length]}};
  });
  medlake.plot("records-chart", traces, {hovermode: "x unified", legend: {orientation: "h", y: 1.12},
    margin: {l: 55, r: 10, t: 30, b: 35}, xaxis: {type: "date"}});
})();
