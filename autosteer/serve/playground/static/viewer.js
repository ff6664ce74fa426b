// The search viewer: polls viewer/log.json and redraws when the log changed.
"use strict";
(function () {
  const $ = AS.$, el = AS.el;
  let version = -1, pollMs = 1000, answersFor = null;

  function drawPlot(snap) {
    const pts = snap.points;
    const ys = [];
    for (const p of pts) { if (p.score !== null) ys.push(p.score); if (p.holdout !== null) ys.push(p.holdout); }
    const lo = ys.length ? Math.min(...ys) : 0, hi = ys.length ? Math.max(...ys) : 1;
    const dir = snap.lower_is_better ? "lower is better" : "higher is better";
    return AS.chart({
      testid: "plot", label: `score of ${snap.trials} trials`, xrange: [0, Math.max(1, pts.length - 1)],
      yrange: [lo, hi], xlabel: "trial", ylabel: `${snap.metric || "score"} (${dir})`,
      draw: ({ svg, X, Y, bottom, left, right }) => {
        if (pts.length && pts[0].score !== null) {
          svg.appendChild(el("line", { x1: left, x2: right, y1: Y(pts[0].score), y2: Y(pts[0].score), class: "baseline" }));
        }
        let d = "";
        pts.forEach((p, i) => {
          if (p.best === null) return;
          d += (d ? ` H${X(p.iteration)} V${Y(p.best)}` : `M${X(p.iteration)} ${Y(p.best)}`);
          if (i === pts.length - 1) d += ` H${X(p.iteration)}`;
        });
        if (d) svg.appendChild(el("path", { d, class: "best" }));
        for (const p of pts) {
          const tip = el("title", { text: `#${p.iteration} ${p.status} ${AS.fmt(p.score)}: ${p.description}` });
          const attrs = { class: `pt pt-${p.status}`, "data-iteration": p.iteration };
          if (p.status === "crash") {
            const x = X(p.iteration), y = bottom - 5;
            svg.appendChild(el("path", Object.assign(attrs, { d: `M${x - 4} ${y - 4} L${x + 4} ${y + 4} M${x - 4} ${y + 4} L${x + 4} ${y - 4}` }), tip));
          } else {
            svg.appendChild(el("circle", Object.assign(attrs, { cx: X(p.iteration), cy: Y(p.score), r: p.status === "discard" ? 3.5 : 5 }), tip));
          }
          if (p.holdout !== null) {
            const x = X(p.iteration), y = Y(p.holdout);
            svg.appendChild(el("path", { class: "holdout", d: `M${x} ${y - 5} L${x + 5} ${y} L${x} ${y + 5} L${x - 5} ${y} Z` },
                               el("title", { text: `#${p.iteration} held-out ${AS.fmt(p.holdout)}` })));
          }
        }
      },
    });
  }

  function drawAxes(snap) {
    const box = $("#axes");
    box.textContent = "";
    $("#axes-section").hidden = !snap.axes.length;
    const num = (x) => typeof x === "number" && isFinite(x);
    for (const name of snap.axes) {
      const pts = snap.points.filter((p) => p.details && num(p.details[name]))
        .map((p) => ({ x: p.iteration, y: p.details[name], status: p.status }));
      const held = snap.points.filter((p) => p.details && num(p.details[`holdout_${name}`]))
        .map((p) => ({ x: p.iteration, y: p.details[`holdout_${name}`] }));
      if (!pts.length && !held.length) continue;
      const ys = pts.concat(held).map((p) => p.y);
      const chart = AS.chart({
        width: 300, height: 170, label: name, testid: `axis-${name}`,
        xrange: [0, Math.max(1, snap.points.length - 1)], yrange: [Math.min(...ys), Math.max(...ys)], xlabel: "trial",
        draw: ({ svg, X, Y }) => {
          svg.appendChild(el("polyline", { class: "series", points: pts.map((p) => `${X(p.x)},${Y(p.y)}`).join(" ") }));
          for (const p of pts) {
            svg.appendChild(el("circle", { class: `pt-${p.status}`, cx: X(p.x), cy: Y(p.y), r: 2.5 },
                               el("title", { text: `#${p.x} ${name} ${AS.fmt(p.y)}` })));
          }
          for (const p of held) {
            const x = X(p.x), y = Y(p.y);
            svg.appendChild(el("path", { class: "holdout", d: `M${x} ${y - 4} L${x + 4} ${y} L${x} ${y + 4} L${x - 4} ${y} Z` },
                               el("title", { text: `#${p.x} held-out ${name} ${AS.fmt(p.y)}` })));
          }
        },
      });
      box.appendChild(el("figure", { style: "margin:0" },
        el("figcaption", { text: held.length ? `${name} (held-out: diamonds)` : name }), chart));
    }
  }

  function drawTrials(snap) {
    const body = $("#trial-rows");
    body.textContent = "";
    for (const p of snap.points.slice(-200).reverse()) {
      body.appendChild(el("tr", {},
        el("td", { class: "num", text: String(p.iteration) }), el("td", { class: "num", text: String(p.round) }),
        el("td", { class: `st-${p.status}`, text: p.status }), el("td", { class: "num", text: AS.fmt(p.score) }),
        el("td", { class: "num", text: p.holdout === null ? "" : AS.fmt(p.holdout) }),
        el("td", { text: p.error ? `${p.description} (${p.error})` : p.description })));
    }
  }

  // Before/after answers: the server's own completion endpoints, unsteered and with the best's vectors.
  async function complete(info, prompt, steering) {
    const chat = info.chat;
    const body = { model: info.model, max_tokens: info.max_tokens, temperature: 0, stream: false };
    if (steering) body.steering = steering;
    if (chat) body.messages = Array.isArray(prompt) ? prompt : [{ role: "user", content: prompt }];
    else body.prompt = prompt;
    const headers = { "Content-Type": "application/json" };
    let key = "";
    try { key = sessionStorage.getItem("autosteer-api-key") || ""; } catch (e) { /* storage off */ }
    if (key) headers.Authorization = `Bearer ${key}`;  // given in the playground's Settings
    const r = await fetch(chat ? "v1/chat/completions" : "v1/completions", {
      method: "POST", headers, body: JSON.stringify(body) });
    const data = await r.json();
    if (!r.ok) throw new Error((data.error && data.error.message) || `HTTP ${r.status}`);
    return chat ? data.choices[0].message.content : data.choices[0].text;
  }

  async function drawAnswers(snap) {
    const info = snap.answers, note = $("#answers-note"), table = $("#answers-table");
    if (!info.available) { note.textContent = info.reason; table.hidden = true; return; }
    const best = snap.best_candidate;
    const key = JSON.stringify(best);
    if (answersFor === key) return;
    answersFor = key;
    const body = $("#answers-body");
    body.textContent = "";
    table.hidden = false;
    note.textContent = best ? `Greedy answers (${info.max_tokens} tokens) without steering and with the best configuration (trial ${snap.best_iteration}).`
                            : "No candidate beat the baseline yet: both columns are unsteered.";
    const steering = best ? best.vectors.map((v) => {
      const out = { layer_idx: v.layer_idx, coeff: v.coeff };
      if (v.concept) out.concept = v.concept.name; else out.text = v.text;
      if (v.schedule) out.schedule = v.schedule;
      return out;
    }) : null;
    const jobs = [];
    for (const prompt of info.prompts) {
      const before = el("td", { class: "answer-cell", "data-testid": "answer-before", text: "…" });
      const after = el("td", { class: "answer-cell", "data-testid": "answer-after", text: "…" });
      body.appendChild(el("tr", {}, el("td", { text: Array.isArray(prompt) ? prompt.map((m) => m.content).join(" / ") : prompt }), before, after));
      jobs.push([before, prompt, null], [after, prompt, steering]);
    }
    if (info.total > info.prompts.length) note.textContent += ` The first ${info.prompts.length} of ${info.total} held-out prompts.`;
    // a few requests at a time: the server batches them, and its waiting queue stays short
    const worker = async () => {
      while (jobs.length && answersFor === key) {
        const [cell, prompt, s] = jobs.shift();
        try { cell.textContent = await complete(info, prompt, s); }
        catch (e) { cell.textContent = `error: ${e.message}`; cell.className = "st-crash"; }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  function render(snap) {
    $("#log-path").textContent = snap.log;
    const err = $("#log-error");
    err.hidden = snap.ok;
    if (!snap.ok) {
      $("#log-error-message").textContent = snap.error.message;
      const line = $("#log-error-line");
      line.hidden = snap.error.text === null;
      line.textContent = snap.error.text === null ? "" : `line ${snap.error.line}: ${snap.error.text}`;
      return;
    }
    $("#trials").textContent = snap.trials_text;
    $("#keeps").textContent = snap.keeps; $("#discards").textContent = snap.discards; $("#crashes").textContent = snap.crashes;
    $("#baseline").textContent = AS.fmt(snap.baseline_score); $("#best").textContent = AS.fmt(snap.best_score);
    $("#metric").textContent = snap.metric || "";
    $("#holdout-line").hidden = snap.baseline_holdout === null;
    $("#holdout-baseline").textContent = AS.fmt(snap.baseline_holdout); $("#holdout-best").textContent = AS.fmt(snap.best_holdout);
    const box = $("#plot-box");
    box.textContent = "";
    box.appendChild(drawPlot(snap));
    drawAxes(snap);
    $("#best-description").textContent = snap.best_description === null ? "" :
      `${snap.best_description}${snap.best_iteration ? ` (trial ${snap.best_iteration})` : ""}`;
    $("#best-code").textContent = snap.best_code || "";
    drawTrials(snap);
    drawAnswers(snap);
  }

  async function poll() {
    try {
      const r = await fetch("viewer/log.json", { cache: "no-store" });
      const snap = await r.json();
      pollMs = Math.max(50, (snap.poll_s || 1) * 1000);
      if (snap.version !== version) { version = snap.version; render(snap); }
      $("#live").textContent = `read ${new Date().toLocaleTimeString()}${snap.incomplete ? " (a row is being written)" : ""}`;
    } catch (e) {
      $("#live").textContent = `server unreachable (${e.message}); retrying`;
    }
    setTimeout(poll, pollMs);
  }

  $("#copy-code").addEventListener("click", () => {
    const text = $("#best-code").textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  });
  poll();
})();
