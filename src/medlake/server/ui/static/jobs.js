// The jobs page: draws the job table from the page's context (its JSON twin) and, while a
// job is queued or running, polls the twin every second and redraws it, so progress bars
// move and a finished ingest shows its per-source table without a reload.
"use strict";
(function () {
  const words = JSON.parse(document.getElementById("jobs-words").textContent);
  const body = document.querySelector("#jobs tbody");
  const live = document.getElementById("live");
  const SHOWN_INPUTS = 6;  // uploaded file names listed; all of them in the tooltip
  const SOURCE_KEYS = ["source_system", "files", "read", "loaded", "updated", "unchanged",
                       "quarantined", "unmapped", "failed", "seconds"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const when = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "");

  function progress(job) {
    const p = job.progress || {};
    const fraction = p.fraction === null || p.fraction === undefined
      ? (job.status === "succeeded" ? 1 : 0) : p.fraction;
    const text = p.total ? `${p.done} / ${p.total}` : (p.done ? String(p.done) : "");
    return el("div", {class: "progress", "data-fraction": fraction.toFixed(3)},
      el("div", {class: "meter"}, el("div", {style: `width:${(100 * fraction).toFixed(1)}%`})),
      el("span", {class: "small muted"}, text));
  }

  function sources(job) {
    if (!job.sources || !job.sources.length) return null;
    return el("table", {class: "data compact sources"},
      el("thead", {}, el("tr", {}, words.columns.map((c, i) => el("th", {class: i ? "num" : null}, c)))),
      el("tbody", {}, job.sources.map((s) => el("tr", {},
        SOURCE_KEYS.map((k, i) => el("td", {class: i ? "num" : null}, s[k] ?? ""))))));
  }

  function result(job) {
    const parts = [];
    if (job.error) parts.push(el("div", {class: "bad small"}, job.error));
    if (job.inputs && job.inputs.length) {
      const first = job.inputs.slice(0, SHOWN_INPUTS).join(", ");
      const more = job.inputs.length > SHOWN_INPUTS ? ` … (${job.inputs.length})` : "";
      parts.push(el("div", {class: "small muted inputs", title: job.inputs.join("\n")},
                    `${words.inputs}: `, el("span", {class: "mono"}, first + more)));
    }
    if (job.failed_files && job.failed_files.length) {
      parts.push(el("div", {class: "small bad"}, `${words.failed_files}: `,
        job.failed_files.map((f) => `${f.path}: ${f.message || ""}`).join("; ")));
    }
    for (const item of job.summary || []) {
      parts.push(el("span", {class: "kv small"}, `${item.key}: `, el("b", {}, item.value)));
    }
    if (job.files && job.files.length) {
      parts.push(el("div", {class: "small muted mono"}, job.files.join(", ")));
    }
    for (const link of job.links || []) {
      parts.push(el("div", {}, el("a", {href: link.href, class: "result-link"}, words.links[link.label] || link.label)));
    }
    return parts;
  }

  function row(job) {
    let action = null;
    if (job.may_cancel) {
      action = job.cancel_requested
        ? el("span", {class: "muted small"}, words.cancelling)
        : el("form", {method: "post", action: `/ui/jobs/${job.job_id}/cancel`, class: "inline"},
            el("button", {type: "submit", class: "danger cancel"}, words.cancel));
    }
    const main = el("tr", {"data-job": job.job_id, "data-status": job.status, "data-kind": job.kind},
      el("td", {}, el("span", {class: "pill"}, job.kind), el("div", {class: "mono small muted"}, job.job_id.slice(0, 8))),
      el("td", {}, job.submitted_by),
      el("td", {}, job.project_id || "—"),
      el("td", {}, el("span", {class: `pill pill-${job.status} state`}, words.status[job.status] || job.status)),
      el("td", {class: "nowrap"}, progress(job)),
      el("td", {class: "nowrap small"}, when(job.started_at)),
      el("td", {class: "nowrap small"}, when(job.finished_at)),
      el("td", {class: "result"}, result(job)),
      el("td", {}, action));
    const table = sources(job);  // the per-source table: a row of its own, full width
    if (!table) return [main];
    main.classList.add("has-detail");
    return [main, el("tr", {class: "job-detail", "data-detail": job.job_id},
                     el("td", {}), el("td", {colspan: 8}, table))];
  }

  function draw(page) {
    body.replaceChildren(...page.jobs.flatMap(row));
    document.getElementById("jobs-empty").classList.toggle("hidden", page.jobs.length > 0);
    live.classList.toggle("hidden", !page.active);
    document.body.dataset.activeJobs = String(page.active);
  }

  let timer = null;
  async function poll() {
    try {
      const url = `${location.pathname.replace(/\.json$/, "")}.json${location.search}`;
      const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (response.ok) {
        const page = await response.json();
        draw(page);
        schedule(page);
        return;
      }
    } catch (error) {
      console.warn("jobs: poll failed", error);
    }
    timer = setTimeout(poll, 5000);
  }
  function schedule(page) {
    clearTimeout(timer);
    timer = setTimeout(poll, page.active ? 1000 : 5000);
  }

  const page = window.medlake.pageData();
  draw(page);
  schedule(page);
})();
