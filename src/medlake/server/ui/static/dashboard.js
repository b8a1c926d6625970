"use strict";
(function () {
  const page = medlake.pageData();
  if (!page.records_by_source) return;
  const systems = [...new Set(page.records_by_source.map((r) => r.source_system))];
  const traces = systems.map((system, i) => {
    const rows = page.records_by_source.filter((r) => r.source_system === system);
    return {type: "bar", name: system, x: rows.map((r) => r.month), y: rows.map((r) => r.records),
            marker: {color: medlake.palette[i % medlake.palette.length]}};
  });
  medlake.plot("records-chart", traces, {barmode: "stack", bargap: 0.05, legend: {orientation: "h", y: 1.12},
    margin: {l: 55, r: 10, t: 30, b: 35}, xaxis: {type: "date"}, yaxis: {title: {text: "records / month"}}});
})();
