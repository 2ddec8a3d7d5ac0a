// Small inline-SVG charts for the analytics windows. Each returns an HTML string (SVG plus
// an HTML legend), so the page can skip re-rendering when nothing changed (no flicker).
// Every SVG has role="img" and an aria-label that states the latest numbers in words.

const W = 480;
const H = 190;
const M = { l: 46, r: 10, t: 10, b: 24 };
const IW = W - M.l - M.r;
const IH = H - M.t - M.b;

export function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

export function money(cents) {
  return (cents / 100).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  const sign = ms < 0 ? "−" : "";
  const a = Math.abs(ms);
  if (a < 1000) return `${sign}${Math.round(a)} ms`;
  if (a < 60_000) return `${sign}${(a / 1000).toFixed(a < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(a / 60_000);
  const s = Math.round((a % 60_000) / 1000);
  return `${sign}${m} min ${String(s).padStart(2, "0")} s`;
}

const EMPTY = {
  placed: 0, completed: 0, rejected: 0, cancelled: 0, captured_cents: 0, refunded_cents: 0,
  failure_reasons: {}, duration_ms: { count: 0, p50: null, p90: null, p99: null },
};

/** The last n windows up to now, one per slot: analytics lists only windows that have data,
 * and a chart whose bars skip the quiet minutes would misstate the time axis. */
export function contiguous(data, n, nowMs) {
  const size = data.size_s * 1000;
  const byStart = new Map(data.windows.map((w) => [Date.parse(w.start), w]));
  const latest = Math.max(Math.floor(nowMs / size) * size, ...byStart.keys());
  const windows = [];
  for (let i = n - 1; i >= 0; i -= 1) {
    const start = latest - i * size;
    windows.push(byStart.get(start) || {
      ...EMPTY, start: new Date(start).toISOString(), end: new Date(start + size).toISOString(),
    });
  }
  return { ...data, windows };
}

// The smallest 1/2/2.5/5 x 10^n at or above v, so the axis reads in round numbers.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function windowLabel(iso, size) {
  const d = new Date(iso);
  const opts = size >= 3600
    ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false }
    : { hour: "2-digit", minute: "2-digit", hour12: false };
  return d.toLocaleString(undefined, opts);
}

function frame(max, fmt, labels) {
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    const y = M.t + IH - f * IH;
    parts.push(`<line class="grid" x1="${M.l}" x2="${W - M.r}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text x="${M.l - 6}" y="${y + 4}" text-anchor="end">${esc(fmt(max * f))}</text>`);
  }
  const n = labels.length;
  const picks = n <= 1 ? [0] : [0, Math.floor((n - 1) / 2), n - 1];
  for (const i of new Set(picks)) {
    if (i >= n) continue;
    const x = M.l + ((i + 0.5) * IW) / n;
    const anchor = n > 1 && i === 0 ? "start" : n > 1 && i === n - 1 ? "end" : "middle";
    const ax = anchor === "start" ? M.l : anchor === "end" ? W - M.r : x;
    parts.push(`<text x="${ax}" y="${H - 6}" text-anchor="${anchor}">${esc(labels[i])}</text>`);
  }
  return parts.join("");
}

function svg(label, body) {
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(label)}" preserveAspectRatio="xMidYMid meet">${body}</svg>`;
}

function legend(items) {
  const li = items.map(
    ([cls, name, line]) => `<li><span class="swatch ${line ? "line " : ""}${cls}"></span>${esc(name)}</li>`,
  );
  return `<ul class="legend">${li.join("")}</ul>`;
}

function empty(text) {
  return `<p class="empty">${esc(text)}</p>`;
}

const count = (v) => String(Math.round(v));

/** Orders per window: completed, rejected and cancelled stacked; placed as dots on a line. */
export function outcomes(data) {
  const ws = data.windows;
  if (!ws.some((w) => w.placed || w.completed || w.rejected || w.cancelled)) return empty("No orders in these windows.");
  const labels = ws.map((w) => windowLabel(w.start, data.size_s));
  const max = niceMax(Math.max(...ws.map((w) => Math.max(w.placed, w.completed + w.rejected + w.cancelled))));
  const n = ws.length;
  const bw = Math.max(1, (IW / n) * 0.7);
  const y = (v) => M.t + IH - (v / max) * IH;
  const parts = [frame(max, count, labels)];
  ws.forEach((w, i) => {
    const x = M.l + (i * IW) / n + (IW / n - bw) / 2;
    let base = 0;
    for (const [key, cls] of [["completed", "c-completed"], ["rejected", "c-rejected"], ["cancelled", "c-cancelled"]]) {
      const v = w[key];
      if (v > 0) {
        const top = y(base + v);
        parts.push(`<rect class="${cls}" x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${(y(base) - top).toFixed(1)}"><title>${esc(`${labels[i]}: ${v} ${key}`)}</title></rect>`);
      }
      base += v;
    }
  });
  const pts = ws.map((w, i) => [M.l + ((i + 0.5) * IW) / n, y(w.placed)]);
  parts.push(`<path class="series c-placed" d="${pts.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("")}"/>`);
  pts.forEach(([px, py], i) => parts.push(`<circle class="c-placed" cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="2.5"><title>${esc(`${labels[i]}: ${ws[i].placed} placed`)}</title></circle>`));
  const last = ws[n - 1];
  const label = `Orders per window. Latest (${labels[n - 1]}): ${last.placed} placed, ${last.completed} completed, ${last.rejected} rejected, ${last.cancelled} cancelled.`;
  return svg(label, parts.join("")) + legend([
    ["c-placed", "placed", true], ["c-completed", "completed"], ["c-rejected", "rejected"], ["c-cancelled", "cancelled"],
  ]);
}

