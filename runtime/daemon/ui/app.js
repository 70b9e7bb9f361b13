// The dynworkers dashboard: plain JavaScript over the control API, no framework, no build step.
//
// Runs in the browser. It reads the routes the CLI reads (GET /_/stats, /_/tenants,
// /_/tenants/<t>/workflows, .../instances/<id>/history, /_/hot-paths), polls them every couple of
// seconds while the tab is visible, and posts the instance operations (pause, resume, terminate,
// restart, events). The control token, when the daemon has one, is kept in this tab's
// sessionStorage and sent as `Authorization: Bearer`, never in a URL; the live log is read with
// fetch() and a streaming reader because EventSource cannot send that header. Every text that
// comes from the daemon (tenant names, log lines, error messages) is put in the page as text,
// never as HTML.
"use strict";

const TOKEN_KEY = "dynworkers.control_token";
const POLL_MS = 2000;
const HOT_POLL_MS = 20000;
const LOG_LINES = 500;
const MAX_MERGED = 20; // tenants listed together under "all tenants"
const FINISHED = ["complete", "errored", "terminated"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  tenants: [],
  open: null, // {tenant, id} of the instance shown
  charts: [],
  log: null, // {tenant, abort}
  polling: false,
  timer: null,
  hotTimer: null,
};

// --- small helpers ------------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const enc = encodeURIComponent;

function when(epoch) {
  if (epoch === null || epoch === undefined) return "";
  const d = new Date(epoch * 1000);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, "data-status": status }, status);
}

function fillSelect(select, values, first) {
  const keep = select.value;
  select.replaceChildren(
    ...(first ? [h("option", { value: "" }, first)] : []),
    ...values.map((v) => h("option", { value: v }, v)),
  );
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

// --- the control API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, kind, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.kind = kind;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  if (state.token) out.Authorization = `Bearer ${state.token}`;
  return out;
}

async function api(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  const data = await answer.json().catch(() => ({}));
  if (answer.status === 401) {
    showLogin(state.token ? "The daemon refused this token." : "");
    throw new ApiError(401, "Unauthorized", "sign in with the control token");
  }
  if (!answer.ok) throw new ApiError(answer.status, data.error, data.message);
  return data;
}

function problem(message) {
  const banner = $("#problem");
  banner.textContent = message || "";
  banner.hidden = !message;
}

// --- signing in ---------------------------------------------------------------------------------

function showLogin(message) {
  stopPolling();
  stopLog();
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function start() {
  try {
    const auth = await api("GET", "/_/ui/auth"); // public: whether this daemon has a token
    if (auth.token_required && !state.token) {
      showLogin("");
      return;
    }
    await api("GET", "/_/tenants"); // a token that is refused shows the form again
  } catch (exc) {
    if (exc.status !== 401) problem(`The control API did not answer: ${exc.message}`);
    return;
  }
  problem("");
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = !state.token;
  $("#where").textContent = location.host;
  await refresh();
  await refreshHotPaths();
  startPolling();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("#token").value = "";
  await start();
});

$("#sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  showLogin("Signed out.");
});

// --- polling ------------------------------------------------------------------------------------

function startPolling() {
  stopPolling();
  state.timer = setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  state.hotTimer = setInterval(() => { if (!document.hidden) refreshHotPaths(); }, HOT_POLL_MS);
}

function stopPolling() {
  clearInterval(state.timer);
  clearInterval(state.hotTimer);
}

async function refresh() {
  if (state.polling) return;
  state.polling = true;
  try {
    const [stats, tenants] = await Promise.all([api("GET", "/_/stats"), api("GET", "/_/tenants")]);
    state.tenants = tenants.tenants;
    renderPool(stats);
    renderTenants(tenants.tenants, stats.tenants || {});
    const names = tenants.tenants.map((t) => t.tenant);
    fillSelect($("#wf-tenant"), names, "all tenants");
    fillSelect($("#hot-tenant"), names, "all tenants");
    fillSelect($("#log-tenant"), names);
    await renderInstances();
    if (state.open) await renderInstance();
    problem("");
    $("#refreshed").textContent = `updated ${when(Date.now() / 1000)}`;
  } catch (exc) {
    if (exc.status !== 401) problem(`Refresh failed: ${exc.message}`);
  } finally {
    state.polling = false;
  }
}

