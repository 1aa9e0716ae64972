// Live transcript of one debate. Model output (and a judge's typed question) is untrusted: every
// piece of it goes into the page through textContent, never innerHTML.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("client-config").textContent);
  const transcript = document.getElementById("transcript");
  const statusEl = document.getElementById("debate-status");
  const progress = document.getElementById("progress");
  const submit = document.getElementById("submit-verdict");
  const questionCard = document.getElementById("question-card");
  const turns = new Map(); // turn index -> {el, body, seq, final}
  const questions = new Map(); // after_round -> {after_round, before_turn, text}
  let totalTurns = config.totalTurns || 0;
  let status = "";
  let socket = null;
  let retryMs = 500;
  // A running debate that sends nothing for this long (the server says how long in its snapshot)
  // is checked with a fresh snapshot, which reports "delayed" when its worker is gone.
  let recheckMs = 60000;
  let lastHeard = Date.now();
  const LIMITED = 4429;

  // A judge's messages name the answer by the letter this judge sees (t.answer); a researcher's
  // carry the stored side (t.side).
  function letterOf(t) {
    return t.answer !== undefined ? t.answer : config.sideLabels[String(t.side)];
  }

  function labelFor(t) {
    const label = letterOf(t);
    const texts = config.answerTexts || {};
    const answer = t.answer !== undefined ? texts[t.answer] : (config.sideAnswers ? config.sideAnswers[String(t.side)] : "");
    const noun = config.speakerNoun || "Debater";
    return noun + " for " + label + (answer ? " (\u201c" + answer + "\u201d)" : "");
  }

  function insertOrdered(el, order) {
    if (!transcript) return;
    el.dataset.turn = String(order);
    const later = Array.from(transcript.children).find((c) => Number(c.dataset.turn) > order);
    transcript.insertBefore(el, later || null);
  }

  function turnElement(t) {
    const turn = t.turn;
    let entry = turns.get(turn);
    if (entry) return entry;
    const el = document.createElement("article");
    el.className = "turn " + (t.answer !== undefined ? "answer-" + String(t.answer).toLowerCase() : "side-" + t.side);
    const head = document.createElement("header");
    head.textContent = "Round " + t.round + " \u00b7 " + labelFor(t);
    const body = document.createElement("div");
    body.className = "body";
    el.append(head, body);
    // Keep the transcript in turn order whatever order events arrive in. A judge's turn numbers
    // are already their own transcript's (a simultaneous round shows A first).
    insertOrdered(el, turn);
    entry = { el: el, head: head, body: body, seq: 0, final: false };
    turns.set(turn, entry);
    return entry;
  }

  function addQuestion(q) {
    if (!q || questions.has(q.after_round)) return;
    questions.set(q.after_round, q);
    renderQuestion(q);
    if (questionCard && Number(questionCard.dataset.round) === q.after_round) questionCard.hidden = true;
  }

  function renderQuestion(q) {
    if (!transcript) return;
    const el = document.createElement("aside");
    el.className = "judge-question";
    el.dataset.round = String(q.after_round);
    const head = document.createElement("header");
    head.textContent = "The judge asked, after round " + q.after_round + ":";
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = q.text;
    el.append(head, body);
    // Just before the first speech of the next round.
    insertOrdered(el, Number(q.before_turn) - 0.5);
  }

  function renderFinal(t) {
    const entry = turnElement(t);
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
    const truncated = t.truncated !== undefined ? t.truncated : (t.meta && t.meta.truncated);
    if (truncated && !entry.head.querySelector(".badge-truncated")) {
      const badge = document.createElement("span");
      badge.className = "badge badge-truncated";
      badge.textContent = "truncated";
      badge.title = "The speech went over the length limit and was cut at a word boundary.";
      entry.head.append(" ", badge);
    }
    // Cut short at the token limit: the speaker did not get to say all of it, and the judge should know.
    const cut = t.cut !== undefined ? t.cut : (t.meta && t.meta.cut);
    if (cut && !entry.head.querySelector(".badge-cut")) {
      const badge = document.createElement("span");
      badge.className = "badge badge-cut";
      badge.textContent = "cut";
      badge.title = "The speech reached its length limit in tokens and was cut short.";
      entry.head.append(" ", badge);
    }
    const violations = t.violations || (t.meta && t.meta.violations) || [];
    const old = entry.el.querySelector(".violations");
    if (old) old.remove();
    if (violations.length) {
      const list = document.createElement("ul");
      list.className = "violations";
      for (const v of violations) {
        const item = document.createElement("li");
        item.dataset.rule = String(v.rule || "");
        item.textContent = "Referee: " + (v.message || v.rule || String(v));
        list.appendChild(item);
      }
      entry.el.appendChild(list);
    }
    updateProgress();
  }

  function appendDelta(turn, seq, text) {
    const entry = turns.get(turn);
    if (!entry || entry.final) return;
    if (seq <= entry.seq) return; // already in the snapshot
    if (seq !== entry.seq + 1) { // a gap: ask for a fresh snapshot rather than show wrong text
      requestSnapshot();
      return;
    }
    entry.seq = seq;
    entry.body.appendChild(document.createTextNode(text));
  }

  function finalCount() {
    return Array.from(turns.values()).filter((t) => t.final).length;
  }

  function updateProgress() {
    updateSubmit();
    if (!progress || !totalTurns) return;
    const done = finalCount();
    progress.querySelector(".bar").style.width = Math.round((100 * done) / totalTurns) + "%";
    progress.querySelector(".label").textContent = done + " of " + totalTurns + " speeches";
  }

  // The protocol's judging rules: a verdict needs minTurns speeches, or the end of the debate when
  // minTurns is every speech. The server checks the same rule again.
  function updateSubmit() {
    if (!submit) return;
    const minTurns = config.minTurns === undefined ? totalTurns : config.minTurns;
    const early = minTurns < totalTurns && finalCount() >= minTurns && status !== "failed" && status !== "cancelled";
    if (status === "finished" || early) {
      submit.disabled = false;
      // "the debate is not over yet" and the like no longer hold.
      const closed = document.getElementById("verdict-closed");
      if (closed) closed.remove();
    }
  }

  function setStatus(newStatus, detail) {
    status = newStatus;
    if (statusEl) {
      statusEl.textContent = newStatus;
      statusEl.className = "status status-" + newStatus;
      if (detail) statusEl.title = detail;
    }
    if (questionCard && newStatus === "waiting") questionCard.hidden = false;
    if (questionCard && newStatus === "running") questionCard.hidden = true;
    updateSubmit();
  }

  function onSnapshot(msg) {
    if (transcript) transcript.replaceChildren();
    turns.clear();
    totalTurns = msg.debate.total_turns;
    if (msg.debate.recheck_s) recheckMs = msg.debate.recheck_s * 1000;
    for (const q of questions.values()) renderQuestion(q);
    for (const t of msg.turns) renderFinal(t);
    for (const t of msg.inflight) {
      const entry = turnElement(t);
      entry.el.classList.add("streaming");
      entry.seq = t.seq;
      entry.body.textContent = t.text;
    }
    // A debate waiting for its judge's question is "queued" in the database: keep "waiting".
    if (!(questionCard && !questionCard.hidden && msg.debate.status === "queued")) {
      setStatus(msg.debate.status, msg.debate.detail);
    }
    updateProgress();
  }

  // One snapshot request at a time: every later delta of a turn with a gap is a gap too, and the
  // server limits snapshot requests (ARENA_WS_SNAPSHOTS_PER_MINUTE).
  let snapshotAsked = false;
  function requestSnapshot() {
    if (snapshotAsked) return;
    snapshotAsked = true;
    send({ type: "snapshot" });
  }

  function onMessage(event) {
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    lastHeard = Date.now();
    // A batch holds the events that queued up for this socket, in order: apply them one by one,
    // by the same rules as events sent alone.
    if (msg.type === "batch") {
      for (const one of msg.events || []) apply(one);
    } else {
      apply(msg);
    }
  }

  function apply(msg) {
    switch (msg.type) {
      case "snapshot": snapshotAsked = false; onSnapshot(msg); break;
      case "turn_start": {
        const entry = turnElement(msg);
        if (!entry.final) entry.el.classList.add("streaming");
        break;
      }
      case "delta": appendDelta(msg.turn, msg.seq, msg.text); break;
      case "turn_reset": {
        const entry = turns.get(msg.turn);
        // A reset the snapshot already reflects (its seq is not newer) must not wipe the text.
        if (entry && !entry.final && msg.seq > entry.seq) { entry.body.replaceChildren(); entry.seq = msg.seq; }
        break;
      }
      case "turn_end": renderFinal(msg); break;
      case "judge_question": addQuestion(msg); break;
      case "status": setStatus(msg.status, msg.detail); break;
      case "error": console.warn("server:", msg.error); break;
    }
  }

  function send(obj) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(obj));
  }

  function showLimited() {
    const note = document.createElement("p");
    note.className = "error ws-limited";
    note.textContent = "Live updates stopped: this sign-in has too many pages of debates open, or this page " +
      "sent too many requests. Close other tabs, then reload this page.";
    if (transcript) transcript.before(note); else document.body.prepend(note);
  }

  setInterval(() => {
    if ((status === "running" || status === "delayed") && Date.now() - lastHeard > recheckMs) {
      lastHeard = Date.now();
      snapshotAsked = false; // the last request went unanswered (a reconnect drops it): ask again
      requestSnapshot();
    }
  }, 5000);

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + config.wsPath);
    socket.onopen = () => { retryMs = 500; snapshotAsked = false; document.body.dataset.ws = "open"; };
    socket.onmessage = onMessage;
    socket.onclose = (ev) => {
      document.body.dataset.ws = "closed";
      if (ev.code === LIMITED) showLimited();
      if (ev.code >= 4400 && ev.code < 4500) return; // refused: reconnecting will not help
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  for (const q of config.judgeQuestions || []) addQuestion(q);
  if (statusEl) status = statusEl.textContent.trim();
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
