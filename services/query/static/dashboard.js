// The saga dashboard: polls the query service's read API (and its analytics proxy) every
// poll_ms and re-renders only the parts whose HTML changed, so nothing flickers. The selected
// order lives in the URL (#order=<id>), so a view can be linked and survives a reload.
// Every call carries the operator's bearer token: taken from #token=<jwt> once (then removed
// from the URL) or typed into the prompt shown when the API refuses; kept in memory only.
import * as charts from "./charts.js";

const { esc, money, duration } = charts;
const API = "/api/v1";
const ORDER_ID = /^[0-9a-fA-F-]{36}$/;
const STATUS = {
  PENDING: ["◷", "Pending"],
  COMPLETED: ["✓", "Completed"],
  REJECTED: ["⊘", "Rejected"],
  CANCELLED: ["↩", "Cancelled"],
};
// Events that undo an earlier step; and events that report a step failing.
const COMPENSATIONS = new Set(["StockReleased", "PaymentRefunded", "ShipmentCancelled", "OrderCancelled"]);
const FAILURES = new Set(["StockRejected", "PaymentDeclined", "ShipmentFailed", "OrderRejected"]);
const WINDOW_LIMIT = { minute: 30, hour: 24 };
// A breaker's state as a symbol and words (never colour alone).
const BREAKER = {
  closed: ["●", "closed: calls go through"],
  "half-open": ["◐", "half-open: probing"],
  open: ["○", "open: calls fail fast, partitions paused"],
};

const state = {
  config: { trace_url_template: "", poll_ms: 2000 },
  window: "minute",
  selected: null,
  timer: null,
  running: false,
  refreshes: 0,
  token: null,
};

const el = (id) => document.querySelector(`[data-testid="${id}"]`);

// Replaces an element's content only when the markup differs from what it last got.
function put(node, html) {
  if (node._html === html) return;
  node.innerHTML = html;
  node._html = html;
}

function note(node, text, warn = false) {
  node.hidden = !text;
  node.textContent = text || "";
  node.classList.toggle("warn", warn);
}

async function get(path) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 8000);
  try {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const r = await fetch(path, { signal: abort.signal, headers });
    let body = null;
    try { body = await r.json(); } catch { /* not JSON: keep null */ }
    if (r.status === 401 || r.status === 403) askForToken(body && body.detail);
    return { ok: r.ok, status: r.status, body, reached: true };
  } catch (e) {
    return { ok: false, status: 0, body: null, reached: false, error: String(e) };
  } finally {
    clearTimeout(timer);
  }
}

// --- the token ---------------------------------------------------------------------------------

function tokenFromHash() {
  const m = /^#token=([A-Za-z0-9._-]+)$/.exec(location.hash);
  if (!m) return null;
  // Out of the address bar and history: a copied link must not carry it.
  history.replaceState(null, "", location.pathname + location.search);
  return m[1];
}

function askForToken(detail) {
  const form = el("token-form");
  if (!form.hidden) return;
  form.hidden = false;
  note(el("token-why"), state.token ? `The token was refused: ${detail || "not valid"}` : "The API needs an operator token.", true);
  el("token-input").focus();
}

function onToken(event) {
  event.preventDefault();
  const value = el("token-input").value.trim();
  if (!value) return;
  state.token = value;
  el("token-input").value = "";
  el("token-form").hidden = true;
  loop();
}

function why(res) {
  if (!res.reached) return "no answer";
  const d = res.body && res.body.detail;
  if (typeof d === "string") return d;
  return `HTTP ${res.status}`;
}

const timeFmt = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const msFmt = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false,
});
const dateFmt = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

function when(iso) {
  return iso ? `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(timeFmt.format(new Date(iso)))}</time>` : "–";
}

function statusBadge(status) {
  const [sym, word] = STATUS[status] || ["•", status];
  return `<span class="status s-${esc(status)}" data-testid="status" data-status="${esc(status)}"><span aria-hidden="true">${sym}</span> ${esc(word)}</span>`;
}

