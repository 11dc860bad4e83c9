// The playground: the controls post their values to /explain and every table is redrawn from the answer.
import {api, bytes, count, debounce, el, human, nav} from "./common.js";

const NAMES = ["cell", "k", "p", "T", "B", "q", "layers", "every_step"];
const $ = (id) => document.getElementById(id);
const shape = (s) => `(${s.join(", ")}${s.length === 1 ? "," : ""})`; // as Python writes a tuple
let asked = 0; // the latest request: answers to older ones are dropped

function values() {
  const v = {};
  for (const name of NAMES) {
    const input = $(name);
    v[name] = input.type === "checkbox" ? input.checked : input.tagName === "SELECT" ? input.value : +input.value;
  }
  return v;
}

// Replace a table body's rows; cells whose text changed flash.
function fill(table, rows, classes = []) {
  const body = $(table).querySelector("tbody");
  const before = [...body.rows].map((r) => [...r.cells].map((c) => c.textContent));
  body.replaceChildren(...rows.map((row, i) => el("tr", {class: classes[i] || ""},
    row.map((text, j) => {
      const kind = table !== "parameters" ? "" : j === 0 ? "name" : j === 3 ? "words" : "";
      const cell = el("td", {class: kind}, text);
      if (before[i] && before[i][j] !== undefined && before[i][j] !== String(text)) cell.classList.add("changed");
      return cell;
    }))));
}

function draw(ex, v) {
  $("equations").textContent = ex.equations.join("\n");
  const alike = [...new Set([1, 20, v.T, 2000])].sort((a, b) => a - b).map((t) => `T=${t}`).join(", ");
  $("alike").textContent = `the same for ${alike}`;
  fill("parameters", [
    ...ex.parameters.map((p) => [p.name, p.shape.join("×"), count(p.count), ex.roles[p.name] || ""]),
    ["total", "", count(ex.total), "no shape mentions T"],
  ], ex.parameters.map(() => "").concat(["total"]));
  $("parameters").querySelector("tr.total td:nth-child(3)").id = "total";
  $("per-seq").textContent = `per sequence (× T=${ex.T})`;
  $("per-batch").textContent = `per batch (× B=${ex.B})`;
  const f = ex.flops, m = ex.memory_bytes;
  fill("costs", [
    ["FLOPs", human(f.step), human(f.sequence), human(f.batch)],
    ["activations kept for backprop", bytes(m.step), bytes(m.sequence), bytes(m.batch)],
    ["parameters", bytes(m.parameters), bytes(m.parameters), bytes(m.parameters)],
  ]);
  const growth = [...ex.at_T, ex.p_doubled].map((c) =>
    [c.T, c.p, count(c.total), human(c.flops_sequence), bytes(c.memory_sequence)]);
  fill("growth", growth);
  const recurrent = ex.parameters.some((p) => p.name.endsWith("U_a"));
  $("growth-note").textContent = "T multiplies the work and the activations, never the parameters. " + (recurrent
    ? "Doubling p doubles W_a (p×k) and quadruples U_a (p×p), whatever T is."
    : "Doubling p doubles W_a (G·p×k) and b_a: a min cell has no U_a, so no p×p term.");
  $("unrolled").innerHTML = ex.svg; // drawn by rnnlab.teach.explain_views.unrolled_svg from the sizes alone
}

function misreadings(mr, v) {
  const {p, T, k} = v;
  let wrong;
  if (p < T) wrong = `T=${T} words into p=${p} units is not ${Math.ceil(T / p)} pieces of ${p} words`;
  else if (p > T) wrong = `p=${p} units with T=${T} words is not "${T} units used, then the next sequence"`;
  else wrong = `p=${p} units for T=${T} words is not one unit per word`;
  const ran = mr.steps_run === T ? `${T} steps` : `the first ${mr.steps_run} of ${T} steps`;
  const rows = [];
  mr.steps.forEach((s, i) => {
    if (i > 0 && s.t !== mr.steps[i - 1].t + 1) rows.push(el("tr", {}, el("td", {}, "…")));
    rows.push(el("tr", {}, [s.t, shape(s.x), shape(s.a_prev), shape(s.a), `${s.changed} of ${s.units}`]
      .map((t) => el("td", {}, t))));
  });
  const sw = mr.same_weights;
  $("misreadings").replaceChildren(
    el("p", {class: "misreading"}, `${wrong}: there are ${T} steps, each reads one whole x_t (${k} features) ` +
      `into the same ${p} units` + (mr.all_units_changed ? ", and all of them changed at every step." : ".")),
    el("table", {}, el("thead", {}, el("tr", {}, ["t", "reads x_t", "and a_{t-1}", "writes a_t", "units changed"]
      .map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    el("p", {class: "note"}, `the loop as it ran: ${ran}, each one updating all p=${p} units`),
    el("p", {class: "misreading"}, `The state a_t has shape (${p},) at every one of the ${T} steps: p is the size ` +
      `of the state, T the number of times the loop runs; the two are independent. The same weights run ` +
      `T=${sw.T_short} and T=${sw.T_long}: the layer has ${count(sw.parameters_short)} parameters for both, ` +
      `states ${shape(sw.a_short_shape)} and ${shape(sw.a_long_shape)}, and the first ${sw.T_short} states of the long run ` +
      `equal the short run's (largest difference ${sw.max_difference.toExponential(1)}).`),
  );
}

async function update(withMisreadings) {
  const v = values();
  for (const name of NAMES) if ($(`${name}-shown`)) $(`${name}-shown`).textContent = v[name];
  const mine = ++asked;
  try {
    const ex = await api("/explain", {...v, misreadings: withMisreadings});
    if (mine !== asked) return;
    draw(ex, v);
    $("status").textContent = "";
    if (withMisreadings) misreadings(ex.misreadings, v);
    else {
      $("misreadings").replaceChildren(el("p", {class: "note"}, "running the layer…"));
      later();
    }
  } catch (e) {
    if (mine === asked) $("status").replaceChildren(el("span", {class: "error"}, e.message));
  }
}

const soon = debounce(() => update(false), 40);
const later = debounce(() => update(true), 600);

async function start() {
  const {cells} = await api("/runs");
  $("cell").replaceChildren(...cells.map((c) => el("option", {value: c}, c)));
  for (const name of NAMES) $(name).addEventListener("input", soon);
  nav("").catch(() => {});
  await update(false);
}

start();