// --- pool and tenants ---------------------------------------------------------------------------

function figure(label, value, title) {
  return h("div", { title }, h("dt", {}, label), h("dd", {}, value));
}

function renderPool(stats) {
  const pool = stats.pool || {};
  const engine = stats.engine || {};
  const boot = stats.boot_latency_ms || {};
  $("#pool").replaceChildren(
    figure("sandboxes", `${pool.size ?? 0} / ${pool.max_sandboxes ?? "?"}`, "live tenant sandboxes / max_sandboxes"),
    figure("spares", pool.spares ?? 0, "blank sandboxes forked ahead of need"),
    figure("booting", pool.booting ?? 0),
    figure("cold starts", stats.cold ?? 0),
    figure("warm calls", stats.warm ?? 0),
    figure("boot p50", boot.p50 !== undefined ? `${boot.p50.toFixed(2)} ms` : "-"),
    figure("in flight", (stats.daemon || {}).in_flight ?? 0, "front-door requests being served"),
    figure("workflows running", engine.running ?? 0),
    figure("hibernating", engine.hibernating ?? 0, "instances waiting with no process"),
  );
  const evictions = Object.entries(stats.evictions || {});
  $("#evictions").replaceChildren(...evictions.map(([reason, n]) => figure(reason, n)));
}