const stuckBadge = '<span class="status s-STUCK" data-testid="stuck-badge"><span aria-hidden="true">⚠</span> Stuck</span>';

function shortId(id) {
  return `<a href="#order=${esc(id)}" class="mono" title="${esc(id)}">${esc(id.slice(0, 8))}</a>`;
}

function rowAttrs(id) {
  const sel = id === state.selected ? ' class="selected" aria-current="true"' : "";
  return `data-order-id="${esc(id)}"${sel}`;
}

// --- counts -----------------------------------------------------------------------------------

function renderCounts(res) {
  const keys = [["PENDING", "count-PENDING"], ["COMPLETED", "count-COMPLETED"], ["REJECTED", "count-REJECTED"], ["CANCELLED", "count-CANCELLED"]];
  const body = res.ok ? res.body : null;
  const set = (id, v) => {
    const cell = el(id).querySelector('[data-testid="count-value"]');
    const text = v === null || v === undefined ? "–" : String(v);
    if (cell.textContent !== text) cell.textContent = text;
  };
  for (const [status, id] of keys) set(id, body ? (body.by_status || {})[status] ?? 0 : null);
  set("count-stuck", body ? body.stuck : null);
  set("count-total", body ? body.total : null);
  el("count-stuck").classList.toggle("nonzero", Boolean(body && body.stuck));
  note(el("counts-status"), body ? "" : `Counts unavailable: ${why(res)}.`, true);
}

// --- order lists ------------------------------------------------------------------------------

function newestFirst(items) {
  // The API sorts when it can (newest_first); sorting here too keeps an older server usable.
  return [...items].sort((a, b) => (b.created_at.localeCompare(a.created_at)) || b.order_id.localeCompare(a.order_id));
}

function renderRecent(res) {
  if (!res.ok) {
    note(el("recent-status"), `Orders unavailable: ${why(res)}.`, true);
    return;
  }
  note(el("recent-status"), "");
  const items = newestFirst(res.body.items || []).slice(0, 20);
  if (!items.length) {
    put(el("recent-table"), '<p class="empty-row">No orders yet.</p>');
    return;
  }
  const rows = items.map((o) => `<tr data-testid="order-row" ${rowAttrs(o.order_id)} data-status="${esc(o.status)}">`
    + `<td>${shortId(o.order_id)}</td>`
    + `<td>${statusBadge(o.status)}${o.stuck ? ` ${stuckBadge}` : ""}</td>`
    + `<td class="num">${money(o.total_cents)}</td>`
    + `<td>${when(o.created_at)}</td>`
    + `<td class="clip" title="${esc(o.reason || "")}">${o.failed_step ? `<span class="muted">${esc(o.failed_step)}:</span> ` : ""}${esc(o.reason || "")}</td>`
    + "</tr>");
  put(el("recent-table"), '<table><caption class="sr-only">Recent orders, newest first</caption><thead><tr>'
    + '<th scope="col">Order</th><th scope="col">Status</th><th scope="col" class="num">Total</th>'
    + '<th scope="col">Placed</th><th scope="col">Reason</th>'
    + `</tr></thead><tbody>${rows.join("")}</tbody></table>`);
}

function ago(iso, now) {
  return iso ? duration(now - Date.parse(iso)) : "–";
}

