// corral's live page: reads GET /api/events (Server-Sent Events) and draws it. No build step,
// no libraries. fetch() rather than EventSource, because EventSource cannot send the API key.
"use strict";

const WINDOW_S = 300; // charts show the last five minutes
const $ = (id) => document.getElementById(id);
const RATE_OVER = 5; // snapshots (seconds) the tokens/s figure is averaged over
const state = { snap: null, tps: [], lat: [], totals: [], requests: [], log: [] };

const mib = (b) => (b / 2 ** 20).toFixed(0) + " MiB";
const secs = (s) => (s == null ? "–" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(1) + " s");
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour12: false });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k === "title" || k === "style") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fact = (label, value) => [el("span", { class: "fact" }, label + " ", el("b", {}, value)), " "];

// -- panels ---------------------------------------------------------------------------------

function drawMemory(snap) {
  const box = $("memory");
  box.replaceChildren();
  for (const [pool, p] of Object.entries(snap.pools)) {
    const bar = el("div", { class: "bar", title: `${pool}: budget ${mib(p.budget)}` });
    for (const r of snap.runners.filter((r) => r.device === pool)) {
      const w = Math.min(100, (100 * r.size) / p.budget);
      bar.append(el("div", { class: "seg", style: `width:${w}%`, title: `${r.name}: estimate ${mib(r.size)}` }));
    }
    if (p.measured) {
      bar.append(el("div", { class: "meas", style: `left:${Math.min(99.5, (100 * p.measured) / p.budget)}%`,
                             title: `measured ${mib(p.measured)}` }));
    }
    box.append(el("div", { class: "pool", "data-pool": pool }, el("div", {}, el("b", {}, pool)), bar,
      el("div", { class: "legend" }, ...fact("estimate", mib(p.reserved)), ...fact("measured", mib(p.measured)),
         ...fact("budget", mib(p.budget)))));
  }
}

function drawModels(snap) {
  const box = $("models");
  if (!snap.runners.length) return box.replaceChildren(el("p", { class: "empty" }, "no model loaded"));
  box.replaceChildren(...snap.runners.map((r) => {
    const slots = el("div", { class: "slots" });
    for (let i = 0; i < r.slots_total; i++) slots.append(el("span", { class: "slot" + (i < r.slots_busy ? " busy" : "") }));
    for (let i = 0; i < r.queued; i++) slots.append(el("span", { class: "slot queued", title: "waiting" }));
    const expires = r.expires_at > 1e11 ? "forever" : r.expires_at ? clock(r.expires_at) : "busy";
    return el("div", { class: "runner", "data-model": r.name, "data-state": r.state, "data-busy": r.slots_busy },
      el("div", { class: "title" }, el("span", { class: "name" }, r.name),
        el("span", { class: `badge state-${r.state}` }, r.state),
        el("span", { class: "dim" }, `${r.device} · ${r.details.parameter_size} ${r.details.quantization_level}`)),
      slots,
      el("div", { class: "facts" }, ...fact("slots", `${r.slots_busy}/${r.slots_total}`), ...fact("queued", r.queued),
        ...fact("threads", r.threads), ...fact("mem", `${mib(r.size)} est · ${mib(r.size_measured)} meas`),
        ...fact("ctx", r.context_length), ...fact("health", r.health), ...fact("until", expires),
        ...(r.restarts ? fact("restarts", r.restarts) : [])));
  }));
}

function drawQueue(snap) {
  const rows = snap.queue.map((q) => el("tr", { "data-model": q.model, "data-position": q.position },
    el("td", {}, q.position || "→"), el("td", {}, q.model), el("td", {}, q.tenant), el("td", {}, q.lane),
    el("td", {}, secs(q.waited_s)), el("td", { class: "eta" }, q.eta_s == null ? "–" : secs(q.eta_s))));
  $("queue").replaceChildren(...rows);
  $("queue-empty").hidden = rows.length > 0;
}

function drawTenants(snap) {
  const lanes = {};
  for (const q of snap.queue) lanes[q.lane] = (lanes[q.lane] || 0) + 1;
  const rows = Object.entries(snap.tenants).map(([name, t]) =>
    el("tr", { "data-tenant": name }, el("td", {}, name), el("td", {}, t.running), el("td", {}, t.waiting)));
  $("tenants").replaceChildren(
    rows.length ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "tenant"), el("th", {}, "running"),
      el("th", {}, "waiting"))), el("tbody", {}, ...rows)) : el("p", { class: "empty" }, "no tenant active"),
    el("div", { class: "legend" }, ...Object.entries(lanes).flatMap(([lane, n]) => fact(`${lane} waiting`, n))));
}

// Plain SVG charts: x is time over the last WINDOW_S seconds, y from 0 to the window's maximum.
function chart(svg, series, now) {
  const W = 300, H = 90, top = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const x = (t) => W - ((now - t) / WINDOW_S) * W, y = (v) => H - 4 - (v / top) * (H - 14);
  const parts = [`<line class="grid" x1="0" x2="${W}" y1="${y(top)}" y2="${y(top)}"/>`,
                 `<line class="grid" x1="0" x2="${W}" y1="${H - 4}" y2="${H - 4}"/>`];
  for (const s of series) {
    if (s.kind === "line" && s.points.length) {
      parts.push(`<polyline class="${s.cls}" points="${s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}"/>`);
    } else {
      for (const p of s.points) parts.push(`<circle class="${s.cls}" r="1.6" cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}"/>`);
    }
  }
  parts.push(`<text x="2" y="${y(top) + 9}">${series[0].fmt(top)}</text>`);
  svg.innerHTML = parts.join("");
}