function renderTenants(tenants, live) {
  const rows = tenants.map((t) => {
    const pool = live[t.tenant] || {};
    return h("tr", { "data-tenant": t.tenant },
      h("td", {}, t.tenant, t.compiles === false ? h("span", { class: "error" }, " (does not compile)") : null),
      h("td", { class: "mono", title: `${t.main_module} (${(t.modules || []).join(", ")}) from ${t.source || "?"}` }, t.version),
      h("td", {}, when(t.deployed_at)),
      h("td", { class: "num" }, pool.sandboxes ?? 0),
      h("td", { class: "num" }, pool.busy ?? 0),
      h("td", { class: "num" }, pool.memory_bytes ? bytes(pool.memory_bytes) : "-"),
    );
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No tenant is deployed.")));
  $("#tenants tbody").replaceChildren(...rows);
}

// --- workflow instances -------------------------------------------------------------------------

async function renderInstances() {
  const chosen = $("#wf-tenant").value;
  const status = $("#wf-status").value;
  let tenants = chosen ? [chosen] : state.tenants.map((t) => t.tenant);
  const many = !chosen && tenants.length > MAX_MERGED;
  if (many) tenants = tenants.slice(0, MAX_MERGED); // one request per tenant: pick one to see all
  $("#instances-more").hidden = !many;
  $("#instances-more").textContent = many ? `Showing the first ${MAX_MERGED} of ${state.tenants.length} tenants: pick a tenant to see its instances.` : "";
  const query = status ? `?status=${enc(status)}&limit=200` : "?limit=200";
  const lists = await Promise.all(tenants.map((t) =>
    api("GET", `/_/tenants/${enc(t)}/workflows${query}`).catch(() => ({ tenant: t, instances: [] }))));
  const rows = [];
  for (const list of lists) for (const i of list.instances) rows.push({ tenant: list.tenant, ...i });
  rows.sort((a, b) => b.updated - a.updated);
  $("#instances tbody").replaceChildren(...rows.map((i) => {
    const open = state.open && state.open.tenant === i.tenant && state.open.id === i.id;
    return h("tr", {
      class: open ? "open" : null,
      "data-instance": i.id,
      "data-tenant": i.tenant,
      onclick: () => openInstance(i.tenant, i.id, i.waiting_for),
    },
    h("td", { class: "mono", title: i.id }, i.id.length > 16 ? `${i.id.slice(0, 12)}…` : i.id),
    h("td", {}, i.tenant),
    h("td", {}, statusBadge(i.status), i.waiting_for ? h("span", { class: "muted" }, ` for ${i.waiting_for}`) : null),
    h("td", {}, when(i.updated)));
  }));
  $("#instances-empty").hidden = rows.length > 0;
  if (state.open) {
    const mine = rows.find((r) => r.tenant === state.open.tenant && r.id === state.open.id);
    if (mine) state.open.waitingFor = mine.waiting_for;
  }
}

async function openInstance(tenant, id, waitingFor) {
  state.open = { tenant, id, waitingFor };
  for (const row of document.querySelectorAll("#instances tbody tr")) {
    row.classList.toggle("open", row.dataset.tenant === tenant && row.dataset.instance === id);
  }
  // built once per instance, so that a refresh never rebuilds a form the user is typing in
  $("#instance").replaceChildren(
    h("header", {}, h("h3", { class: "mono" }, id), h("span", { id: "instance-status" }), h("span", { id: "instance-about", class: "muted" })),
    ...controls(),
    h("div", { id: "instance-body" }, h("p", { class: "muted" }, "Loading…")),
  );
  await renderInstance();
}

async function operate(operation, body) {
  const { tenant, id } = state.open;
  const base = `/_/tenants/${enc(tenant)}/workflows/${enc(id)}`;
  try {
    if (operation === "event") await api("POST", `${base}/events`, body);
    else await api("POST", `${base}/${operation}`, body || {});
    problem("");
  } catch (exc) {
    problem(`${operation} ${id}: ${exc.message}`);
  }
  await renderInstance();
  await renderInstances();
}

function controls() {
  const button = (label, op, cls, confirmText) => h("button", {
    type: "button",
    class: cls,
    "data-op": op,
    onclick: () => { if (!confirmText || confirm(confirmText)) operate(op); },
  }, label);
  const form = h("form", { class: "event-form", id: "event-form" },
    h("input", { name: "type", placeholder: "event type", required: true, "aria-label": "event type" }),
    h("input", { name: "payload", placeholder: "payload (JSON, optional)", "aria-label": "event payload" }),
    h("button", { type: "submit", class: "primary", "data-op": "event" }, "Send event"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const type = form.elements.type.value.trim();
    const raw = form.elements.payload.value.trim();
    let payload = null;
    if (raw) {
      try { payload = JSON.parse(raw); } catch (exc) {
        problem(`The payload is not JSON: ${exc.message}`);
        return;
      }
    }
    operate("event", { type, payload });
  });
  return [
    h("div", { class: "actions", id: "instance-actions" },
      button("Pause", "pause"),
      button("Resume", "resume"),
      button("Terminate", "terminate", "danger", `Terminate ${state.open.id}?`),
      button("Restart", "restart", null, `Restart ${state.open.id} from the beginning?`)),
    form,
  ];
}

function updateControls(status, waitingFor) {
  const finished = FINISHED.includes(status);
  const enabled = {
    pause: !finished && status !== "paused" && status !== "waitingForPause",
    resume: status === "paused" || status === "waitingForPause",
    terminate: !finished,
    restart: true,
    event: !finished,
  };
  for (const b of document.querySelectorAll("#instance [data-op]")) b.disabled = !enabled[b.dataset.op];
  const type = $("#event-form").elements.type;
  if (waitingFor && !type.value && document.activeElement !== type) type.value = waitingFor;
}

async function renderInstance() {
  const { tenant, id } = state.open;
  const base = `/_/tenants/${enc(tenant)}`;
  let view, status;
  try {
    [view, status] = await Promise.all([
      api("GET", `${base}/instances/${enc(id)}/history`),
      api("GET", `${base}/workflows/${enc(id)}`),
    ]);
  } catch (exc) {
    if (state.open && state.open.id === id) $("#instance-body").replaceChildren(h("p", { class: "error" }, `${id}: ${exc.message}`));
    return;
  }
  if (!state.open || state.open.id !== id || state.open.tenant !== tenant) return; // moved on
  $("#instance-status").replaceChildren(statusBadge(status.status));
  $("#instance-about").textContent = `${tenant} · workflow ${view.workflow} · created ${when(view.created)} · updated ${when(view.updated)}`;
  updateControls(status.status, state.open.waitingFor || pendingWait(view));
  const parts = [timeline(view)];
  const errors = errorList(view, status);
  if (errors.length) parts.push(h("h3", {}, "Errors"), h("ul", { class: "errors" }, ...errors));
  if (status.output !== null && status.output !== undefined) {
    parts.push(h("h3", {}, "Output"), h("pre", { class: "output" }, JSON.stringify(status.output, null, 2)));
  }
  parts.push(h("h3", {}, "Timeline"), eventTable(view));
  $("#instance-body").replaceChildren(...parts);
}

// The event type of a wait that no event or timeout has answered yet.
function pendingWait(view) {
  const answered = new Set(view.timeline.filter((e) => e.kind === "event" || e.kind === "timeout").map((e) => `${e.name}#${e.count}`));
  const waits = view.timeline.filter((e) => e.kind === "wait" && !answered.has(`${e.name}#${e.count}`));
  return waits.length ? waits[waits.length - 1].type : "";
}

function errorList(view, status) {
  const items = [];
  for (const step of view.steps) {
    for (const a of step.attempts) {
      if (!a.error) continue;
      items.push(h("li", {}, h("b", {}, `${step.name}#${step.count} attempt ${a.attempt} (${a.outcome}): `), `${a.error.name}: ${a.error.message}`));
    }
  }
  if (status.error) {
    const e = status.error;
    const text = typeof e === "object" ? `${e.name || e.kind || "error"}: ${e.message || JSON.stringify(e)}` : String(e);
    items.push(h("li", {}, h("b", {}, "instance: "), text));
  }
  return items;
}

// --- the timeline: steps and attempts as bars on the instance's time axis ---------------------

function lanes(view) {
  const now = Date.now() / 1000;
  const finished = FINISHED.includes(view.status);
  const byKey = new Map(view.timeline.map((e) => [`${e.kind}:${e.name}#${e.count}`, e]));
  const out = [];
  for (const step of view.steps) {
    const key = `${step.name}#${step.count}`;
    const bars = [];
    for (const a of step.attempts) {
      const start = a.start ?? a.end;
      bars.push({ start, end: a.end, cls: a.outcome, title: `attempt ${a.attempt}: ${a.outcome}${a.duration_ms !== null ? `, ${a.duration_ms} ms` : ""}${a.error ? ` — ${a.error.name}: ${a.error.message}` : ""}` });
    }
    if (step.kind === "sleep" || step.kind === "wait") {
      // a sleep is over at its `until` (its step record may still say pending); a wait when its
      // event or timeout came, or when the instance ended
      const began = byKey.get(`${step.kind}:${key}`);
      const answer = byKey.get(`event:${key}`) || byKey.get(`timeout:${key}`);
      if (began) {
        let end = answer ? answer.at : finished ? view.updated : now;
        if (step.kind === "sleep") end = Math.min(began.until ?? end, finished ? view.updated : now);
        const ongoing = !finished && !answer && (step.kind === "wait" || (began.until ?? 0) > now);
        const what = step.kind === "sleep" ? `sleep until ${when(began.until)}` : `wait for "${began.type}"`;
        bars.push({ start: began.at, end: Math.max(end, began.at), cls: `${step.kind}${ongoing ? " ongoing" : ""}`, title: `${what}${ongoing ? " (still waiting)" : ""}` });
      }
    }
    if (step.kind === "child") {
      const started = byKey.get(`child:${key}`);
      if (started) bars.push({ start: started.at, end: started.at, cls: "complete", title: `child ${started.child}` });
    }
    out.push({ label: `${step.name}${step.count > 1 ? `#${step.count}` : ""}`, kind: step.kind, bars });
  }
  return out;
}

function timeline(view) {
  const rows = lanes(view);
  const now = Date.now() / 1000;
  const finished = FINISHED.includes(view.status);
  let lo = view.created;
  let hi = finished ? view.updated : now;
  for (const row of rows) for (const b of row.bars) { lo = Math.min(lo, b.start); hi = Math.max(hi, b.end); }
  const span = Math.max(hi - lo, 0.001);
  const pct = (t) => `${(((t - lo) / span) * 100).toFixed(3)}%`;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: `left:${f * 100}%` }, f === 0 ? when(lo) : `+${duration(f * span)}`));
  const box = h("div", { class: "timeline" }, h("div", { class: "axis" }, ...ticks));
  if (!rows.length) box.append(h("p", { class: "muted" }, "No step has been recorded yet."));
  for (const row of rows) {
    const track = h("div", { class: "track" });
    for (const b of row.bars) {
      const bar = h("div", { class: `bar ${b.cls}`, title: b.title });
      bar.style.left = pct(b.start);
      bar.style.width = `${Math.max(((b.end - b.start) / span) * 100, 0)}%`;
      track.append(bar);
    }
    box.append(h("div", { class: "lane", "data-step": row.label }, h("div", { class: "name", title: `${row.kind} ${row.label}` }, row.label, h("span", { class: "muted" }, ` ${row.kind}`)), track));
  }
  const key = (cls, label) => h("span", {}, h("i", { class: `bar ${cls}`, style: "position:static;display:inline-block" }), label);
  box.append(h("div", { class: "legend" }, key("complete", "complete"), key("retry", "failed, retried"), key("failed", "failed"), key("lost", "lost"), key("sleep", "sleep"), key("wait", "wait for event")));
  return box;
}

function eventTable(view) {
  const skip = new Set(["name", "count", "kind", "at"]);
  const rows = view.timeline.map((e) => {
    const detail = Object.entries(e).filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${k === "until" ? when(v) : typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    return h("tr", { "data-kind": e.kind }, h("td", {}, when(e.at)), h("td", {}, e.kind), h("td", { class: "mono" }, e.name ? `${e.name}#${e.count}` : ""), h("td", {}, detail));
  });
  return h("table", { class: "events" }, h("tbody", {}, ...rows));
}

// --- hot paths ----------------------------------------------------------------------------------

const CHARTS = [
  { title: "Wake-ups", unit: "per minute", series: [["wake.cold", "cold", "#c93b3b", "count"], ["wake.warm", "warm", "#2e9e5b", "count"]] },
  { title: "Boot latency", unit: "ms, mean per minute", recent: "boot_ms", series: [["boot_ms", "boot", "#2f5fd0", "mean"]] },
  { title: "Due to running", unit: "ms, mean per minute", recent: "due_to_running_ms", series: [["due_to_running_ms", "due → running", "#7b61c9", "mean"]] },
  { title: "Evictions", unit: "per minute, by reason", evictions: true, series: [] },
];
const EVICTION_COLOURS = ["#d08a1f", "#c93b3b", "#2f5fd0", "#2e9e5b", "#7b61c9", "#555", "#1aa3a3"];

async function refreshHotPaths() {
  const minutes = $("#hot-minutes").value;
  const tenant = $("#hot-tenant").value;
  let data;
  try {
    data = await api("GET", `/_/hot-paths?minutes=${enc(minutes)}${tenant ? `&tenant=${enc(tenant)}` : ""}`);
  } catch (exc) {
    if (exc.status !== 401) problem(`Hot paths: ${exc.message}`);
    return;
  }
  const first = data.since_minute;
  const last = Math.floor(data.now / 60);
  const xs = [];
  for (let m = first; m <= last; m += 1) xs.push(m * 60);
  const sums = new Map(); // name -> [counts[], totals[]]
  for (const row of data.rows) {
    if (!sums.has(row.name)) sums.set(row.name, [new Array(xs.length).fill(0), new Array(xs.length).fill(0)]);
    const i = row.minute - first;
    if (i < 0 || i >= xs.length) continue;
    sums.get(row.name)[0][i] += row.count;
    sums.get(row.name)[1][i] += row.total;
  }
  const values = (name, how) => {
    const cell = sums.get(name);
    if (!cell) return xs.map(() => (how === "count" ? 0 : null));
    return how === "count" ? cell[0] : cell[0].map((c, i) => (c ? cell[1][i] / c : null));
  };
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
  const box = $("#charts");
  box.replaceChildren();
  for (const spec of CHARTS) {
    let series = spec.series;
    if (spec.evictions) {
      series = [...sums.keys()].filter((n) => n.startsWith("evict.")).sort()
        .map((n, i) => [n, n.slice(6), EVICTION_COLOURS[i % EVICTION_COLOURS.length], "count"]);
    }
    const recent = spec.recent && data.recent[spec.recent];
    const note = recent ? `${spec.unit} · last samples: p50 ${recent.p50.toFixed(2)} ms, p99 ${recent.p99.toFixed(2)} ms` : spec.unit;
    const holder = h("div", { class: "chart", "data-chart": spec.title }, h("h3", {}, spec.title), h("div", { class: "note" }, note));
    box.append(holder);
    if (!series.length) {
      holder.append(h("p", { class: "muted" }, "None in this period."));
      continue;
    }
    const opts = {
      width: Math.max(holder.clientWidth, 300),
      height: 180,
      // a mean is null in a minute with no sample: points show the lone minutes a line cannot
      series: [{}, ...series.map(([, label, stroke, how]) => ({ label, stroke, width: 2, points: { show: how === "mean", size: 6, fill: stroke }, spanGaps: false }))],
      axes: [{}, { size: 50 }],
      scales: { x: { time: true } },
      legend: { live: true },
    };
    if (typeof uPlot === "function") {
      state.charts.push(new uPlot(opts, [xs, ...series.map(([name, , , how]) => values(name, how))], holder));
    }
  }
}

window.addEventListener("resize", () => {
  for (const chart of state.charts) chart.setSize({ width: Math.max(chart.root.parentElement.clientWidth, 300), height: 180 });
});

// --- live log: fetch() with a streaming reader, so the token rides in a header -------------------

function stopLog() {
  if (state.log) state.log.abort.abort();
  state.log = null;
  $("#log-toggle").textContent = "Follow";
  $("#log-state").textContent = "";
}

function logLine(line) {
  const pre = $("#log");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  let el;
  if (line.dropped) {
    el = h("div", { class: "note" }, `… ${line.dropped} line(s) dropped: the page fell behind`);
  } else {
    const t = new Date(line.ts * 1000).toLocaleTimeString([], { hour12: false });
    el = h("div", { class: `lvl-${line.level}` }, `${t} ${String(line.level).toUpperCase().padEnd(7)} ${line.message}`);
  }
  pre.append(el);
  while (pre.childElementCount > LOG_LINES) pre.firstElementChild.remove();
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

async function followLog(tenant) {
  stopLog();
  if (!tenant) return;
  const abort = new AbortController();
  state.log = { tenant, abort };
  $("#log").replaceChildren();
  $("#log-toggle").textContent = "Stop";
  $("#log-state").textContent = `following ${tenant}`;
  try {
    const answer = await fetch(`/_/tenants/${enc(tenant)}/logs?follow=1&tail=200`, {
      headers: headers({ Accept: "text/event-stream" }),
      signal: abort.signal,
      cache: "no-store",
    });
    if (!answer.ok) {
      const data = await answer.json().catch(() => ({}));
      throw new ApiError(answer.status, data.error, data.message);
    }
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (data) {
          try { logLine(JSON.parse(data)); } catch { /* a line that is not JSON: skip it */ }
        }
      }
    }
    if (state.log && state.log.abort === abort) $("#log-state").textContent = "the stream ended";
  } catch (exc) {
    if (exc.name === "AbortError") return;
    $("#log-state").textContent = `stopped: ${exc.message}`;
  }
  if (state.log && state.log.abort === abort) {
    state.log = null;
    $("#log-toggle").textContent = "Follow";
  }
}

$("#log-toggle").addEventListener("click", () => {
  if (state.log) stopLog();
  else followLog($("#log-tenant").value);
});
$("#log-tenant").addEventListener("change", () => { if (state.log) followLog($("#log-tenant").value); });
$("#wf-tenant").addEventListener("change", () => renderInstances().catch((e) => problem(e.message)));
$("#wf-status").addEventListener("change", () => renderInstances().catch((e) => problem(e.message)));
$("#hot-tenant").addEventListener("change", refreshHotPaths);
$("#hot-minutes").addEventListener("change", refreshHotPaths);

start();
