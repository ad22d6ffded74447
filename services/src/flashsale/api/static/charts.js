// A small line chart in plain SVG, written for this dashboard (no library): a rolling window of
// points per series, auto-scaled y axis with three grid lines, gaps where a value is missing,
// a legend with each series' latest value. Colours are dark enough for 3:1 against white.

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1a56b8", "#b3261e", "#1b7a35", "#8f4a00", "#6b3fb3", "#00727a", "#5c6370", "#a3317a"];
const W = 600;
const H = 200;
const MIN_SPAN_S = 10;
const PAD = { left: 52, right: 10, top: 10, bottom: 22 };

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

// 0.37 -> 0.5, 7 -> 10, 1234 -> 2000: a round axis maximum.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function label(value) {
  if (value >= 1000) return `${+(value / 1000).toFixed(1)}k`;
  return String(+value.toFixed(value < 10 ? 2 : 0));
}

export class LineChart {
  constructor(figure, { windowS = 120, colors = {}, digits = 1 } = {}) {
    this.figure = figure;
    this.windowS = windowS;
    this.colors = colors;
    this.digits = digits;
    this.series = new Map(); // name -> [{t, v}]
    this.points = 0;
    this.first = null; // the first point's time: the x axis grows from it up to windowS
    const caption = figure.querySelector("figcaption");
    this.svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": caption.textContent });
    caption.after(this.svg);
    this.legend = document.createElement("ul");
    this.legend.className = "legend";
    figure.appendChild(this.legend);
    figure.dataset.points = "0";
  }

  color(name) {
    if (this.colors[name]) return this.colors[name];
    const used = new Set([...this.series.keys()].map((n) => this.colors[n]).filter(Boolean));
    const free = PALETTE.filter((c) => !used.has(c));
    this.colors[name] = free[0] || PALETTE[this.series.size % PALETTE.length];
    return this.colors[name];
  }

  // values: {series name: number or null}; t: seconds since the epoch.
  push(t, values) {
    if (this.first === null) this.first = t;
    let any = false;
    for (const [name, v] of Object.entries(values)) {
      if (!this.series.has(name)) {
        this.color(name);
        this.series.set(name, []);
      }
      if (v !== null && v !== undefined) any = true;
    }
    for (const [name, points] of this.series) {
      const v = values[name];
      points.push({ t, v: v === undefined ? null : v });
      while (points.length && points[0].t < t - this.windowS) points.shift();
    }
    if (any) this.points += 1;
    this.figure.dataset.points = String(this.points);
    this.draw(t);
  }

  draw(now) {
    this.svg.replaceChildren();
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    let max = 0;
    for (const points of this.series.values()) for (const p of points) if (p.v !== null) max = Math.max(max, p.v);
    max = niceMax(max);
    // A short history fills the width; past windowS the chart scrolls.
    const span = Math.min(this.windowS, Math.max(MIN_SPAN_S, now - this.first));
    const x = (t) => PAD.left + plotW * (1 - (now - t) / span);
    const y = (v) => PAD.top + plotH * (1 - v / max);
    for (const frac of [0, 0.5, 1]) {
      const yy = y(max * frac);
      el("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: yy, y2: yy }, this.svg);
      el("text", { x: PAD.left - 6, y: yy + 4, "text-anchor": "end" }, this.svg).textContent = label(max * frac);
    }
    el("text", { x: PAD.left, y: H - 6 }, this.svg).textContent = `−${Math.round(span)} s`;
    el("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, this.svg).textContent = "now";
    for (const [name, points] of this.series) {
      let d = "";
      let pen = "M";
      for (const p of points) {
        if (p.v === null) {
          pen = "M";
          continue;
        }
        d += `${pen}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
        pen = "L";
      }
      if (d) el("path", { class: "series", d, stroke: this.colors[name] }, this.svg);
    }
    this.drawLegend();
  }

  drawLegend() {
    this.legend.replaceChildren();
    const summary = [];
    for (const [name, points] of this.series) {
      const last = points.length ? points[points.length - 1].v : null;
      const item = document.createElement("li");
      const swatch = el("svg", { viewBox: "0 0 10 10", "aria-hidden": "true" }, item);
      el("rect", { width: 10, height: 10, rx: 2, fill: this.colors[name] }, swatch);
      item.append(name.replaceAll("_", " "));
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = last === null ? "–" : last.toLocaleString("en-US", { maximumFractionDigits: this.digits });
      item.appendChild(value);
      this.legend.appendChild(item);
      summary.push(`${name} ${value.textContent}`);
    }
    const caption = this.figure.querySelector("figcaption").textContent;
    this.svg.setAttribute("aria-label", `${caption}: ${summary.join(", ") || "no data yet"}`);
  }
}
