// Polls a profile test that is not done yet and fills in its outcome. Model output is set as text.
(function () {
  "use strict";
  function seconds(value, digits) { return value === null || value === undefined ? "" : value.toFixed(digits) + " s"; }
  function fill(box, data) {
    const out = (name) => box.querySelector(`[data-out="${name}"]`);
    out("status").textContent = data.status;
    out("status").className = `status status-${data.status}`;
    out("reply").textContent = data.reply;
    out("error").textContent = data.error;
    out("ready_s").textContent = seconds(data.ready_s, 2);
    out("first_token_s").textContent = seconds(data.first_token_s, 2);
    out("tokens_per_s").textContent = data.tokens_per_s === null ? "" : data.tokens_per_s.toFixed(1);
    out("tokens").textContent = data.completion_tokens === null ? "" : `${data.prompt_tokens} / ${data.completion_tokens}`;
    if (out("choice_probs") && data.choice_probs) {
      out("choice_probs").textContent = `${data.choice_probs.A.toFixed(3)}, ${data.choice_probs.B.toFixed(3)}`;
    }
    out("progress").hidden = data.done;
    box.dataset.done = data.done ? "1" : "0";
  }
  function poll(box) {
    fetch(box.dataset.url, { headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then((data) => { fill(box, data); if (!data.done) setTimeout(() => poll(box), 500); })
      .catch(() => setTimeout(() => poll(box), 2000));
  }
  document.querySelectorAll(".profile-check[data-done='0']").forEach(poll);
})();
