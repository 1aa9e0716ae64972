// Live transcript of one debate. Model output is untrusted: every piece of it goes into the page
// through textContent, never innerHTML.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("client-config").textContent);
  const transcript = document.getElementById("transcript");
  const statusEl = document.getElementById("debate-status");
  const progress = document.getElementById("progress");
  const submit = document.getElementById("submit-verdict");
  const turns = new Map(); // turn index -> {el, body, seq, final}
  let totalTurns = 0;
  let socket = null;
  let retryMs = 500;

  function labelFor(side) {
    const label = config.sideLabels[String(side)];
    const answer = config.sideAnswers ? config.sideAnswers[String(side)] : "";
    return "Debater for " + label + (answer ? " (\u201c" + answer + "\u201d)" : "");
  }

  function turnElement(turn, round, side) {
    let entry = turns.get(turn);
    if (entry) return entry;
    const el = document.createElement("article");
    el.className = "turn side-" + side;
    el.dataset.turn = String(turn);
    const head = document.createElement("header");
    head.textContent = "Round " + round + " \u00b7 " + labelFor(side);
    const body = document.createElement("div");
    body.className = "body";
    el.append(head, body);
    // Keep the transcript in turn order whatever order events arrive in.
    const later = Array.from(transcript.children).find((c) => Number(c.dataset.turn) > turn);
    transcript.insertBefore(el, later || null);
    entry = { el: el, body: body, seq: 0, final: false };
    turns.set(turn, entry);
    return entry;
  }

  function renderFinal(t) {
    const entry = turnElement(t.turn, t.round, t.side);
    entry.final = true;
    entry.seq = t.seq || entry.seq;
    entry.el.classList.remove("streaming");
    entry.body.replaceChildren();
    for (const seg of t.segments || [{ kind: "text", text: t.text }]) {
      const span = document.createElement("span");
      if (seg.kind === "quote") {
        span.className = "quote " + (seg.verified ? "verified" : "unverified");
        span.title = seg.verified ? "verified: appears in the story" : "unverified: not found in the story";
      }
      span.textContent = seg.text;
      entry.body.appendChild(span);
    }
    const violations = (t.meta && t.meta.violations) || [];
    if (violations.length) {
      const note = document.createElement("p");
      note.className = "violations";
      note.textContent = "Referee: " + violations.map((v) => v.message || v.rule || String(v)).join("; ");
      entry.el.appendChild(note);
    }
    updateProgress();
  }

  function appendDelta(turn, seq, text) {
    const entry = turns.get(turn);
    if (!entry || entry.final) return;
    if (seq <= entry.seq) return; // already in the snapshot
    if (seq !== entry.seq + 1) { // a gap: ask for a fresh snapshot rather than show wrong text
      send({ type: "snapshot" });
      return;
    }
    entry.seq = seq;
    entry.body.appendChild(document.createTextNode(text));
  }

  function updateProgress() {
    if (!progress || !totalTurns) return;
    const done = Array.from(turns.values()).filter((t) => t.final).length;
    progress.querySelector(".bar").style.width = Math.round((100 * done) / totalTurns) + "%";
    progress.querySelector(".label").textContent = done + " of " + totalTurns + " speeches";
  }

  function setStatus(status, detail) {
    if (!statusEl) return;
    statusEl.textContent = status;
    statusEl.className = "status status-" + status;
    if (detail) statusEl.title = detail;
    if (submit && status === "finished") submit.disabled = false;
  }

  function onSnapshot(msg) {
    transcript.replaceChildren();
    turns.clear();
    totalTurns = msg.debate.total_turns;
    for (const t of msg.turns) renderFinal(t);
    for (const t of msg.inflight) {
      const entry = turnElement(t.turn, t.round, t.side);
      entry.el.classList.add("streaming");
      entry.seq = t.seq;
      entry.body.textContent = t.text;
    }
    setStatus(msg.debate.status, msg.debate.detail);
    updateProgress();
  }

  function onMessage(event) {
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    switch (msg.type) {
      case "snapshot": onSnapshot(msg); break;
      case "turn_start": {
        const entry = turnElement(msg.turn, msg.round, msg.side);
        if (!entry.final) entry.el.classList.add("streaming");
        break;
      }
      case "delta": appendDelta(msg.turn, msg.seq, msg.text); break;
      case "turn_reset": {
        const entry = turns.get(msg.turn);
        if (entry && !entry.final) { entry.body.replaceChildren(); entry.seq = msg.seq; }
        break;
      }
      case "turn_end": renderFinal(msg); break;
      case "status": setStatus(msg.status, msg.detail); break;
      case "error": console.warn("server:", msg.error); break;
    }
  }

  function send(obj) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(obj));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + config.wsPath);
    socket.onopen = () => { retryMs = 500; document.body.dataset.ws = "open"; };
    socket.onmessage = onMessage;
    socket.onclose = (ev) => {
      document.body.dataset.ws = "closed";
      if (ev.code >= 4400 && ev.code < 4500) return; // refused: reconnecting will not help
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  const pFirst = document.getElementById("p-first");
  const pSecond = document.getElementById("p-second");
  if (pFirst && pSecond) {
    pFirst.addEventListener("input", () => {
      const v = parseFloat(pFirst.value);
      if (!isNaN(v) && v >= 0 && v <= 1) pSecond.value = (1 - v).toFixed(2);
    });
  }
  connect();
})();