/** Money per window: captured and refunded side by side. */
export function revenue(data) {
  const ws = data.windows;
  if (!ws.some((w) => w.captured_cents || w.refunded_cents)) return empty("No payments in these windows.");
  const labels = ws.map((w) => windowLabel(w.start, data.size_s));
  const max = niceMax(Math.max(...ws.map((w) => Math.max(w.captured_cents, w.refunded_cents))));
  const n = ws.length;
  const slot = IW / n;
  const bw = Math.max(1, slot * 0.35);
  const y = (v) => M.t + IH - (v / max) * IH;
  const parts = [frame(max, (v) => money(v).replace(/\.00$/, ""), labels)];
  ws.forEach((w, i) => {
    const x0 = M.l + i * slot + slot * 0.15;
    [["captured_cents", "c-captured", "captured"], ["refunded_cents", "c-refunded", "refunded"]].forEach(([key, cls, name], j) => {
      const v = w[key];
      if (v > 0) {
        parts.push(`<rect class="${cls}" x="${(x0 + j * bw).toFixed(1)}" y="${y(v).toFixed(1)}" width="${bw.toFixed(1)}" height="${(M.t + IH - y(v)).toFixed(1)}"><title>${esc(`${labels[i]}: ${money(v)} ${name}`)}</title></rect>`);
      }
    });
  });
  const total = (k) => ws.reduce((s, w) => s + w[k], 0);
  const label = `Revenue over these windows: ${money(total("captured_cents"))} captured, ${money(total("refunded_cents"))} refunded.`;
  return svg(label, parts.join("")) + legend([["c-captured", "captured"], ["c-refunded", "refunded"]]);
}

/** Saga duration percentiles per window, as lines with gaps where a window had no saga. */
export function durations(data) {
  const ws = data.windows;
  const values = ws.flatMap((w) => [w.duration_ms.p50, w.duration_ms.p90, w.duration_ms.p99]).filter((v) => v !== null);
  if (!values.length) return empty("No saga ended in these windows.");
  const labels = ws.map((w) => windowLabel(w.start, data.size_s));
  const max = niceMax(Math.max(...values));
  const n = ws.length;
  const y = (v) => M.t + IH - (v / max) * IH;
  const parts = [frame(max, duration, labels)];
  for (const [key, cls, dashed] of [["p50", "c-p50", false], ["p90", "c-p90", true], ["p99", "c-p99", false]]) {
    let d = "";
    let pen = false;
    ws.forEach((w, i) => {
      const v = w.duration_ms[key];
      if (v === null) { pen = false; return; }
      const px = M.l + ((i + 0.5) * IW) / n;
      d += `${pen ? "L" : "M"}${px.toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      parts.push(`<circle class="${cls}" cx="${px.toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="none" stroke-width="1.5"><title>${esc(`${labels[i]}: ${key} ${duration(v)}`)}</title></circle>`);
    });
    if (d) parts.push(`<path class="series ${cls}${dashed ? " dashed" : ""}" d="${d}"/>`);
  }
  const latest = [...ws].reverse().find((w) => w.duration_ms.p50 !== null);
  const label = latest
    ? `Saga duration. Latest window with sagas: p50 ${duration(latest.duration_ms.p50)}, p99 ${duration(latest.duration_ms.p99)} over ${latest.duration_ms.count} sagas.`
    : "Saga duration.";
  return svg(label, parts.join("")) + legend([["c-p50", "p50", true], ["c-p90", "p90 (dashed)", true], ["c-p99", "p99", true]]);
}

/** Failure reasons summed over the windows shown, largest first (top 8). */
export function failures(data) {
  const sums = new Map();
  for (const w of data.windows) {
    for (const [reason, n] of Object.entries(w.failure_reasons || {})) sums.set(reason, (sums.get(reason) || 0) + n);
  }
  const rows = [...sums.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 8);
  if (!rows.length) return empty("No failures in these windows.");
  const max = Math.max(...rows.map((r) => r[1]));
  const rh = 22;
  const h = rows.length * rh + 4;
  const labelW = 0.55 * W;
  const parts = rows.map(([reason, n], i) => {
    const yy = i * rh + 2;
    const bw = Math.max(2, ((W - labelW - 40) * n) / max);
    const short = reason.length > 44 ? `${reason.slice(0, 43)}…` : reason;
    return `<text x="${labelW - 6}" y="${yy + 15}" text-anchor="end">${esc(short)}<title>${esc(reason)}</title></text>`
      + `<rect class="c-reason" x="${labelW}" y="${yy + 3}" width="${bw.toFixed(1)}" height="${rh - 8}"><title>${esc(`${reason}: ${n}`)}</title></rect>`
      + `<text x="${(labelW + bw + 4).toFixed(1)}" y="${yy + 15}">${n}</text>`;
  });
  const label = `Failure reasons: ${rows.map(([r, n]) => `${r} ${n}`).join("; ")}.`;
  return `<svg viewBox="0 0 ${W} ${h}" role="img" aria-label="${esc(label)}">${parts.join("")}</svg>`;
}