function renderStuck(res) {
  if (!res.ok) {
    note(el("stuck-status"), `Stuck orders unavailable: ${why(res)}.`, true);
    return;
  }
  const all = res.body.items || [];
  // Only orders the server marks stuck: a server without stuck detection ignores ?stuck=true.
  const items = all.filter((o) => o.stuck);
  const supported = !all.length || all.some((o) => "stuck" in o);
  note(el("stuck-status"), supported ? "" : "Stuck-saga detection is not available on this server.");
  if (!items.length) {
    put(el("stuck-table"), '<p class="empty-row" data-testid="no-stuck">No stuck orders.</p>');
    return;
  }
  const now = Date.now();
  const rows = items.map((o) => `<tr data-testid="stuck-row" ${rowAttrs(o.order_id)} data-waiting-on="${esc(o.stuck.waiting_on)}">`
    + `<td>${shortId(o.order_id)}</td>`
    + `<td><strong>${esc(o.stuck.waiting_on)}</strong></td>`
    + `<td>${when(o.stuck.waiting_since)} <span class="muted">(${ago(o.stuck.waiting_since, now)} ago)</span></td>`
    + `<td>${when(o.stuck.deadline_at)}</td>`
    + `<td>${statusBadge(o.status)}</td>`
    + "</tr>");
  put(el("stuck-table"), '<table><caption class="sr-only">Stuck orders</caption><thead><tr>'
    + '<th scope="col">Order</th><th scope="col">Waiting on</th><th scope="col">Since</th>'
    + '<th scope="col">Deadline</th><th scope="col">Status</th>'
    + `</tr></thead><tbody>${rows.join("")}</tbody></table>`);
}

// --- analytics --------------------------------------------------------------------------------

const CHARTS = [
  ["chart-outcomes", charts.outcomes],
  ["chart-revenue", charts.revenue],
  ["chart-duration", charts.durations],
  ["chart-failures", charts.failures],
];

function renderAnalytics(res) {
  if (res.ok && res.body && res.body.window !== state.window) return; // the user switched meanwhile
  const ok = res.ok && res.body && Array.isArray(res.body.windows);
  el("analytics").dataset.state = ok ? "ok" : "unavailable";
  document.querySelector(".charts").hidden = !ok; // the note says why; empty frames add nothing
  note(el("analytics-status"), ok ? "" : `Analytics unavailable: ${why(res).replace(/^analytics unavailable: /, "")}.`, true);
  const data = ok ? charts.contiguous(res.body, WINDOW_LIMIT[res.body.window] || 30, Date.now()) : null;
  for (const [id, draw] of CHARTS) {
    put(el(id).querySelector(".chart-body"), ok ? draw(data) : '<p class="empty">Analytics unavailable.</p>');
  }
}

// --- external systems' breakers ----------------------------------------------------------------

function breakerItem(service, dependency, st) {
  const [icon, label] = BREAKER[st] || ["?", st];
  return `<li class="breaker b-${esc(st)}" data-testid="breaker" data-state="${esc(st)}">`
    + `<span class="breaker-name">${esc(service)} → ${esc(dependency)}</span> `
    + `<span class="breaker-state"><span aria-hidden="true">${icon}</span> ${esc(label)}</span></li>`;
}

function renderBreakers(res) {
  const ok = res.ok && res.body && Array.isArray(res.body.services);
  note(el("breakers-status"), ok ? "" : `Breaker states unavailable: ${why(res)}.`, !ok);
  const items = [];
  for (const s of ok ? res.body.services : []) {
    const deps = Object.entries(s.dependencies || {});
    if (!s.reached) {
      items.push(`<li class="breaker b-unknown" data-testid="breaker" data-state="unknown">`
        + `<span class="breaker-name">${esc(s.service)}</span> <span class="muted">does not answer</span></li>`);
    } else if (!deps.length) {
      items.push(`<li class="breaker b-none" data-testid="breaker" data-state="none">`
        + `<span class="breaker-name">${esc(s.service)}</span> <span class="muted">calls no external system</span></li>`);
    }
    for (const [dep, st] of s.reached ? deps : []) items.push(breakerItem(s.service, dep, st));
  }
  put(el("breakers-list"), items.join(""));
}

// --- one order --------------------------------------------------------------------------------

function kind(type) {
  if (COMPENSATIONS.has(type)) return ["compensation", "↩ compensation"];
  if (FAILURES.has(type)) return ["failure", "✗ failed"];
  if (type === "OrderCompleted") return ["terminal-ok", "✓ done"];
  if (type === "OrderStuck") return ["stuck", "⚠ stuck"];
  return ["step", ""];
}

