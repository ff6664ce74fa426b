// Helpers shared by the playground and the search viewer (no libraries).
"use strict";
const AS = {};
AS.$ = (sel, root) => (root || document).querySelector(sel);
AS.el = function (tag, attrs, ...children) {
  const ns = ["svg", "g", "path", "line", "circle", "rect", "text", "title", "polyline"].includes(tag)
    ? "http://www.w3.org/2000/svg" : null;
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
};
AS.fmt = function (x, digits) {
  if (x === null || x === undefined || !isFinite(x)) return "n/a";
  return Number(x).toFixed(digits === undefined ? 4 : digits);
};
// "nice" ticks for an axis from lo to hi
AS.ticks = function (lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
};
// A line chart in SVG: series of {x, y} points, marks drawn by the caller through `draw(ctx)`.
AS.chart = function (opts) {
  const W = opts.width || 720, H = opts.height || 280;
  const m = { l: 56, r: 12, t: 10, b: 34 };
  const svg = AS.el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                             "aria-label": opts.label || "chart", "data-testid": opts.testid || null });
  let [x0, x1] = opts.xrange, [y0, y1] = opts.yrange;
  if (x1 <= x0) x1 = x0 + 1;
  if (!(y1 > y0)) { const pad = Math.abs(y0) * 0.1 || 0.5; y0 -= pad; y1 += pad; }
  else { const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad; }
  const X = (x) => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
  const Y = (y) => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
  const g = AS.el("g");
  for (const t of AS.ticks(y0, y1, 5)) {
    g.appendChild(AS.el("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "gridline" }));
    g.appendChild(AS.el("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end", text: String(+t.toPrecision(4)) }));
  }
  for (const t of AS.ticks(x0, x1, 10).filter((t) => Number.isInteger(t))) {
    g.appendChild(AS.el("text", { x: X(t), y: H - m.b + 15, "text-anchor": "middle", text: String(t) }));
  }
  g.appendChild(AS.el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }));
  g.appendChild(AS.el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }));
  if (opts.xlabel) g.appendChild(AS.el("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle", text: opts.xlabel }));
  if (opts.ylabel) g.appendChild(AS.el("text", { x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
                                                 transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`, text: opts.ylabel }));
  svg.appendChild(g);
  opts.draw({ svg, X, Y, bottom: H - m.b, left: m.l, right: W - m.r });
  return svg;
};
