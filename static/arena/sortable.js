// Click a column heading of a table.sortable to sort its rows by that column (again: reverse).
// Numbers sort as numbers ("84.4%", "1,203", "978 – 1315" by their first number), the rest as text;
// "–" and empty cells go last. Rows are moved, never rewritten, so their content stays text.
(function () {
  "use strict";
  function key(cell) {
    const text = (cell ? cell.textContent : "").trim();
    const match = text.replace(/,/g, "").match(/^[−-]?\d+(\.\d+)?/);
    if (match) return { n: parseFloat(match[0].replace("−", "-")), t: text };
    return { n: null, t: text === "–" ? "" : text.toLowerCase() };
  }
  function compare(a, b) {
    if (a.n !== null && b.n !== null) return a.n - b.n;
    if (a.n !== null) return -1;
    if (b.n !== null) return 1;
    if (!a.t) return b.t ? 1 : 0;
    if (!b.t) return -1;
    return a.t < b.t ? -1 : a.t > b.t ? 1 : 0;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    const heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, column) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      const sort = function () {
        const body = table.tBodies[0];
        const rows = Array.from(body.rows).filter(function (r) { return r.cells.length === heads.length; });
        if (rows.length < 2) return;
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        rows.sort(function (x, y) {
          const c = compare(key(x.cells[column]), key(y.cells[column]));
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
    });
  });
})();
