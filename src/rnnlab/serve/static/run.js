// A trained run's page: the text posted to /predict and /trace, the states drawn as p × T heatmaps.
import {api, debounce, el, nav} from "./common.js";

const $ = (id) => document.getElementById(id);
const name = decodeURIComponent(location.pathname.split("/").pop());
const CELL_W = 30, CELL_H = 14, LEFT = 44, TOP = 56;
let info = null, asked = 0;

// blue (negative) - white - red (positive), |a| scaled by `lim`
function colour(v, lim) {
  const s = Math.min(1, Math.abs(v) / lim);
  const fade = Math.round(255 * (1 - s));
  return v >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
}

function tip(event, text) {
  const t = $("tip");
  if (!text) { t.style.display = "none"; return; }
  t.textContent = text;
  t.style.display = "block";
  t.style.left = `${event.clientX + 14}px`;
  t.style.top = `${event.clientY + 12}px`;
}

function heatmap(layer, tokens, lim) {
  const p = layer.a[0].length, T = tokens.length;
  const svg = el("svg", {class: "heatmap", width: LEFT + T * CELL_W + 50, height: TOP + p * CELL_H + 8,
                         "data-layer": layer.layer, "data-direction": layer.direction,
                         "data-units": p, "data-steps": T});
  tokens.forEach((tok, t) => svg.append(el("text", {
    x: LEFT + t * CELL_W + CELL_W / 2, y: TOP - 6, transform: `rotate(-45 ${LEFT + t * CELL_W + CELL_W / 2} ${TOP - 6})`,
  }, tok.length > 10 ? `${tok.slice(0, 9)}…` : tok)));
  for (let i = 0; i < p; i++) {
    if (p <= 40 || i % 5 === 0) svg.append(el("text", {x: LEFT - 6, y: TOP + i * CELL_H + 11, "text-anchor": "end"}, i + 1));
    for (let t = 0; t < T; t++) {
      const v = layer.a[t][i];
      svg.append(el("rect", {class: "cell", x: LEFT + t * CELL_W, y: TOP + i * CELL_H, width: CELL_W - 1,
                             height: CELL_H - 1, fill: colour(v, lim), "data-i": i + 1, "data-t": t + 1}));
    }
  }
  svg.addEventListener("mousemove", (e) => {
    const r = e.target;
    if (!r.classList || !r.classList.contains("cell")) return tip(e, "");
    const t = +r.dataset.t, i = +r.dataset.i;
    tip(e, `unit ${i}, step ${t} ("${tokens[t - 1]}"): a = ${layer.a[t - 1][i - 1].toFixed(4)}`);
  });
  svg.addEventListener("mouseleave", (e) => tip(e, ""));
  const read = layer.direction === "backward" ? "read right to left: column t has read tokens t..T"
                                              : "read left to right: column t has read tokens 1..t";
  return el("div", {class: "svgbox", style: "margin-bottom:0.8em"},
    el("p", {class: "note", style: "margin:0.3em 0.6em"},
      `layer ${layer.layer}, ${layer.direction} (${read}): p = ${p} units × T = ${T} timesteps; ` +
      `blue -${lim.toFixed(2)}, white 0, red +${lim.toFixed(2)}`), svg);
}

// y_t: one row per output (labels), or the most expected next symbol (an Elman run)
function yTable(trace) {
  const {tokens, y, outputs} = trace;
  if (y === null) return el("p", {class: "note", style: "margin:0.6em"}, `No y_t after each step: ${trace.y_note}.`);
  const table = el("table", {id: "y-table"});
  table.append(el("tr", {}, el("th", {}, ""), tokens.map((t) => el("th", {}, t))));
  if (trace.predictions) {
    table.append(el("tr", {}, el("td", {}, "expects next"), trace.predictions.map((w, t) =>
      el("td", {title: `p = ${Math.max(...y[t]).toFixed(3)}`}, w))));
    return table;
  }
  outputs.forEach((label, c) => {
    table.append(el("tr", {}, el("td", {}, label), y.map((row) => {
      const best = row.indexOf(Math.max(...row)) === c;
      return el("td", {style: `background: rgba(31,78,156,${row[c].toFixed(3)}); color: ${row[c] > 0.55 ? "white" : "black"};` +
                              (best ? "font-weight:700" : "")}, row[c].toFixed(2));
    })));
  });
  return table;
}