function traceLinks(events) {
  const ids = [...new Set(events.map((e) => e.trace_id).filter(Boolean))];
  if (!ids.length) return '<span class="muted">none recorded (tracing off)</span>';
  const tpl = state.config.trace_url_template;
  return ids.map((id) => (tpl
    ? `<a data-testid="trace-link" data-trace-id="${esc(id)}" href="${esc(tpl.replaceAll("{trace_id}", encodeURIComponent(id)))}" target="_blank" rel="noopener noreferrer" class="mono">${esc(id)}</a>`
    : `<code data-testid="trace-id">${esc(id)}</code>`)).join("<br>");
}

function renderOrder(id, orderRes, timelineRes) {
  const body = el("order-body");
  if (!id) {
    put(body, '<p class="muted">Pick an order to see its saga step by step.</p>');
    return;
  }
  if (!orderRes.ok && orderRes.status !== 404) {
    put(body, `<p class="note warn">Order ${esc(id)} unavailable: ${esc(why(orderRes))}.</p>`);
    return;
  }
  const o = orderRes.ok ? orderRes.body : null;
  const events = timelineRes.ok ? timelineRes.body.events : [];
  const rows = [];
  const dd = (k, v, testid) => rows.push(`<dt>${k}</dt><dd${testid ? ` data-testid="${testid}"` : ""}>${v}</dd>`);
  dd("Order", `<code class="order-id">${esc(id)}</code>`, "order-id");
  if (o) {
    dd("Status", statusBadge(o.status) + (o.stuck ? ` ${stuckBadge}` : ""), "order-status");
    if (o.stuck) {
      dd("Waiting on", `<strong>${esc(o.stuck.waiting_on)}</strong> since ${when(o.stuck.waiting_since)} (${ago(o.stuck.waiting_since, Date.now())} ago)`, "order-waiting-on");
    }
    if (o.reason) dd("Reason", `${esc(o.reason)}${o.failed_step ? ` <span class="muted">(step: ${esc(o.failed_step)})</span>` : ""}`, "order-reason");
    dd("Customer", esc(o.customer_id || "–"));
    dd("Total", money(o.total_cents));
    dd("Placed", `<time datetime="${esc(o.created_at)}">${esc(dateFmt.format(new Date(o.created_at)))}</time>`);
    if (o.terminal_at) dd("Ended", `${when(o.terminal_at)} <span class="muted">after ${duration(Date.parse(o.terminal_at) - Date.parse(o.created_at))}</span>`);
  } else {
    dd("Status", '<span class="muted">not known yet</span>', "order-status");
  }
  dd("Trace", `<span class="trace">${traceLinks(events)}</span>`);
  let steps;
  if (!events.length) {
    steps = '<p class="muted" data-testid="timeline-empty">No events of this order yet.</p>';
  } else {
    const t0 = Date.parse(events[0].occurred_at);
    const items = events.map((e) => {
      const [k, tag] = kind(e.event_type);
      const at = new Date(e.occurred_at);
      const delta = Date.parse(e.occurred_at) - t0;
      return `<li class="step k-${k}" data-testid="timeline-step" data-event-type="${esc(e.event_type)}" data-service="${esc(e.service)}" data-event-id="${esc(e.event_id)}" data-occurred-at="${esc(e.occurred_at)}" data-kind="${k}">`
        + `<span class="what">${esc(e.event_type)}${tag ? `<span class="tag">${tag}</span>` : ""}</span>`
        + `<span class="when"><time datetime="${esc(e.occurred_at)}" title="${esc(e.occurred_at)}">${esc(msFmt.format(at))}</time>`
        + `<span class="delta" data-testid="step-delta">${delta === 0 ? "start" : `${delta > 0 ? "+" : ""}${duration(delta)}`}</span></span>`
        + `<span class="svc">by <strong data-testid="step-service">${esc(e.service)}</strong></span>`
        + "</li>";
    });
    steps = `<ol class="steps" data-testid="timeline" aria-label="Events of the order, causes before effects">${items.join("")}</ol>`;
  }
  put(body, `<dl class="summary">${rows.join("")}</dl>`
    + `<h3>Timeline <span class="muted">(${events.length} events, causes before effects)</span></h3>${steps}`);
}

