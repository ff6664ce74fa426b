// The playground: compare unsteered and steered answers, edit the steering, sweep a coefficient.
// Talks only to this server's own OpenAI-compatible API (and /playground/code for the Python lines).
"use strict";
(function () {
  const $ = AS.$, el = AS.el;
  const S = {
    config: null, presets: [], preset: "", vectors: [], busy: false,
    concepts: {},  // concept name -> {name, hash} (from the presets)
  };
  const COEFF_SLIDER = 2;  // the slider spans -2..2; the typed value may go beyond (up to the server's limit)

  // ---- requests ----------------------------------------------------------------------------
  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("#api-key").value.trim();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }
  function chat() { return $("#endpoint").value === "chat"; }
  function vectorJSON(v) {
    const out = { layer_idx: v.layer_idx, coeff: v.coeff };
    if (v.kind === "text") out.text = v.text;
    else if (v.kind === "concept") out.concept = v.concept;
    else out.vector = v.vector;
    if (v.schedule) out.schedule = v.schedule;
    return out;
  }
  function steeringValue(vectors) {
    if (vectors === undefined && S.preset) return S.preset;
    const list = vectors || S.vectors;
    return list.length ? list.map(vectorJSON) : null;
  }
  function body(steering) {
    const b = { model: S.config.model };
    const text = $("#request").value;
    if (chat()) b.messages = [{ role: "user", content: text }]; else b.prompt = text;
    b.max_tokens = numberOf($("#max-tokens"));
    b.temperature = numberOf($("#temperature"));
    b.stream = true;
    b.stream_options = { include_usage: true };
    if (steering !== null && steering !== undefined) b.steering = steering;
    return b;
  }
  function numberOf(input) {
    const t = input.value.trim();
    return t === "" || isNaN(Number(t)) ? t : Number(t);  // a non-number goes as typed: the server names it
  }

  class ApiError extends Error {
    constructor(message, param) { super(message); this.param = param; }
  }

  // POST a streamed completion; onText(piece) per chunk; resolves to {tokens, seconds}.
  async function stream(b, onText) {
    const t0 = performance.now();
    const r = await fetch(chat() ? "v1/chat/completions" : "v1/completions",
                          { method: "POST", headers: headers(), body: JSON.stringify(b) });
    if (!r.ok) {
      let data = null;
      try { data = await r.json(); } catch (e) { /* not JSON */ }
      const err = data && data.error;
      throw new ApiError(err ? err.message : `HTTP ${r.status} ${r.statusText}`, err ? err.param : null);
    }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "", tokens = null, pieces = 0, done = false;
    while (!done) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i); buf = buf.slice(i + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") { done = true; break; }
          const obj = JSON.parse(data);
          if (obj.error) throw new ApiError(obj.error.message, obj.error.param);
          if (obj.usage) tokens = obj.usage.completion_tokens;
          const c = obj.choices && obj.choices[0];
          const piece = c ? (chat() ? (c.delta && c.delta.content) : c.text) : null;
          if (piece) { pieces += 1; onText(piece); }
        }
      }
    }
    return { tokens: tokens === null ? pieces : tokens, seconds: (performance.now() - t0) / 1000 };
  }
  function rate(res) {
    const tps = res.seconds > 0 ? res.tokens / res.seconds : 0;
    return `${res.tokens} tokens in ${res.seconds.toFixed(2)} s · ${tps.toFixed(1)} tokens/s`;
  }

  // ---- errors, shown in place -----------------------------------------------------------------
  function clearError() {
    $("#error").hidden = true;
    document.querySelectorAll(".field-bad").forEach((n) => n.classList.remove("field-bad"));
  }
  function showError(message, param) {
    $("#error").hidden = false;
    $("#error-message").textContent = message;
    $("#error-param").textContent = param ? `field: ${param}` : "";
    const f = fieldOf(param);
    if (f) f.classList.add("field-bad");
  }
  function fieldOf(param) {
    if (!param) return null;
    const m = /^steering(?:\.vectors)?\[(\d+)\](?:\.(\w+))?/.exec(param);
    if (m) {
      const box = document.querySelectorAll("#vectors .vector")[Number(m[1])];
      if (!box) return $("#preset");
      const part = { layer_idx: "vector-layer", coeff: "vector-coeff", text: "vector-text", concept: "vector-concept",
                     schedule: "vector-schedule", coeff_schedule: "vector-schedule" }[m[2]];
      return (part && box.querySelector(`[data-testid="${part}"]`)) || box;
    }
    if (param.startsWith("steering")) return $("#preset");
    return { max_tokens: $("#max-tokens"), max_completion_tokens: $("#max-tokens"), temperature: $("#temperature"),
             messages: $("#request"), prompt: $("#request"), model: $("#endpoint") }[param.split(/[.[]/)[0]] || null;
  }

  // ---- the steering editor ------------------------------------------------------------------
  function fromPreset(v) {
    const out = { layer_idx: v.layer_idx, coeff: v.coeff, schedule: v.schedule || null };
    if (v.text !== undefined && v.text !== null) { out.kind = "text"; out.text = v.text; }
    else if (v.concept) { out.kind = "concept"; out.concept = v.concept.name || v.concept; }
    else { out.kind = "vector"; out.vector = v.vector; out.label = v.from_text || null;
           out.constant = v.output_of_layer !== undefined; }
    return out;
  }
  function edited() {  // an edit turns a chosen preset into its vectors, sent explicitly
    if (S.preset) { S.preset = ""; $("#preset").value = ""; $("#preset-note").textContent = "edited: the vectors are sent explicitly"; }
    sweepLabels();
    update();
  }
  function scheduleKind(type) { return S.config.schedules.find((k) => k.type === type); }

  function vectorBox(v, i) {
    const n = S.config.num_layers;
    const layerNum = el("input", { type: "number", min: 0, max: n - 1, step: 1, value: v.layer_idx, "data-testid": "vector-layer",
                                   "aria-label": `vector ${i + 1} layer` });
    const layerRange = el("input", { type: "range", min: 0, max: n - 1, step: 1, value: v.layer_idx, "aria-label": `vector ${i + 1} layer slider` });
    const coeffNum = el("input", { type: "number", step: "any", value: v.coeff, "data-testid": "vector-coeff",
                                   "aria-label": `vector ${i + 1} coefficient` });
    const coeffRange = el("input", { type: "range", min: -COEFF_SLIDER, max: COEFF_SLIDER, step: 0.01, value: v.coeff,
                                     "data-testid": "vector-coeff-slider", "aria-label": `vector ${i + 1} coefficient slider` });
    layerNum.addEventListener("input", () => { v.layer_idx = numberOf(layerNum); layerRange.value = layerNum.value; edited(); });
    layerRange.addEventListener("input", () => { v.layer_idx = Number(layerRange.value); layerNum.value = layerRange.value; edited(); });
    coeffNum.addEventListener("input", () => { v.coeff = numberOf(coeffNum); coeffRange.value = coeffNum.value; edited(); });
    coeffRange.addEventListener("input", () => { v.coeff = Number(coeffRange.value); coeffNum.value = coeffRange.value; edited(); });

    const kind = el("select", { "aria-label": `vector ${i + 1} source`, "data-testid": "vector-kind" },
      el("option", { value: "text", text: "text" }),
      el("option", { value: "concept", text: "a preset's concept", disabled: !Object.keys(S.concepts).length }),
      el("option", { value: "vector", text: "direction (from a file)", disabled: v.kind !== "vector" }));
    kind.value = v.kind;
    const source = el("span", { class: "row" });
    function drawSource() {
      source.textContent = "";
      if (v.kind === "text") {
        const t = el("input", { type: "text", size: 28, value: v.text || "", "data-testid": "vector-text",
                                "aria-label": `vector ${i + 1} text`, placeholder: "a steering text, e.g. logical" });
        t.addEventListener("input", () => { v.text = t.value; edited(); });
        source.appendChild(t);
      } else if (v.kind === "concept") {
        const c = el("select", { "data-testid": "vector-concept", "aria-label": `vector ${i + 1} concept` },
          Object.keys(S.concepts).map((name) => el("option", { value: name, text: name })));
        if (!v.concept) v.concept = Object.keys(S.concepts)[0];
        c.value = v.concept;
        c.addEventListener("change", () => { v.concept = c.value; edited(); });
        source.appendChild(c);
      } else {
        source.appendChild(el("span", { class: "muted", text: `${v.vector.length} numbers${v.label ? ` from "${v.label}"` : ""}${v.constant ? " (a llama.cpp control vector)" : ""}` }));
      }
    }
    kind.addEventListener("change", () => { v.kind = kind.value; if (v.kind === "text" && v.text === undefined) v.text = ""; drawSource(); edited(); });
    drawSource();

    const sched = el("select", { "data-testid": "vector-schedule", "aria-label": `vector ${i + 1} schedule` },
      el("option", { value: "", text: "constant" }),
      S.config.schedules.map((k) => el("option", { value: k.type, text: `${k.type} (${k.class_name})` })));
    sched.value = v.schedule ? v.schedule.type : "";
    const params = el("span", { class: "row" });
    function drawParams() {
      params.textContent = "";
      if (!v.schedule) return;
      const k = scheduleKind(v.schedule.type);
      for (const p of k.params) {
        const inp = el("input", { type: "number", step: p.kind === "int" ? 1 : "any", min: p.min, max: p.max,
                                  value: v.schedule[p.name], title: p.doc, "data-testid": `schedule-${p.name}`,
                                  "aria-label": `vector ${i + 1} ${p.name}` });
        inp.addEventListener("input", () => { v.schedule[p.name] = numberOf(inp); edited(); });
        params.appendChild(el("label", { title: p.doc }, p.name, inp));
      }
    }
    sched.addEventListener("change", () => {
      if (!sched.value) v.schedule = null;
      else {
        const k = scheduleKind(sched.value);
        v.schedule = { type: k.type };
        for (const p of k.params) v.schedule[p.name] = p.default;
      }
      drawParams(); edited();
    });
    drawParams();
    const remove = el("button", { type: "button", class: "secondary", "aria-label": `remove vector ${i + 1}`, text: "Remove" });
    remove.addEventListener("click", () => { S.vectors.splice(i, 1); drawVectors(); edited(); });

    return el("div", { class: "vector", role: "group", "aria-label": `vector ${i + 1}` },
      el("div", { class: "row" }, el("b", { text: `#${i + 1}` }),
         el("label", {}, "layer", layerRange, layerNum),
         el("label", {}, "coefficient", coeffRange, coeffNum)),
      el("div", { class: "row" }, el("label", {}, "source", kind), source),
      el("div", { class: "row" }, el("label", {}, "schedule", sched), params, remove));
  }
  function drawVectors() {
    const box = $("#vectors");
    box.textContent = "";
    S.vectors.forEach((v, i) => box.appendChild(vectorBox(v, i)));
    $("#vectors-note").textContent = S.vectors.length ? "" : "No vectors: the steered answer is unsteered. Pick a preset or add a vector.";
    const sv = $("#sweep-vector"), keep = sv.value;
    sv.textContent = "";
    S.vectors.forEach((v, i) => sv.appendChild(el("option", { value: i })));
    if (keep && Number(keep) < S.vectors.length) sv.value = keep;
    sweepLabels();
  }
  function sweepLabels() {
    const options = $("#sweep-vector").options;
    S.vectors.forEach((v, i) => {
      if (options[i]) options[i].textContent = `#${i + 1}: layer ${v.layer_idx}, ${v.kind === "text" ? JSON.stringify(v.text) : v.kind === "concept" ? v.concept : "direction"}`;
    });
    defaultSweep();
  }
  function defaultSweep() {
    const v = S.vectors[Number($("#sweep-vector").value || 0)];
    if (!v || typeof v.coeff !== "number") return;
    const c = v.coeff || 0.5;
    $("#sweep-coeffs").placeholder = [0.25, 0.5, 1, 2].map((m) => +(m * c).toPrecision(2)).join(", ");
  }

  // ---- the configuration as JSON and as Python ----------------------------------------------
  let codeTimer = null, codeSeq = 0;
  function update() {
    const b = body(steeringValue());
    let long = false;
    $("#json").textContent = JSON.stringify(b, (k, val) => {
      if (Array.isArray(val) && val.length > 16 && typeof val[0] === "number") { long = true; return `[${val.length} numbers]`; }
      return val;
    }, 2);
    $("#json-note").hidden = !long;
    clearTimeout(codeTimer);
    codeTimer = setTimeout(refreshCode, 150);
  }
  async function refreshCode() {
    const seq = ++codeSeq;
    try {
      const r = await fetch("playground/code", { method: "POST", headers: headers(),
                                                 body: JSON.stringify({ steering: steeringValue() }) });
      const data = await r.json();
      if (seq !== codeSeq) return;
      clearError();
      if (!r.ok) { $("#code").textContent = ""; showError(data.error.message, data.error.param); return; }
      $("#code").textContent = data.code;
    } catch (e) {
      if (seq === codeSeq) showError(`the server did not answer: ${e.message}`, null);
    }
  }

  // ---- actions --------------------------------------------------------------------------------
  function setBusy(on) {
    S.busy = on;
    $("#compare").disabled = on; $("#sweep").disabled = on;
  }
  async function compare() {
    if (S.busy) return;
    clearError(); setBusy(true);
    const cols = [["unsteered", null], ["steered", steeringValue()]];
    for (const [name] of cols) { $(`#answer-${name}`).textContent = ""; $(`#rate-${name}`).textContent = "…"; }
    await Promise.all(cols.map(async ([name, steering]) => {
      const out = $(`#answer-${name}`);
      try {
        const res = await stream(body(steering), (piece) => { out.textContent += piece; });
        $(`#rate-${name}`).textContent = rate(res);
      } catch (e) {
        $(`#rate-${name}`).textContent = "failed";
        showError(e.message, e.param || null);
      }
    }));
    setBusy(false);
  }
  async function sweep() {
    if (S.busy) return;
    clearError();
    const i = Number($("#sweep-vector").value);
    if (!S.vectors.length || !(i >= 0 && i < S.vectors.length)) { showError("add a vector (or pick a preset) to sweep its coefficient", "sweep"); return; }
    if (S.vectors[i].constant) { showError("a llama.cpp control vector of a preset can only be used by the preset's name", "sweep"); return; }
    const text = $("#sweep-coeffs").value.trim() || $("#sweep-coeffs").placeholder;
    const coeffs = text.split(/[\s,;]+/).filter(Boolean).map(Number);
    if (coeffs.length < 3 || coeffs.length > 5 || coeffs.some((c) => !isFinite(c))) {
      showError(`a sweep takes 3 to 5 numbers, got "${text}"`, "sweep coefficients");
      $("#sweep-coeffs").classList.add("field-bad");
      return;
    }
    setBusy(true);
    const box = $("#sweep-results");
    box.textContent = "";
    const cells = coeffs.map((c) => {
      const out = el("div", { class: "answer", "data-testid": "sweep-answer", "data-coeff": c });
      const r = el("div", { class: "rate", text: "…" });
      box.appendChild(el("div", {}, el("h3", { text: `coeff ${c}` }), out, r));
      return { c, out, r };
    });
    await Promise.all(cells.map(async ({ c, out, r }) => {
      const vectors = S.vectors.map((v, j) => (j === i ? Object.assign({}, v, { coeff: c }) : v));
      try { r.textContent = rate(await stream(body(steeringValue(vectors)), (p) => { out.textContent += p; })); }
      catch (e) { r.textContent = "failed"; out.textContent = `error: ${e.message}`; showError(e.message, e.param || null); }
    }));
    setBusy(false);
  }

  // ---- start ----------------------------------------------------------------------------------
  async function loadPresets() {
    const r = await fetch("v1/presets", { headers: headers() });
    const data = r.ok ? await r.json() : { data: [] };
    S.presets = data.data || [];
    S.concepts = {};
    for (const p of S.presets) for (const c of Object.values(p.concepts || {})) S.concepts[c.name] = c.name;
    const sel = $("#preset");
    while (sel.options.length > 1) sel.remove(1);
    for (const p of S.presets) sel.appendChild(el("option", { value: p.name, text: `${p.name} (${p.file})` }));
    sel.value = S.presets.some((p) => p.name === S.preset) ? S.preset : "";
    $("#preset-note").textContent = r.ok ? "" : `presets: HTTP ${r.status} (an API key is needed: see Settings)`;
  }
  async function start() {
    try { $("#api-key").value = sessionStorage.getItem("autosteer-api-key") || ""; } catch (e) { /* storage off */ }
    const config = await fetch("playground/config.json").then((r) => r.json());
    S.config = config;
    await loadPresets();
    $("#model-id").textContent = config.model;
    $("#model-shape").textContent = `${config.num_layers} decoder layers, hidden size ${config.hidden_size}`;
    const mt = $("#max-tokens");
    mt.max = config.max_tokens;
    mt.value = Math.min(128, config.max_tokens);
    const ep = $("#endpoint");
    if (!config.chat_template) { ep.value = "completions"; ep.querySelector('option[value="chat"]').disabled = true; }
    if (config.viewer) { const a = $("#viewer-link"); a.hidden = false; a.href = config.viewer.url; }
    const sel = $("#preset");
    $("#api-key").addEventListener("change", () => {
      try { sessionStorage.setItem("autosteer-api-key", $("#api-key").value.trim()); } catch (e) { /* storage off */ }
      loadPresets(); update();
    });
    sel.addEventListener("change", () => {
      S.preset = sel.value;
      const p = S.presets.find((x) => x.name === sel.value);
      S.vectors = p ? p.vectors.map(fromPreset) : [];
      $("#preset-note").textContent = p ? `sent by name: "steering": "${p.name}"` : "";
      drawVectors(); update();
    });
    $("#add-vector").addEventListener("click", () => {
      const last = S.vectors[S.vectors.length - 1];
      S.vectors.push({ layer_idx: last ? last.layer_idx : Math.floor(config.num_layers / 3), coeff: 0.5, kind: "text",
                       text: "", schedule: null });
      drawVectors(); edited();
      const boxes = document.querySelectorAll('#vectors [data-testid="vector-text"]');
      if (boxes.length) boxes[boxes.length - 1].focus();
    });
    for (const id of ["#request", "#max-tokens", "#temperature", "#endpoint"]) $(id).addEventListener("input", update);
    $("#endpoint").addEventListener("change", update);
    $("#request").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); compare(); } });
    $("#compare").addEventListener("click", compare);
    $("#sweep").addEventListener("click", sweep);
    $("#sweep-vector").addEventListener("change", defaultSweep);
    drawVectors(); update();
    document.body.dataset.ready = "1";
  }
  start().catch((e) => showError(`the page could not start: ${e.message}`, null));
})();
