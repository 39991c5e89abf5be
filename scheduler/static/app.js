// The anypu dashboard: plain DOM, no build step, no external files. Every second it asks
// the scheduler's JSON API (/api/v1/...) for the open tab and redraws it. Values from the
// API are only ever set as text, never parsed as HTML: job names come from users.
"use strict";

const TIERS = ["cloud", "edge", "device"];
const TERM_COLOURS = {
  compute: "#6a8fd0", transfer: "#e0a458", warm: "#8c6bb1", queue: "#d46a6a",
  fragmentation: "#7bb39a",
};
const POLL_MS = 1000;
let current = "overview";
let lastOk = 0;

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const v = seconds * 1e3;
  return v >= 100 ? `${v.toFixed(0)} ms` : v >= 1 ? `${v.toFixed(1)} ms` : `${v.toFixed(2)} ms`;
}

function ago(seconds) {
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

const tierBadge = (tier) => h("span", { class: `tier ${tier || "none"}` }, tier || "none");
const simBadge = () => h("span", { class: "badge sim", title: "declared in devices.yaml; runs on the host CPU" }, "simulated");
const stateText = (state) => h("span", { class: `state-${state}` }, state);

function bar(fraction, title) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h("span", { class: "bar", title }, h("span", { style: `width:${pct.toFixed(1)}%` }));
}