function bars(prediction) {
  const entries = Object.entries(prediction.probabilities);
  return entries.flatMap(([label, v]) => [
    el("span", {}, label),
    el("div", {}, el("div", {class: `bar${label === prediction.label ? " best" : ""}`, style: `width:${100 * v}%`})),
    el("span", {class: "prob", "data-label": label}, v.toFixed(3)),
  ]);
}

async function read() {
  const text = $("text").value;
  const mine = ++asked;
  if (!text.trim()) return;
  try {
    const [trace, predicted] = await Promise.all([
      api("/trace", {run: name, text}),
      info.kind === "classifier" ? api("/predict", {run: name, texts: [text]}) : null,
    ]);
    if (mine !== asked) return;
    $("status").textContent = "";
    if (predicted) $("prediction").replaceChildren(...bars(predicted.predictions[0]));
    const lim = Math.max(1e-6, ...trace.layers.flatMap((l) => l.a.flat().map(Math.abs)));
    $("heatmaps").replaceChildren(...trace.layers.map((l) => heatmap(l, trace.tokens, lim)));
    $("y").replaceChildren(yTable(trace));
  } catch (e) {
    if (mine === asked) $("status").replaceChildren(el("span", {class: "error"}, e.message));
  }
}

// The dendrogram of the words' mean states: leaves in rows, joins at their distance.
function tree(root) {
  const leaves = [];
  const walk = (n) => (n.children ? n.children.forEach(walk) : leaves.push(n));
  walk(root);
  const W = 640, rowH = 16, labelW = 170, H = leaves.length * rowH + 30;
  const scale = (W - labelW - 20) / root.distance;
  const svg = el("svg", {class: "tree", width: W, height: H});
  let row = 0;
  const place = (n) => {
    if (!n.children) {
      const y = 10 + row++ * rowH;
      svg.append(el("text", {x: W - labelW + 6, y: y + 4, fill: n.noun ? "#1f4e9c" : "#b03a2e"},
        `${n.word}  ${n.category}`));
      return {x: W - labelW, y};
    }
    const [a, b] = n.children.map(place);
    const x = W - labelW - n.distance * scale;
    svg.append(el("polyline", {points: `${a.x},${a.y} ${x},${a.y} ${x},${b.y} ${b.x},${b.y}`, fill: "none", stroke: "#555"}));
    return {x, y: (a.y + b.y) / 2};
  };
  place(root);
  svg.append(el("text", {x: 4, y: H - 6, fill: "#5b6572"}, "distance between mean hidden states (Ward), 0 at the words"));
  return svg;
}

async function start() {
  nav(name).catch(() => {});
  info = await api(`/runs/${encodeURIComponent(name)}`);
  $("title").textContent = `${info.name}: ${info.task}`;
  document.title = `rnnlab: ${info.name}`;
  const dirs = info.bidirectional ? "two directions" : "one direction";
  $("about").textContent = `${info.cell}, k = ${info.k} features, p = ${info.p} units, ${info.layers} layer(s), ` +
    `${dirs}; ${info.parameters.toLocaleString("en-US")} parameters, the same for any T.` +
    (info.kind === "sequence" ? ` y_t is the next symbol it expects; words: ${info.outputs.join(" ")}` : "");
  if (info.kind === "sequence") {
    $("prediction-box").hidden = true;
    $("y-title").textContent = "y_t after each step: the next symbol the network expects";
    $("text").value = info.example;
    if (info.tree) {
      $("tree-box").hidden = false;
      $("tree").replaceChildren(tree(info.tree));
    }
    read();
  } else {
    $("y-title").textContent = info.bidirectional ? "y_t after each step"
      : "y_t after each step: the label probabilities after reading tokens 1..t";
  }
  $("text").addEventListener("input", debounce(read, 150));
}

start().catch((e) => $("status").replaceChildren(el("span", {class: "error"}, e.message)));
