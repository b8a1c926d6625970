"use strict";
(function () {
  const page = medlake.pageData();
  if (!page.records_by_source) return;
  const systems = [...new Set(page.records_by_source.map((r) => r.source_system))];
  const traces = systems.map((system, i) => {
    const rows = page.records_by_source.filter((r) => r.source_system === system);
    return {type: "bar", name: system, x: rows.map((r) => r.day), y: rows.map((r) => r.records),
            marker: {color: medlake.palette[i % medlake.palette.length]}};
  });
  medlake.plot("records-chart", traces, {barmode: "stack", legend: {orientation: "h", y: -0.2},
    xaxis: {type: "date"}, yaxis: {title: {text: "records"}}});
})();