function table(headers, rows, empty) {
  if (!rows.length) return h("div", { class: "empty" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) =>
      h("th", { class: x.startsWith("#") ? "num" : "" }, x.replace(/^#/, ""))))),
    h("tbody", {}, rows));
}

const td = (content, cls) => h("td", { class: cls || "" }, content);
const num = (content) => td(content, "num");

// ------------------------------------------------------------------ API

function token() { return sessionStorage.getItem("anypu-token") || ""; }

async function api(path, options = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(body.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function banner(text) {
  const el = document.getElementById("banner");
  el.hidden = !text;
  el.textContent = text || "";
}

function askToken() {
  const value = prompt("Scheduler token (what `anypu scheduler` printed, or --token):", token());
  if (value !== null) sessionStorage.setItem("anypu-token", value.trim());
}

async function cancelJob(jobId) {
  if (!token()) askToken();
  try {
    await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
    banner("");
  } catch (error) {
    banner(`could not cancel ${jobId}: ${error.message}`);
  }
  refreshNow();
}

// ------------------------------------------------------------------ Overview

function renderOverview(o) {
  const byTier = o.nodes.by_tier;
  const tierLines = TIERS.map((t) => {
    const c = byTier[t] || {};
    const extra = ["lost", "left", "disconnected"].filter((k) => c[k]).map((k) => `, ${c[k]} ${k}`).join("");
    return h("div", { "data-tier": t }, tierBadge(t), ` ${c.ready || 0} ready${extra}`);
  });
  const j = o.jobs;
  const cards = h("div", { class: "cards" },
    h("div", { class: "card", id: "card-nodes" },
      h("div", { class: "label" }, "Nodes"), h("div", { class: "value" }, o.nodes.total),
      h("div", { class: "sub" }, tierLines)),
    h("div", { class: "card" },
      h("div", { class: "label" }, "Live jobs"),
      h("div", { class: "value" }, j.pending + j.placed + j.running),
      h("div", { class: "sub" }, `${j.pending} pending · ${j.placed} placed · ${j.running} running`)),
    h("div", { class: "card" },
      h("div", { class: "label" }, "Finished since start"),
      h("div", { class: "value" }, j.succeeded + j.failed + j.cancelled),
      h("div", { class: "sub" },
        h("span", { class: "state-succeeded" }, `${j.succeeded} succeeded`), " · ",
        h("span", { class: "state-failed" }, `${j.failed} failed`), ` · ${j.cancelled} cancelled`)),
    h("div", { class: "card" },
      h("div", { class: "label" }, "Queue"), h("div", { class: "value" }, o.queue_depth),
      h("div", { class: "sub" }, `${o.unschedulable} unschedulable now`)),
    h("div", { class: "card" },
      h("div", { class: "label" }, "Placement rate"),
      h("div", { class: "value" }, `${(o.placement_rate_per_s * 60).toFixed(0)}/min`),
      h("div", { class: "sub" },
        `last round ${ms(o.last_solve.seconds)} (${o.last_solve.solver || "none yet"})`,
        h("br"), `${o.decisions.placed} placed · ${o.decisions.deferred} deferred`)),
    h("div", { class: "card" },
      h("div", { class: "label" }, "Fragmentation"),
      h("div", { class: "value" }, `${(o.fragmentation * 100).toFixed(0)}%`),
      h("div", { class: "sub" }, "of free memory sits on partly reserved devices")));

  const usage = o.usage.map((u) => h("tr", {},
    td(tierBadge(u.tier)), td(u.kind),
    num(u.simulated ? h("span", {}, `${u.devices} `, h("span", { class: "badge sim" }, `${u.simulated} simulated`)) : u.devices),
    td([bar(u.reserved_slices / u.slices), `${u.reserved_slices} / ${u.slices} reserved`]),
    td([bar(u.reserved_memory_bytes / u.memory_bytes),
      `${bytes(u.reserved_memory_bytes)} / ${bytes(u.memory_bytes)} (${bytes(u.free_memory_bytes)} free)`]),
    td([bar(u.reserved_tflops / u.tflops), `${u.reserved_tflops.toFixed(1)} / ${u.tflops.toFixed(1)}`])));
  const devices = o.devices.map((d) => h("tr", {},
    td(tierBadge(d.tier)), td(d.kind), td(d.vendor), num(d.count),
    td(d.simulated ? simBadge() : h("span", { class: "muted" }, "real"))));
  return [
    cards,
    h("h2", {}, "Capacity of ready nodes: reserved vs free"),
    table(["tier", "kind", "#devices", "slices", "memory", "TFLOPS"], usage, "no ready nodes: start an agent with `anypu agent --scheduler HOST:PORT --token T --tier edge`"),
    h("h2", {}, "Devices by kind and vendor"),
    table(["tier", "kind", "vendor", "#count", ""], devices, "no devices"),
  ];
}

// ------------------------------------------------------------------ Topology

const W = 960, H = 460, PAD_X = 70, PAD_Y = 30;
const tierColour = (t) => getComputedStyle(document.documentElement).getPropertyValue(`--${t}`).trim() || "#888";

function renderTopology(t) {
  if (!t.sites.length) return [h("div", { class: "empty" }, "no sites yet: nodes appear here once agents join")];
  const pos = {};
  for (const [site, [x, y]] of Object.entries(t.layout)) {
    pos[site] = [PAD_X + x * (W - 2 * PAD_X), PAD_Y + y * (H - 2 * PAD_Y)];
  }
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "network topology" });
  svg.append(s("defs", {}, s("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "10", markerHeight: "10", markerUnits: "userSpaceOnUse", orient: "auto",
  }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a5cc2" }))));
  // links under everything else
  for (const link of t.links) {
    const [x1, y1] = pos[link.a], [x2, y2] = pos[link.b];
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
    svg.append(s("line", { x1, y1, x2, y2, stroke: "#9aa4b2", "stroke-width": 2 }));
    const measured = link.measured_latency_ms !== null && link.measured_latency_ms !== undefined;
    // what placement costs with: the measured latency where a sample touched the link
    const shown = measured ? link.measured_latency_ms : link.latency_ms;
    const label = `${shown.toFixed(shown < 10 ? 1 : 0)} ms${measured ? " (measured)" : ""} · ${mbps(link.measured_bandwidth_mbps || link.bandwidth_mbps)}`;
    const wide = measured ? 160 : 116;
    svg.append(s("rect", { x: mx - wide / 2, y: my - 10, width: wide, height: 18, rx: 4, fill: "#fff", stroke: measured ? "#8a5cc2" : "#e3e6ea" }));
    svg.append(s("text", { x: mx, y: my + 3, "text-anchor": "middle", "font-size": 11, fill: "#445", "data-link": `${link.a}-${link.b}` }, label));
  }
  const nodePos = {};
  const bySite = {};
  for (const n of t.nodes) (bySite[n.site] = bySite[n.site] || []).push(n);
  // nodes: boxes stacked to the right of their site's circle, clear of vertical links
  for (const [site, nodes] of Object.entries(bySite)) {
    const [cx, cy] = pos[site] || [W / 2, H / 2];
    nodes.forEach((n, i) => {
      const x = cx + 80, y = cy + (i - (nodes.length - 1) / 2) * 32;
      nodePos[n.node_id] = [x, y];
      svg.append(s("line", { x1: cx + 16, y1: cy, x2: x - 44, y2: y, stroke: tierColour(n.tier), "stroke-width": 1.5 }));
      const lost = n.state !== "ready";
      const g = s("g", { "data-node": n.node_id, "data-tier": n.tier });
      g.append(s("rect", {
        x: x - 44, y: y - 13, width: 88, height: 26, rx: 5, fill: "#fff",
        stroke: lost ? "#c8372d" : tierColour(n.tier), "stroke-width": 2,
        "stroke-dasharray": lost ? "4 3" : "none",
      }));
      g.append(s("text", { x, y: y + 4, "text-anchor": "middle", "font-size": 12, fill: "#1d2430" },
        s("title", {}, `${n.node_id} (${n.tier}, ${n.state})`), shorten(n.node_id, 12)));
      svg.append(g);
    });
  }
  // sites
  for (const site of t.sites) {
    const [x, y] = pos[site.site] || [W / 2, H / 2];
    svg.append(s("circle", { cx: x, cy: y, r: 16, fill: tierColour(site.tier), opacity: 0.9 }));
    svg.append(s("text", { x: x - 24, y: y + 5, "text-anchor": "end", "font-size": 13, "font-weight": 600, fill: "#1d2430" },
      site.site || "(no site)"));
  }
  // recent job flows: origin site → node that ran them
  for (const f of t.flows) {
    const from = pos[f.origin], to = nodePos[f.node_id];
    if (!from || !to) continue;
    // from below the origin's circle, bowing right of the column, into the box's right end
    const [x1, y1] = [from[0], from[1] + 16], [x2, y2] = [to[0] + 44, to[1]];
    const cx = Math.max(x1, x2) + 90 + Math.abs(y2 - y1) * 0.25, cy = (y1 + y2) / 2;
    const width = 1.5 + Math.log2(1 + f.jobs);
    svg.append(s("path", {
      d: `M${x1},${y1} Q${cx},${cy} ${x2},${y2}`, fill: "none", stroke: "#8a5cc2",
      "stroke-width": width, opacity: 0.75, "marker-end": "url(#arrow)", "data-flow": `${f.origin}->${f.node_id}`,
    }, s("title", {}, `${f.jobs} recent job(s) from ${f.origin} ran on ${f.node_id}; last ${f.last.name || f.last.job_id} ${f.last.state}`)));
    const lx = (x1 + 2 * cx + x2) / 4, ly = (y1 + 2 * cy + y2) / 4;  // the curve's midpoint
    svg.append(s("text", { x: lx + 6, y: ly + 4, "font-size": 11, fill: "#6b3fa0" }, `${f.jobs} job${f.jobs > 1 ? "s" : ""}`));
  }
  const legend = h("div", { class: "legend" },
    ...TIERS.map((x) => h("span", {}, h("i", { style: `background:${tierColour(x)}` }), `${x} site / node`)),
    h("span", {}, h("i", { style: `background:${tierColour("client")}` }), "client site (origin only)"),
    h("span", {}, h("i", { style: "background:#8a5cc2" }), "recent jobs: origin → node that ran them"),
    h("span", {}, h("i", { style: "background:#fff;border:2px dashed #c8372d" }), "lost / disconnected node"));
  const flows = t.flows.map((f) => h("tr", {},
    td(f.origin || h("span", { class: "muted" }, "(co-located)")), td(f.node_id), num(f.jobs),
    td([h("span", { class: "mono" }, f.last.job_id), " ", f.last.name || "", " ", stateText(f.last.state)])));
  const ms = (v) => (v === null || v === undefined ? h("span", { class: "muted" }, "not declared") : `${v.toFixed(1)} ms`);
  const trips = (t.measured || []).map((r) => h("tr", { "data-site": r.site },
    td(r.site || h("span", { class: "muted" }, "(no site)")), td(r.nodes.join(", ")),
    td(`${r.measured_rtt_p50_ms.toFixed(1)} ms`), td(`${r.measured_rtt_p95_ms.toFixed(1)} ms`),
    td(ms(r.declared_rtt_ms)), td(ago(r.age_s))));
  const fixed = (v) => (v === null || v === undefined ? h("span", { class: "muted" }, "not measured") : `${v.toFixed(1)} ms`);
  const links = t.links.map((l) => h("tr", { "data-link": `${l.a}-${l.b}` },
    td(`${l.a} – ${l.b}`), td(`${l.latency_ms.toFixed(1)} ms`), td(fixed(l.measured_latency_ms)),
    td(mbps(l.bandwidth_mbps)), td(l.measured_bandwidth_mbps ? mbps(l.measured_bandwidth_mbps) : h("span", { class: "muted" }, "as declared")),
    td(l.measured_age_s === null || l.measured_age_s === undefined ? "–" : ago(l.measured_age_s))));
  return [
    legend, svg,
    h("h2", {}, "Links: declared and as measured (what placement costs with)"),
    table(["link", "declared", "measured", "bandwidth", "measured bandwidth", "newest sample"], links, "network.yaml declares no links"),
    h("h2", {}, "Recent job flows"),
    table(["origin", "node", "#jobs", "latest"], flows, "no job has been placed yet"),
    h("h2", {}, "Round trips to the scheduler: measured on the agent streams vs declared"),
    table(["site", "nodes", "median", "p95", "declared", "newest"], trips, "no agent has measured a round trip yet"),
  ];
}

function mbps(v) { return v >= 1000 ? `${(v / 1000).toFixed(v % 1000 ? 1 : 0)} Gb/s` : `${v.toFixed(0)} Mb/s`; }
function shorten(text, n) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

// ------------------------------------------------------------------ Nodes

function renderNodes(nodes) {
  if (!nodes.length) return [h("div", { class: "empty" }, "no node has joined yet")];
  return nodes.map((n) => {
    const rows = n.devices.map((d) => {
      const taken = new Set(d.reserved_slices);
      const slices = h("span", { class: "slices", title: `${taken.size} of ${d.slices} slices reserved` },
        Array.from({ length: d.slices }, (_, i) => h("i", { class: taken.has(i) ? "taken" : "" })));
      // A shared device: its reservations (memory, compute) instead of fixed slices.
      const reserved = d.shared
        ? h("div", { class: "shares", "data-shared": d.device_id },
          h("div", {}, [bar(d.reserved_memory_bytes / d.memory_bytes),
            `${bytes(d.reserved_memory_bytes)} of ${bytes(d.memory_bytes)} memory`]),
          h("div", {}, [bar(d.reserved_milli / 1000), `${(d.reserved_milli / 10).toFixed(0)}% of compute`]),
          h("div", { class: "muted" }, `${d.reservations.length}/${d.seats} seats`))
        : [slices, ` ${taken.size}/${d.slices}`];
      const share = (j) => (j.reserved_milli
        ? ` ${bytes(j.reserved_memory_bytes)}, ${(j.reserved_milli / 10).toFixed(1)}% `
        : " ");
      return h("tr", {},
        td(h("span", { class: "mono" }, d.device_id)),
        td([`${d.kind} ${d.vendor} ${d.model}`, d.simulated ? simBadge() : null, d.shared ? h("span", { class: "badge" }, "shared") : null]),
        num(bytes(d.memory_bytes)), num(d.tflops),
        td(reserved),
        td([bar(d.utilisation), `${(d.utilisation * 100).toFixed(0)}%`]),
        num(bytes(d.shared ? d.unreserved_memory_bytes : d.free_memory_bytes)),
        td(d.jobs.length ? d.jobs.map((j) => h("div", {}, h("span", { class: "mono" }, j.job_id), ` ${j.name}`, share(j), stateText(j.state))) : h("span", { class: "muted" }, "idle")));
    });
    const warm = n.warm_models.length
      ? n.warm_models.map((w) => `${w.name || "model"} (${w.digest.slice(0, 10)})`).join(", ")
      : "none";
    const stale = n.last_heartbeat_age_s > 3;
    return h("div", { class: `node-card ${n.tier}`, "data-node": n.node_id, "data-tier": n.tier },
      h("div", { class: "head" },
        h("span", { class: "name" }, n.node_id), tierBadge(n.tier),
        h("span", { class: n.state === "ready" ? "badge ok" : "badge bad" }, n.state),
        n.simulated ? simBadge() : null,
        h("span", { class: "meta" }, `site ${n.site || "–"}`),
        h("span", { class: "meta", style: stale ? "color:#c8372d" : "" }, `heartbeat ${ago(n.last_heartbeat_age_s)}`),
        n.rtt_age_s >= 0 ? h("span", { class: "meta", title: "round trip on its agent stream, median of the last 64 heartbeat echoes (95th percentile in brackets)" }, `rtt ${(n.rtt_p50_s * 1e3).toFixed(1)} ms (${(n.rtt_p95_s * 1e3).toFixed(1)})`) : null,
        h("span", { class: "meta" }, `${n.running_jobs} running`),
        Object.keys(n.labels).length ? h("span", { class: "meta mono" }, Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(" ")) : null),
      h("table", {},
        h("thead", {}, h("tr", {}, ["device", "model", "memory", "TFLOPS", "reserved", "utilisation", "free memory", "jobs"].map((x) => h("th", {}, x)))),
        h("tbody", {}, rows)),
      h("div", { class: "warm" }, `warm models: ${warm}`));
  });
}

// ------------------------------------------------------------------ Placements

function termsCell(terms) {
  const entries = Object.entries(terms || {}).filter(([, v]) => v !== null);
  const total = entries.reduce((a, [, v]) => a + Math.max(0, v), 0) || 1;
  const strip = h("div", { class: "terms" }, entries.filter(([, v]) => v > 0).map(([k, v]) =>
    h("span", { style: `width:${(100 * v / total).toFixed(1)}%;background:${TERM_COLOURS[k] || "#999"}`, title: `${k} ${ms(v)}` })));
  const text = entries.filter(([, v]) => v).map(([k, v]) => `${k} ${ms(v)}`).join(" · ");
  return [strip, h("span", { class: "muted" }, text || "all zero")];
}

// Why the other nodes lost: the cheapest slice elsewhere and its terms.
function runnerUp(p) {
  const r = p.runner_up;
  if (!r) return h("div", { class: "muted runner-up" }, "no other node could take it");
  const text = Object.entries(r.terms || {}).filter(([, v]) => v).map(([k, v]) => `${k} ${ms(v)}`).join(" · ");
  return h("div", { class: "muted runner-up" },
    `runner-up ${r.node_id} / ${r.device_id}: ${ms(r.predicted_seconds)} (${text || "all zero"})`);
}

// A call's deadline, as it went: met, missed, or still to be seen.
function deadlineBadge(p) {
  if (!p.deadline_ms) return null;
  const text = `deadline ${ms(p.deadline_ms / 1000)}`;
  if (p.deadline_met === true) return h("span", { class: "badge ok", title: "ended within its deadline" }, `${text} met`);
  if (p.deadline_met === false) return h("span", { class: "badge bad", title: "ended after its deadline" }, `${text} missed`);
  return h("span", { class: "badge" }, text);
}

// Where the call came from (and how that was known), and how it was split if it was.
function jobFacts(p) {
  const facts = [];
  if (p.origin) facts.push(`from ${p.origin}${p.origin_inferred ? ` (inferred: ${p.origin_inferred})` : ""}`);
  if (p.split) facts.push(`split: ${p.split}${p.head_job_id ? ` · head ${p.head_job_id}` : ""}`);
  return facts.map((f) => h("div", { class: "muted" }, f));
}

function renderPlacements(pending, placements) {
  const pendingBlocks = pending.map((p) => h("div", { class: "card", "data-pending": p.job_id, style: "margin-bottom:10px" },
    h("div", {},
      h("span", { class: "mono" }, p.job_id), " ", h("b", {}, p.name || "(unnamed)"),
      p.unschedulable ? h("span", { class: "badge bad" }, "unschedulable") : h("span", { class: "badge" }, "waiting"),
      h("span", { class: "muted" }, ` waiting ${p.waiting_s.toFixed(0)} s${p.origin ? ` · from ${p.origin}` : ""} `),
      h("button", { class: "cancel", type: "button", onclick: () => cancelJob(p.job_id) }, "cancel")),
    Object.keys(p.reasons).length
      ? h("ul", { class: "reasons" }, Object.entries(p.reasons).map(([node, why]) => h("li", {}, h("b", {}, node), `: ${why}`)))
      : h("div", { class: "muted" }, "fits somewhere; waiting for capacity in the next round")));
  const rows = placements.map((p) => h("tr", { "data-job": p.job_id },
    td([h("span", { class: "mono" }, p.job_id), h("br"), p.name, jobFacts(p)]),
    td([stateText(p.state), deadlineBadge(p)]),
    td([tierBadge(p.tier), ` ${p.node_id} / ${p.device_id}[${p.slice_index}]`, h("br"),
      h("span", { class: "muted" }, p.device_description), p.simulated ? simBadge() : null]),
    td([termsCell(p.terms), h("div", { class: "muted" }, `solver ${p.solver}`), runnerUp(p)]),
    num(ms(p.predicted_seconds)),
    num(p.run_seconds ? ms(p.run_seconds) : "–"),
    num(p.latency_seconds ? ms(p.latency_seconds) : "–"),
    td(["placed", "running"].includes(p.state)
      ? h("button", { class: "cancel", type: "button", onclick: () => cancelJob(p.job_id) }, "cancel")
      : (p.error ? h("span", { class: "state-failed" }, shorten(p.error, 80)) : ""))));
  const legend = h("div", { class: "legend" }, Object.entries(TERM_COLOURS).map(([k, c]) => h("span", {}, h("i", { style: `background:${c}` }), k)));
  return [
    h("h2", {}, `Pending (${pending.length})`),
    pending.length ? pendingBlocks : h("div", { class: "empty" }, "nothing is waiting"),
    h("h2", {}, "Recent placement decisions"), legend,
    table(["job", "state", "chosen device", "objective terms", "#predicted", "#measured run", "#end-to-end", ""], rows, "no job has been placed yet"),
  ];
}

// ------------------------------------------------------------------ deployments

function renderDeployments(deployments) {
  if (!deployments.length) return [h("h2", {}, "Deployments"), h("div", { class: "empty" }, "nothing is deployed (sdk.deploy or anypu deploy)")];
  return [h("h2", {}, `Deployments (${deployments.length})`), deployments.map((d) => h("div", { class: "card", "data-deployment": d.name, style: "margin-bottom:10px" },
    h("div", {},
      h("b", {}, d.name), ` ${d.model_name} · version ${d.version} · `,
      h("span", { class: d.replicas_ready < d.replicas_wanted ? "state-failed" : "state-succeeded" }, `${d.replicas_ready}/${d.replicas_wanted} ready`),
      d.max_replicas ? h("span", { class: "badge" }, `autoscaled ${d.min_replicas}–${d.max_replicas}`) : null,
      d.canary_percent ? h("span", { class: "badge", "data-canary": d.canary_percent }, `canary: ${d.canary_percent} % to v${d.version}, the rest to v${d.stable_version}`) : null,
      d.caller_token ? h("span", { class: "badge" }, "caller token") : null,
      h("span", { class: "muted" }, ` · ${d.calls_per_s.toFixed(1)} calls/s · run p50 ${ms(d.run_p50_s)}, p99 ${ms(d.run_p99_s)}`),
      d.caller_calls_per_s ? h("span", { class: "muted", "data-callers": "" }, ` · callers ${d.caller_calls_per_s.toFixed(1)}/s end to end p50 ${ms(d.caller_p50_s)}, p99 ${ms(d.caller_p99_s)}`) : null,
      d.gateway_calls_per_s ? h("span", { class: "muted", "data-gateway": "" }, ` · protocol ${d.gateway_calls_per_s.toFixed(1)}/s end to end p50 ${ms(d.gateway_p50_s)}, p99 ${ms(d.gateway_p99_s)}`) : null,
      d.cold_starts ? h("span", { class: "muted" }, ` · ${d.cold_starts} cold start(s), last ${d.last_cold_start_s.toFixed(2)} s`) : null),
    d.message ? h("div", { class: "state-failed" }, d.message) : null,
    d.traffic.length ? h("div", { class: "muted", "data-traffic": "" }, "calls over the last minute from: " + d.traffic.map((t) => `${t.site} ${t.calls}`).join(", ")) : null,
    table(["replica", "state", "node / device", "tier", "placed for", "version"], d.replicas.map((r) => h("tr", { "data-replica": r.replica_id },
      td(h("span", { class: "mono" }, r.replica_id)), td(r.state), td(r.node_id ? `${r.node_id} / ${r.device_id}` : h("span", { class: "muted" }, "not placed yet")),
      td(r.tier ? tierBadge(r.tier) : ""), td(r.placed_for || h("span", { class: "muted" }, "anywhere")), num(r.version))), "no replica"),
    h("ul", { class: "reasons" }, d.events.slice(-6).reverse().map((e) => h("li", {}, h("span", { class: "muted" }, new Date(e.at * 1000).toLocaleTimeString()), ` ${e.event}`)))))];
}

// ------------------------------------------------------------------ loop

const PAGES = {
  overview: async () => renderOverview(await api("/api/v1/overview")),
  topology: async () => renderTopology(await api("/api/v1/topology")),
  nodes: async () => renderNodes(await api("/api/v1/nodes")),
  deployments: async () => renderDeployments(await api("/api/v1/deployments")),
  placements: async () => {
    const [pending, placements] = await Promise.all([api("/api/v1/pending"), api("/api/v1/placements")]);
    return renderPlacements(pending, placements);
  },
};

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const tab = current;
  const live = document.getElementById("live");
  try {
    const content = await PAGES[tab]();
    if (tab === current) document.getElementById(tab).replaceChildren(...content.flat(Infinity));
    lastOk = Date.now();
    live.className = "live ok";
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
    if (document.getElementById("banner").dataset.kind === "auth") { banner(""); delete document.getElementById("banner").dataset.kind; }
  } catch (error) {
    live.className = "live down";
    live.textContent = lastOk ? `stale since ${new Date(lastOk).toLocaleTimeString()}` : "no answer";
    if (error.status === 401) {
      banner(`${error.message} — click “token” to enter it.`);
      document.getElementById("banner").dataset.kind = "auth";
    }
  } finally {
    timer = setTimeout(refresh, POLL_MS);
  }
}
function refreshNow() { refresh(); }

function show(tab) {
  current = PAGES[tab] ? tab : "overview";
  for (const el of document.querySelectorAll(".page")) el.classList.toggle("active", el.id === current);
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === current);
  refresh();
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
document.getElementById("token-button").addEventListener("click", () => { askToken(); refreshNow(); });
show(location.hash.slice(1) || "overview");