function drawCharts(now) {
  for (const key of ["tps", "lat"]) state[key] = state[key].filter((p) => p[0] > now - WINDOW_S);
  chart($("tps"), [{ kind: "line", cls: "tps", points: state.tps, fmt: (v) => v.toFixed(0) + " tok/s" }], now);
  chart($("lat"), [
    { kind: "dots", cls: "ttft", points: state.lat.filter((p) => p[2] === "ttft"), fmt: secs },
    { kind: "dots", cls: "itl", points: state.lat.filter((p) => p[2] === "itl") }], now);
  const last = state.tps[state.tps.length - 1];
  $("tps-now").textContent = last ? last[1].toFixed(1) : "";
}

function drawRequests() {
  $("requests").replaceChildren(...state.requests.map((e) => el("tr", { "data-status": e.status },
    el("td", { class: "t" }, clock(e.ts)), el("td", {}, e.model), el("td", {}, e.tenant), el("td", {}, e.lane),
    el("td", { class: e.status >= 400 ? "status-bad" : "" }, e.status === 200 ? e.reason : `${e.status} ${e.reason || ""}`),
    el("td", {}, e.tokens ?? "–"), el("td", {}, secs(e.latency_s)), el("td", {}, secs(e.ttft_s)))));
}

// What the event log says about each event kind it shows (others go to their own panels).
const LOGGED = {
  model_loading: (e) => ["warn", `${e.model} loading on ${e.device} (estimate ${mib(e.estimate)})`],
  model_loaded: (e) => ["good", `${e.model} loaded on ${e.device} in ${secs(e.load_s)} (measured ${mib(e.measured)})`],
  model_unloaded: (e) => [e.reason === "evicted" ? "warn" : "", `${e.model} ${e.reason}${e.detail ? " " + e.detail : ""}`],
  model_crashed: (e) => ["bad", `${e.model} crashed (${e.reason})${e.detail ? ": " + e.detail : ""}`],
  request_refused: (e) => ["bad", `${e.status} for ${e.model} (${e.tenant}, ${e.lane}): ${e.message}`],
  pull_progress: (e) => ["", `pull ${e.model}: ${e.status}${e.total ? ` ${Math.round((100 * e.completed) / e.total)}%` : ""}`],
};

function logEvent(e) {
  const [cls, text] = LOGGED[e.kind](e);
  $("log").prepend(el("li", { "data-kind": e.kind, "data-model": e.model }, el("time", {}, clock(e.ts)),
    el("span", { class: cls }, text)));
  while ($("log").children.length > 200) $("log").lastChild.remove();
}

// -- the stream -----------------------------------------------------------------------------

function onSnapshot(snap) {
  // Tokens/s over the last few seconds: a per-second count of tokens that come in bursts jumps.
  state.totals.push([snap.time, snap.tokens_total]);
  if (state.totals.length > RATE_OVER) state.totals.shift();
  const [t0, n0] = state.totals[0];
  if (snap.time > t0) state.tps.push([snap.time, Math.max(0, snap.tokens_total - n0) / (snap.time - t0)]);
  state.snap = snap;
  drawMemory(snap); drawModels(snap); drawQueue(snap); drawTenants(snap); drawCharts(snap.time);
  $("clock").textContent = clock(snap.time) + (snap.dropped ? ` · ${snap.dropped} events dropped` : "");
}

function onEvent(kind, e) {
  if (kind === "snapshot") return onSnapshot(e);
  if (kind === "request_finished" || kind === "request_refused") {
    state.requests.unshift(e);
    state.requests.length = Math.min(state.requests.length, 30);
    drawRequests();
    if (e.ttft_s != null) state.lat.push([e.ts, e.ttft_s, "ttft"]);
    if (e.itl_s != null) state.lat.push([e.ts, e.itl_s * 10, "itl"]);
  }
  if (LOGGED[kind]) logEvent(e);
}

function setConn(s, text) { $("conn").dataset.state = s; $("conn").textContent = text || s; }

async function connect() {
  const key = localStorage.getItem("corral-key");
  const headers = key ? { Authorization: "Bearer " + key } : {};
  try {
    const r = await fetch("/api/events", { headers, cache: "no-store" });
    if (r.status === 401) { setConn("error", "API key needed"); $("keyform").hidden = false; return; }
    if (!r.ok) throw new Error("HTTP " + r.status);
    setConn("live"); $("keyform").hidden = true;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end); buf = buf.slice(end + 2);
        let kind = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(kind, JSON.parse(data));
      }
    }
  } catch (err) {
    console.warn("event stream:", err);
  }
  setConn("connecting", "reconnecting");
  setTimeout(connect, 2000);
}

$("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem("corral-key", $("key").value.trim());
  setConn("connecting"); connect();
});
connect();
