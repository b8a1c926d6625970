// Cohort builder: the form is the state; every change re-counts through the API's count
// route (debounced), so the attrition table follows the edits.
"use strict";
(function () {
  const page = medlake.pageData();
  const words = document.getElementById("words").dataset;
  const rules = document.getElementById("rules");
  let timer = null, sequence = 0;

  function criterion(holder, role) {
    holder.appendChild(document.getElementById("criterion-template").content.cloneNode(true));
    if (role !== "entry") holder.querySelector(".entry-only").remove();
    holder.concepts = [];
    const input = holder.querySelector(".concept-q");
    const box = holder.querySelector(".suggestions");
    let searchTimer = null;
    input.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(async () => {
        const q = input.value.trim();
        if (!q) { box.classList.add("hidden"); return; }
        const domain = holder.querySelector(".domain").value;
        const url = "/ui/concepts.json?q=" + encodeURIComponent(q) + "&domain=" + domain;
        const found = await (await fetch(url, {credentials: "same-origin"})).json();
        box.innerHTML = "";
        for (const c of found.concepts || []) {
          const option = document.createElement("div");
          option.className = "suggestion";
          option.innerHTML = "<b></b> <span></span> <span class='muted small'></span>";
          option.children[0].textContent = c.concept_code;
          option.children[1].textContent = c.concept_name;
          option.children[2].textContent = c.vocabulary_id;
          option.addEventListener("mousedown", (e) => {
            e.preventDefault();
            addConcept(holder, {concept_id: c.concept_id, label: c.concept_code + " " + c.concept_name});
            input.value = ""; box.classList.add("hidden");
          });
          box.appendChild(option);
        }
        box.classList.toggle("hidden", !(found.concepts || []).length);
      }, 200);
    });
    input.addEventListener("blur", () => setTimeout(() => box.classList.add("hidden"), 150));
    holder.querySelectorAll("select, input[type=checkbox]").forEach((el) => el.addEventListener("change", changed));
    return holder;
  }

  function addConcept(holder, concept) {
    holder.concepts.push(concept);
    drawChips(holder);
    changed();
  }

  function drawChips(holder) {
    const chips = holder.querySelector(".chips");
    chips.querySelectorAll(".chip").forEach((c) => c.remove());
    chips.querySelector(".any").classList.toggle("hidden", holder.concepts.length > 0);
    holder.concepts.forEach((concept, i) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = concept.label + " ";
      const x = document.createElement("button");
      x.type = "button"; x.textContent = "×"; x.title = "remove";
      x.addEventListener("click", () => { holder.concepts.splice(i, 1); drawChips(holder); changed(); });
      chip.appendChild(x);
      chips.appendChild(chip);
    });
  }

  function addRule(state) {
    const node = document.getElementById("rule-template").content.firstElementChild.cloneNode(true);
    rules.appendChild(node);
    const holder = criterion(node.querySelector(".criterion"), "rule");
    node.querySelector(".rule-name").value = state.name || "rule " + rules.children.length;
    const kind = node.querySelector(".rule-kind");
    const sync = () => {
      node.querySelector(".rule-event").classList.toggle("hidden", kind.value !== "event");
      node.querySelector(".rule-age").classList.toggle("hidden", kind.value !== "age");
      node.querySelector(".value-field").classList.toggle("hidden", holder.querySelector(".domain").value !== "measurement");
    };
    kind.value = state.kind || "event";
    if (state.domain) holder.querySelector(".domain").value = state.domain;
    if (state.before !== undefined) node.querySelector(".before").value = state.before;
    if (state.after !== undefined) node.querySelector(".after").value = state.after;
    if (state.valueOp) { node.querySelector(".value-op").value = state.valueOp; node.querySelector(".value").value = state.value; }
    if (state.ageOp) { node.querySelector(".age-op").value = state.ageOp; node.querySelector(".age").value = state.age; }
    (state.concepts || []).forEach((c) => holder.concepts.push(c));
    if (state.descendants !== undefined) holder.querySelector(".descendants").checked = state.descendants;
    drawChips(holder);
    sync();
    if (holder.concepts.some((c) => !c.concept_code)) nameChips(holder);
    node.querySelectorAll("input, select").forEach((el) => {
      el.addEventListener(el.tagName === "SELECT" || el.type === "checkbox" ? "change" : "input", () => { sync(); changed(); });
    });
    node.querySelector(".remove").addEventListener("click", () => { node.remove(); changed(); });
    return node;
  }

  function conceptSet(id, holder, name) {
    const descendants = holder.querySelector(".descendants").checked;
    return {id: id, name: name, items: holder.concepts.map((c) => {
      const item = c.concept_id != null ? {concept_id: c.concept_id} : {vocabulary_id: c.vocabulary_id, concept_code: c.concept_code};
      item.include_descendants = descendants;
      return item;
    })};
  }

  function definition() {
    const sets = [];
    const entry = document.querySelector("#entry .criterion");
    const primary = {domain: entry.querySelector(".domain").value, first: entry.querySelector(".first").checked};
    if (entry.concepts.length) { sets.push(conceptSet(1, entry, "entry")); primary.codeset_id = 1; }
    const inclusion = [];
    Array.from(rules.children).forEach((node, i) => {
      const name = node.querySelector(".rule-name").value.trim() || "rule " + (i + 1);
      if (node.querySelector(".rule-kind").value === "age") {
        inclusion.push({name: name, expression: {type: "all", demographics: [{age: {op: node.querySelector(".age-op").value, value: Number(node.querySelector(".age").value || 0)}}]}});
        return;
      }
      const holder = node.querySelector(".criterion");
      const c = {domain: holder.querySelector(".domain").value};
      if (holder.concepts.length) { sets.push(conceptSet(i + 2, holder, name)); c.codeset_id = i + 2; }
      const op = node.querySelector(".value-op").value, value = node.querySelector(".value").value;
      if (c.domain === "measurement" && op && value !== "") c.value_as_number = {op: op, value: Number(value)};
      // An empty "before" is unbounded (any time before the entry).
      const before = node.querySelector(".before").value, after = Number(node.querySelector(".after").value || 0);
      const span = {start: before === "" ? null : -Number(before), end: after};
      inclusion.push({name: name, expression: {type: "all", criteria: [{criterion: c, start_window: span}]}});
    });
    return {name: document.getElementById("cohort-name").value || "cohort", concept_sets: sets,
            primary_criteria: {criteria: [primary], limit: "first"}, inclusion_rules: inclusion};
  }

  // body[data-counting] is set from the first edit until the count of the last one is
  // drawn; body[data-counted-for] holds the definition that count was for.
  function changed() {
    clearTimeout(timer);
    document.body.dataset.counting = "1";
    timer = setTimeout(count, 350);
  }

  async function count() {
    const body = definition();
    document.getElementById("definition-json").textContent = JSON.stringify(body, null, 2);
    timer = null;
    const mine = ++sequence;
    const status = document.getElementById("count-status");
    status.textContent = words.counting;
    const response = await fetch("/ui/cohorts/count.json", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"}, body: JSON.stringify(body)});
    const result = await response.json();
    if (mine !== sequence) return;  // a newer edit is being counted
    const error = document.getElementById("count-error");
    error.classList.toggle("hidden", response.ok);
    status.textContent = "";
    if (response.ok) drawAttrition(result); else error.textContent = result.detail || response.statusText;
    document.body.dataset.countedFor = JSON.stringify(body);
    if (timer === null) document.body.dataset.counting = "";  // no newer edit waiting
  }

  function drawAttrition(result) {
    const rows = [[words.initial, result.initial, ""]].concat(result.rules.map((r) => [r.name, r.remaining, r.excluded]));
    const tbody = document.querySelector("#attrition tbody");
    tbody.innerHTML = "";
    rows.forEach((row, i) => {
      const tr = document.createElement("tr");
      tr.dataset.step = String(i);
      row.forEach((cell, j) => { const td = document.createElement("td"); td.textContent = cell; if (j) td.className = "num"; tr.appendChild(td); });
      tbody.appendChild(tr);
    });
    const numeric = rows.map((r) => (typeof r[1] === "number" ? r[1] : 0));
    medlake.plot("attrition-chart", [{type: "bar", orientation: "h", x: numeric.slice().reverse(),
      y: rows.map((r, i) => (i ? "#" + i : words.initial)).reverse(), text: rows.map((r) => String(r[1])).reverse(), textposition: "auto",
      marker: {color: "#2f6f9f"}, hoverinfo: "x+y"}], {margin: {l: 10, r: 10, t: 5, b: 25}, yaxis: {automargin: true, type: "category"}});
  }

  function loadExample() { loadDefinition(page.example); }

  // Chips of a loaded definition know only the concept id: name them (the concept search
  // finds a concept by its id too).
  async function nameChips(holder) {
    for (const chip of holder.concepts) {
      if (chip.concept_code || chip.concept_id == null) continue;
      const found = await (await fetch("/ui/concepts.json?q=" + chip.concept_id, {credentials: "same-origin"})).json();
      const hit = (found.concepts || []).find((c) => c.concept_id === chip.concept_id);
      if (hit) chip.label = hit.concept_code + " " + hit.concept_name;
    }
    drawChips(holder);
  }

  // Fill the form from a definition of the builder's shape (entry event, rules of one
  // event or an age); anything else it holds is not shown.
  function loadDefinition(ex) {
    const sets = Object.fromEntries(ex.concept_sets.map((s) => [s.id, s]));
    const chipsOf = (id) => (sets[id] ? sets[id].items.map((it) => ({vocabulary_id: it.vocabulary_id, concept_code: it.concept_code, concept_id: it.concept_id, label: it.concept_code ? it.vocabulary_id + " " + it.concept_code : "concept " + it.concept_id})) : []);
    const entry = document.querySelector("#entry .criterion");
    const primary = ex.primary_criteria.criteria[0];
    entry.querySelector(".domain").value = primary.domain;
    entry.querySelector(".first").checked = !!primary.first;
    const entrySet = sets[primary.codeset_id];
    entry.querySelector(".descendants").checked = entrySet ? !!entrySet.items[0].include_descendants : true;
    entry.concepts = chipsOf(primary.codeset_id).map((c) => { if (c.concept_id == null) delete c.concept_id; return c; });
    drawChips(entry);
    nameChips(entry);
    rules.innerHTML = "";
    document.getElementById("cohort-name").value = ex.name;
    for (const rule of ex.inclusion_rules || []) {
      const group = rule.expression;
      if (group.demographics && group.demographics.length && group.demographics[0].age) {
        const age = group.demographics[0].age;
        addRule({name: rule.name, kind: "age", ageOp: age.op, age: age.value});
        continue;
      }
      const cc = group.criteria[0], c = cc.criterion, w = cc.start_window || {};
      const concepts = chipsOf(c.codeset_id).map((x) => { if (x.concept_id == null) delete x.concept_id; return x; });
      const items = sets[c.codeset_id] ? sets[c.codeset_id].items : [];
      addRule({name: rule.name, kind: "event", domain: c.domain, concepts: concepts,
               descendants: items.length ? !!items[0].include_descendants : true,
               before: w.start === undefined || w.start === null ? "" : -w.start, after: w.end || 0,
               valueOp: c.value_as_number ? c.value_as_number.op : "", value: c.value_as_number ? c.value_as_number.value : ""});
    }
    changed();
  }

  criterion(document.querySelector("#entry .criterion"), "entry");
  document.getElementById("cohort-name").addEventListener("input", changed);
  document.getElementById("add-rule").addEventListener("click", () => { addRule({}); changed(); });
  document.getElementById("load-example").addEventListener("click", loadExample);
  document.getElementById("load-definition").addEventListener("click", async () => {
    const id = document.getElementById("saved-definitions").value;
    if (!id) return;
    const response = await fetch("/ui/cohorts/definitions/" + id + ".json", {credentials: "same-origin"});
    const saved = await response.json();
    if (response.ok) loadDefinition(saved.definition);
    else document.getElementById("save-status").textContent = saved.detail;
  });
  document.getElementById("save-definition").addEventListener("click", async () => {
    const body = {name: document.getElementById("cohort-name").value, definition: definition()};
    const response = await fetch("/ui/cohorts/definitions.json", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const saved = await response.json();
    const status = document.getElementById("save-status");
    status.textContent = response.ok ? words.savedAs + " #" + saved.id + " " + saved.name : saved.detail;
    status.className = response.ok ? "small good" : "small bad";
    if (response.ok) {
      const option = document.createElement("option");
      option.value = saved.id; option.textContent = "#" + saved.id + " " + saved.name;
      document.getElementById("saved-definitions").appendChild(option);
    }
  });
  changed();
})();