// --- the loop ---------------------------------------------------------------------------------

function selectedFromHash() {
  const m = /^#order=(.+)$/.exec(location.hash);
  const id = m ? decodeURIComponent(m[1]) : null;
  return id && ORDER_ID.test(id) ? id.toLowerCase() : null;
}

async function refreshOrder() {
  const id = state.selected;
  if (!id) {
    renderOrder(null);
    return;
  }
  const [order, timeline] = await Promise.all([
    get(`${API}/orders/${encodeURIComponent(id)}`),
    get(`${API}/orders/${encodeURIComponent(id)}/timeline`),
  ]);
  if (id === state.selected) renderOrder(id, order, timeline); // not if the user moved on
}

async function refreshAnalytics() {
  const w = state.window;
  renderAnalytics(await get(`${API}/analytics?window=${w}&limit=${WINDOW_LIMIT[w]}`));
}

async function refresh() {
  const [stats, recent, stuck, breakers] = await Promise.all([
    get(`${API}/stats`),
    get(`${API}/orders?newest_first=true&limit=20`),
    get(`${API}/orders?stuck=true&limit=50`),
    get(`${API}/dependencies`),
    refreshAnalytics(),
    refreshOrder(),
  ]);
  renderBreakers(breakers);
  renderCounts(stats);
  renderRecent(recent);
  renderStuck(stuck);
  const live = el("live-status");
  const reached = [stats, recent, stuck].some((r) => r.reached);
  if (live.classList.contains("offline") === reached && state.refreshes > 0) {
    el("live-announce").textContent = reached ? "Connection restored." : "Connection lost; retrying.";
  }
  live.classList.toggle("offline", !reached);
  live.textContent = reached
    ? `● live · updated ${timeFmt.format(new Date())}`
    : "offline: the query service does not answer (retrying)";
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
}

// One refresh at a time; the next starts poll_ms after the last one ended, so a slow server
// is never asked twice at once.
async function loop() {
  if (state.running) return;
  state.running = true;
  clearTimeout(state.timer);
  try {
    if (!document.hidden) await refresh();
  } catch (e) {
    console.error("dashboard refresh failed", e);
  } finally {
    state.running = false;
    state.timer = setTimeout(loop, state.config.poll_ms);
  }
}

function markSelected() {
  for (const tr of document.querySelectorAll("tr[data-order-id]")) {
    const on = tr.dataset.orderId === state.selected;
    tr.classList.toggle("selected", on);
    if (on) tr.setAttribute("aria-current", "true"); else tr.removeAttribute("aria-current");
  }
}

function onHash() {
  state.selected = selectedFromHash();
  markSelected();
  refreshOrder();
}

function onRowClick(event) {
  const tr = event.target.closest("tr[data-order-id]");
  if (!tr || event.target.closest("a")) return; // links navigate by themselves
  location.hash = `order=${tr.dataset.orderId}`;
}

async function start() {
  state.token = tokenFromHash();
  el("token-form").addEventListener("submit", onToken);
  const cfg = await get("/dashboard/config");
  if (cfg.ok && cfg.body) state.config = { ...state.config, ...cfg.body };
  state.selected = selectedFromHash();
  window.addEventListener("hashchange", onHash);
  el("recent-table").addEventListener("click", onRowClick);
  el("stuck-table").addEventListener("click", onRowClick);
  const pick = el("analytics-window");
  state.window = pick.value;
  pick.addEventListener("change", () => { state.window = pick.value; refreshAnalytics(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) loop(); });
  loop();
}

start();
