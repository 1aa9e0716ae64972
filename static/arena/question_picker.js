// The new-debate form's question picker: search questions by text or id, filter by set, pick one.
// Results come from /debates/questions/ as JSON and are rendered as text (never as HTML).
(function () {
  "use strict";
  const picker = document.querySelector(".question-picker");
  if (!picker) return;
  const search = document.getElementById("question-search");
  const set = document.getElementById("question-set");
  const field = picker.querySelector("input[name=question]");
  const results = document.getElementById("question-results");
  const chosen = document.getElementById("question-chosen");
  let timer = null;
  let latest = 0;

  function describe(q) {
    return `${q.external_id} · ${q.title} — ${q.question}`;
  }

  function show(data) {
    results.replaceChildren();
    for (const q of data.results) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "pick";
      button.dataset.id = String(q.id);
      button.textContent = describe(q);
      const set = document.createElement("span");
      set.className = "hint";
      set.textContent = ` (${q.set}, id ${q.id})`;
      button.addEventListener("click", () => {
        field.value = String(q.id);
        chosen.textContent = describe(q);
        results.replaceChildren();
      });
      item.append(button, set);
      results.append(item);
    }
    if (!data.results.length) {
      const item = document.createElement("li");
      item.className = "hint";
      item.textContent = "No question matches.";
      results.append(item);
    } else if (data.more) {
      const item = document.createElement("li");
      item.className = "hint";
      item.textContent = "More questions match: type more words or choose a set.";
      results.append(item);
    }
  }

  async function run() {
    const ticket = ++latest;
    const params = new URLSearchParams({ q: search.value, set: set.value });
    const response = await fetch(`${picker.dataset.searchUrl}?${params}`, { headers: { Accept: "application/json" } });
    if (!response.ok || ticket !== latest) return;
    show(await response.json());
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(run, 200);
  }

  search.addEventListener("input", later);
  set.addEventListener("change", run);
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {  // Enter searches; it does not submit the form half-filled.
      event.preventDefault();
      run();
    }
  });
})();
