// Live progress of a tournament: polls its progress.json every two seconds and writes the numbers
// (and the statuses of the debates listed on this page) into the page with textContent. Reloads once when the status changes, so the buttons match it.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("client-config").textContent);
  const $ = (id) => document.getElementById(id);
  const initialStatus = $("t-status").textContent.trim();
  const set = (id, value) => { const el = $(id); if (el) el.textContent = String(value); };

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s >= 3600) return "about " + Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    if (s >= 60) return "about " + Math.floor(s / 60) + " min " + (s % 60) + " s";
    return "about " + s + " s";
  }

  function render(p) {
    const pct = Math.round(p.fraction * 100);
    $("t-progress").querySelector(".bar").style.width = pct + "%";
    $("t-progress").querySelector(".label").textContent = pct + "%";
    set("t-status", p.status);
    set("t-done", p.done); set("t-total", p.total); set("t-finished", p.finished); set("t-running", p.running);
    set("t-queued", p.queued); set("t-failed", p.failed); set("t-cancelled", p.cancelled);
    set("t-turns", p.turns_done); set("t-turns-total", p.turns_total);
    set("t-verdicts", p.verdicts); set("t-verdicts-expected", p.verdicts_expected);
    set("t-rate", p.tokens_per_s ? p.tokens_per_s.toFixed(1) : "–");
    set("t-tokens", p.completion_tokens); set("t-active", Math.round(p.active_s));
    set("t-eta", duration(p.eta_s));
    // The debates on this page: their statuses change as the counters do.
    Object.entries(p.debates || {}).forEach(function ([id, status]) {
      const row = document.querySelector('tr[data-debate="' + CSS.escape(id) + '"]');
      const cell = row && row.querySelector('[data-field="debate-status"]');
      if (cell && cell.textContent !== status) {
        cell.textContent = status;
        cell.className = "status status-" + status;
      }
    });
  }

  async function poll() {
    try {
      const response = await fetch(config.progressUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const p = await response.json();
        render(p);
        if (p.status !== initialStatus) { window.location.reload(); return; }
        if (!["running", "pending", "paused"].includes(p.status)) return;
      }
    } catch (err) {
      // A dropped connection: try again at the next tick.
    }
    window.setTimeout(poll, 2000);
  }
  window.setTimeout(poll, 2000);
})();
