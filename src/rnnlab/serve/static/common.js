// What every page shares: the JSON API, element building, numbers written as `rnnlab explain` writes them.

export async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok) throw new Error(data.error || `${response.status}`);
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "text", "line", "path", "g", "title", "polyline"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.setAttribute("class", value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// the same scales as rnnlab.teach.explain_views' _human and _bytes
export function human(n, unit = "") {
  for (const [scale, suffix] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(n) >= 0.9995 * scale) return `${+(n / scale).toPrecision(3)} ${suffix}${unit}`;
  }
  return `${Math.round(n)} ${unit}`.trim();
}

export function bytes(n) {
  for (const [scale, suffix] of [[2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]]) {
    if (n >= scale) return `${+(n / scale).toPrecision(3)} ${suffix}`;
  }
  return `${Math.round(n)} B`;
}

export const count = (n) => n.toLocaleString("en-US");

// Calls `f` once the calls to the returned function have paused for `ms`.
export function debounce(f, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => f(...args), ms);
  };
}

// The navigation bar: the playground, each loaded run, the API.
export async function nav(current) {
  const bar = document.getElementById("nav");
  const {runs} = await api("/runs");
  bar.replaceChildren(
    el("a", {href: "/", class: current === "" ? "here" : ""}, "playground"),
    ...runs.map((r) => el("a", {href: `/run/${encodeURIComponent(r.name)}`,
                                class: current === r.name ? "here" : ""}, r.name)),
    el("a", {href: "/docs"}, "API"),
  );
  return runs;
}
