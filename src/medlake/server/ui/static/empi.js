// EMPI review: m = match, n = not a match (ignored while typing in a field).
"use strict";
(function () {
  const form = document.getElementById("decide-form");
  if (!form) return;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || /INPUT|TEXTAREA|SELECT/.test(event.target.tagName)) return;
    const button = {m: "decide-match", n: "decide-no-match"}[event.key.toLowerCase()];
    if (!button) return;
    event.preventDefault();
    form.requestSubmit(document.getElementById(button));
  });
})();
